"""Chunks of a fleet computed in worker processes, so an asset uses every CPU it is given.

The assets that read a whole fleet (decomposition, models, scores) work a chunk of entities at a
time: read it from DuckDB, compute, write it back. Reading and writing stay in the asset's
process (it holds the warehouse's one write connection); the computation, which is numpy and
independent per chunk, runs in ``workers`` processes, a few chunks ahead of the writer. The
processes are started once per process and kept (:func:`shared_pool`).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

# Worker processes cost a start-up (~2 s: numpy, pandas, scipy); fewer chunks than this run here.
MIN_CHUNKS = 2
# A fleet is cut into at least one chunk per worker when each chunk has this many rows or more.
MIN_PART_ROWS = 500_000


def worker_count() -> int:
    """CPUs this process may use (``ANOMALY_WORKERS`` overrides; 1 computes in the asset's process)."""
    env = os.environ.get("ANOMALY_WORKERS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def workers_for(n_chunks: int) -> int:
    """Processes :func:`map_chunks` uses for ``n_chunks`` chunks (1: the caller's own)."""
    return 1 if n_chunks < MIN_CHUNKS else min(worker_count(), n_chunks)


_pool: tuple[int, ProcessPoolExecutor] | None = None
_pool_lock = threading.Lock()


def shared_pool(workers: int) -> ProcessPoolExecutor:
    """One pool of ``workers`` processes for the life of this process, shared by every asset of a run.

    Starting workers costs their imports (numpy, pandas, scipy: 2-6 s on a busy 2-core machine);
    a run's decomposition, models and scores pay it once instead of once each. Spawned, not
    forked: the asset's process holds threads (DuckDB's, Arrow's, Dagster's).
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != workers:
            if _pool is not None:
                _pool[1].shutdown(wait=False, cancel_futures=True)
            _pool = (workers, ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")))
        return _pool[1]


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is not None and _pool[1] is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def _shutdown_pool() -> None:
    if _pool is not None:
        _pool[1].shutdown(wait=True, cancel_futures=True)


def map_chunks(fn: Callable, args: Iterable[tuple], n_chunks: int, workers: int | None = None) -> Iterator:
    """``fn(*a)`` for every ``a`` of ``args``, in order.

    With several workers and chunks, in worker processes (``fn`` and its arguments must pickle),
    at most ``2 * workers`` chunks in flight: ``args`` is consumed lazily, so the caller reads a
    chunk only when a worker is about to need it, and memory holds a few chunks, not the fleet.
    """
    workers = workers_for(n_chunks) if workers is None else workers
    if workers <= 1:
        for a in args:
            yield fn(*a)
        return
    pool = shared_pool(workers)
    pending = deque()
    try:
        for a in args:
            pending.append(pool.submit(fn, *a))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        _drop_pool(pool)  # a worker died (e.g. out of memory): the next call starts a new pool
        raise
    finally:
        for f in pending:  # the caller stopped early (an error downstream): drop what has not started
            f.cancel()
