"""Worker processes are shared by a run's map_chunks calls, and shut down when the run ends."""

import multiprocessing
import os
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import dagster as dg
import pytest

from anomaly_assets.defs import workers
from anomaly_assets.defs.workers import map_chunks, run_executor, shutdown_pool


def _pid(x):
    return x, os.getpid()


def _die(x):
    if x == 1:
        os._exit(3)  # a worker killed mid-chunk (e.g. by the OOM killer)
    return x


def _alive(pids) -> set[int]:
    out = set()
    for p in pids:
        try:
            if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.add(p)
        except OSError:
            pass
    return out


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


def test_shutdown_stops_the_workers_and_the_next_call_starts_new_ones():
    before = {p for _, p in map_chunks(_pid, [(i,) for i in range(4)], n_chunks=4, workers=2)}
    shutdown_pool()
    assert not _alive(before) and workers._pool is None
    after = {p for _, p in map_chunks(_pid, [(i,) for i in range(4)], n_chunks=4, workers=2)}
    assert after and not (after & before)
    shutdown_pool()


def _use_a_pool():
    list(map_chunks(_pid, [(i,) for i in range(4)], n_chunks=4, workers=2))


def test_a_multiprocessing_child_with_a_pool_exits():
    """A run under `dagster dev` is a multiprocessing child: no atexit handlers, and on its way out
    multiprocessing joins its children. Before, a pool left running kept it alive forever."""
    child = multiprocessing.get_context("spawn").Process(target=_use_a_pool)
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0


@dg.op
def chunks_in_workers() -> list:
    return sorted({p for _, p in map_chunks(_pid, [(i,) for i in range(4)], n_chunks=4, workers=2)})


@dg.job(executor_def=run_executor)
def pool_job():
    chunks_in_workers()


def test_the_run_executor_shuts_the_pool_down_when_the_run_ends(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with dg.execute_job(dg.reconstructable(pool_job), instance=instance) as result:
            assert result.success
            pids = result.output_for_node("chunks_in_workers")
    assert pids and os.getpid() not in pids
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pids) and workers._pool is None
