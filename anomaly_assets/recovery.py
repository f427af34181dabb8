"""After a crash: free what a dead run still holds.

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


def release_dead_runs(instance) -> list[str]:
    """Mark failed every STARTED run whose processes are all gone and free the pool slots of runs
    that have ended; return the ids of the runs released."""
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
