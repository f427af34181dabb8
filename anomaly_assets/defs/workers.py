"""Chunks of a fleet computed in worker processes, so an asset uses every CPU it is given.

The assets that read a whole fleet (decomposition, models, scores) work a chunk of entities at a
time: read it from DuckDB, compute, write it back. Reading and writing stay in the asset's
process (it holds the warehouse's one write connection); the computation, which is numpy and
independent per chunk, runs in ``workers`` processes, a few chunks ahead of the writer. The
processes are started once per run and shared by its assets (:func:`shared_pool`).

The pool is shut down when the run's steps are done (:func:`run_executor`, the project's
executor), and in any case when its process ends (a ``multiprocessing`` finalizer). Under
``dagster dev`` a run's process is itself a ``multiprocessing`` child: such a process runs no
``atexit`` handlers and, on its way out, joins its non-daemon children, so a pool left running
kept the run's process and its workers alive forever, one more after every run.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import dagster as dg

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


_pool: tuple[int, ProcessPoolExecutor, multiprocessing.util.Finalize] | None = None
_pool_lock = threading.Lock()


def shared_pool(workers: int) -> ProcessPoolExecutor:
    """One pool of ``workers`` processes, shared by every asset of a run (until :func:`shutdown_pool`).

    Starting workers costs their imports (numpy, pandas, scipy: 2-6 s on a busy 2-core machine);
    a run's decomposition, models and scores pay it once instead of once each. Spawned, not
    forked: the asset's process holds threads (DuckDB's, Arrow's, Dagster's).
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != workers:
            if _pool is not None:
                _pool[2].cancel()
                _pool[1].shutdown(wait=False, cancel_futures=True)
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            # run by multiprocessing's exit handler before it joins this process's children (the
            # only exit hook a multiprocessing child, a run under dagster dev, runs), and before the
            # pool's own queues close theirs at priority 10: the workers' stop signals must get through
            finalizer = multiprocessing.util.Finalize(None, pool.shutdown, kwargs={"wait": True, "cancel_futures": True},
                                                      exitpriority=100)
            _pool = (workers, pool, finalizer)
        return _pool[1]


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is not None and _pool[1] is pool:
            _pool[2].cancel()
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def shutdown_pool() -> None:
    """Stop the worker processes (if any) and wait for them; the next :func:`shared_pool` starts anew."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool[2]()  # the finalizer: shuts the pool down once, and is then forgotten


class _PoolClosingExecutor(dg.Executor):
    """An executor that shuts the worker pool down once ``inner`` has executed the run's steps."""

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        try:
            yield from self._inner.execute(plan_context, execution_plan)
        finally:
            shutdown_pool()


@dg.executor(name="in_process", config_schema=dg.in_process_executor.config_schema)
def run_executor(init_context) -> dg.Executor:
    """Dagster's in-process executor, shutting the worker pool down at the end of every run.

    The run's assets share one pool (its start-up, 2-6 s of imports, is paid once per run); when
    the last step is done, succeeded or not, the workers are stopped, so nothing outlives the run.
    """
    return _PoolClosingExecutor(dg.in_process_executor.executor_creation_fn(init_context))


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
