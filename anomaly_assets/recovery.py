"""After a crash: free what a dead run still holds, and remove what it left behind.

A run whose process is killed (SIGKILL, out of memory, a reboot) never reports its end: Dagster
keeps it STARTED, and with it the ``duckdb_writer`` pool slot its current step had claimed. Every
later run then waits for that slot forever ("Step blocked by limit for pool duckdb_writer").
Dagster's run monitoring cannot see such deaths for in-process runs (``execute_in_process``, the
shell backfill) or for the default run launcher.

:func:`release_dead_runs` marks those runs failed and frees their slots. A run is dead when every
process it executed steps in (Dagster records each pid in an engine event) is gone. This assumes
the runs were executed on this machine, which holds for this project: DuckDB allows one writing
process on the machine that has the warehouse file. The warehouse itself needs no repair: each
write is one transaction, so a killed run left no partial slice, and re-running replaces slices.
A run killed before it started is marked failed too (it would stay NOT_STARTED forever). What a
killed publish leaves beside the analysts' copy is removed by
:func:`anomaly_assets.analyst_copy.remove_leftovers`; the shell backfill and the
``dead_run_release`` sensor call both.
"""

from __future__ import annotations

import os


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def run_pids(instance, run_id: str) -> list[int]:
    """The processes a run executed steps in, from its 'Executing steps in process' events."""
    import dagster as dg

    pids = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        if pid is not None and str(pid.value).isdigit():
            pids.append(int(pid.value))
    return pids


# The shell backfill tags its run with its own pid, so a run killed before it started can be told dead.
PID_TAG = "anomaly/pid"
# A run that never started, has no pid to check and was created longer ago than this is dead.
NEVER_STARTED_AFTER_S = 600


def _never_started(instance, record, now: float, stale_after_s: float) -> str | None:
    """Why a run that never reached STARTED is dead (its process gone), or None."""
    run = record.dagster_run
    tagged = run.tags.get(PID_TAG, "")
    if tagged.isdigit():
        return None if _alive(int(tagged)) else f"process {tagged} is gone before the run started"
    pids = run_pids(instance, run.run_id)
    if pids:
        return None if any(_alive(p) for p in pids) else f"process {', '.join(map(str, pids))} is gone"
    created = record.create_timestamp.timestamp()
    if now - created > stale_after_s:
        return f"created {now - created:.0f} s ago and never started"
    return None


def release_dead_runs(instance, stale_after_s: float = NEVER_STARTED_AFTER_S) -> list[str]:
    """Mark failed every run whose processes are all gone and free the pool slots of runs that have
    ended; return the ids of the runs released.

    STARTED runs are dead when every process they executed steps in is gone. Runs that never
    started (NOT_STARTED, STARTING: killed between being created and starting) are dead when the
    process named by their ``anomaly/pid`` tag is gone, or, without one, when they are older than
    ``stale_after_s``; they would otherwise stay in the UI as not started forever.
    """
    import time

    import dagster as dg

    released = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        pids = run_pids(instance, run.run_id)
        if not pids or any(_alive(p) for p in pids):
            continue
        instance.report_run_failed(
            run, f"process {', '.join(map(str, pids))} is gone (killed or crashed before the run ended); "
                 "marked failed to free its duckdb_writer pool slot"
        )
        released.append(run.run_id)
    now = time.time()
    waiting = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=waiting)):
        why = _never_started(instance, record, now, stale_after_s)
        if why is not None:
            instance.report_run_failed(record.dagster_run, f"{why} (killed before the run ended): marked failed")
            released.append(record.dagster_run.run_id)
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return released
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        holders = {s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps}
        for run_id in holders:
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:  # an ended run keeps no slot
                storage.free_concurrency_slots_for_run(run_id)
                if run_id not in released:
                    released.append(run_id)
    return released

