"""Worker processes are started once per process and shared by every map_chunks call."""

import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from anomaly_assets.defs.workers import map_chunks


def _pid(x):
    return x, os.getpid()


def _die(x):
    if x == 1:
        os._exit(3)  # a worker killed mid-chunk (e.g. by the OOM killer)
    return x


def test_calls_share_the_worker_processes_and_keep_order():
    first = list(map_chunks(_pid, [(i,) for i in range(6)], n_chunks=6, workers=2))
    second = list(map_chunks(_pid, [(i,) for i in range(6)], n_chunks=6, workers=2))
    assert [x for x, _ in first] == [x for x, _ in second] == list(range(6))
    pids = {p for _, p in first}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {p for _, p in second} <= pids  # no new processes for the second call


def test_a_dead_worker_fails_the_call_and_the_next_call_gets_a_new_pool():
    before = {p for _, p in map_chunks(_pid, [(i,) for i in range(4)], n_chunks=4, workers=2)}
    with pytest.raises(BrokenProcessPool):
        list(map_chunks(_die, [(i,) for i in range(4)], n_chunks=4, workers=2))
    after = list(map_chunks(_pid, [(i,) for i in range(4)], n_chunks=4, workers=2))
    assert [x for x, _ in after] == list(range(4))
    assert not ({p for _, p in after} & before)
