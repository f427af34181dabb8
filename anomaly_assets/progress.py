"""One line per step of a run, as it finishes: what the shell prints instead of Dagster's event log.

:class:`RunProgress` follows a run through the Dagster instance it is recorded in (a thread reads
the run's events while ``execute_in_process`` runs it), and prints each finished step with what it
wrote (rows) or checked (checks passed), and its seconds. :func:`step_line` makes the line from
the step's events, so it is testable without a run.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

import dagster as dg

_EVENTS = {
    dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION,
}


@dataclass
class StepRecord:
    """What a step did, gathered from its events."""

    key: str
    started: float | None = None
    ended: float | None = None
    failed: bool = False
    rows: dict[str, int | None] = field(default_factory=dict)  # asset -> rows written in the run (None: no count)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # 'asset:check' -> (passed, severity)


def _rows(materialization) -> int | None:
    """The rows the run wrote: ``rows_in_run`` when the partitions carry their own row counts."""
    v = materialization.metadata.get("rows_in_run") or materialization.metadata.get("dagster/row_count")
    return int(v.value) if v is not None else None


def step_line(step: StepRecord) -> str:
    """``  ok  raw/observations     672,000 rows   2.1 s`` (or checks passed, or FAILED)."""
    seconds = f"{step.ended - step.started:6.1f} s" if step.started and step.ended else "      "
    if step.checks:
        asset = next(iter(step.checks)).split(":")[0]
        bad = [k.split(":")[1] + (" (warning)" if sev == "WARN" else "") for k, (ok, sev) in step.checks.items() if not ok]
        what, label = f"{len(step.checks) - len(bad)}/{len(step.checks)} passed", f"{asset} checks"
        tail = f"  failed: {', '.join(bad)}" if bad else ""
    else:
        assets = list(step.rows)
        label = assets[0] if assets else step.key
        what = f"{step.rows[assets[0]]:,} rows" if assets and step.rows[assets[0]] is not None else ""
        tail = "".join(f"  + {a}" + (f" {n:,} rows" if n is not None else "") for a, n in list(step.rows.items())[1:])
    status = "FAILED" if step.failed else ("warn" if step.checks and tail else "ok")
    return f"  {status:<6} {label:<32} {what:>14} {seconds}{tail}"


class RunProgress:
    """Prints :func:`step_line` for each step of run ``run_id`` as it finishes (a daemon thread).

    Use as a context manager around the run; the lines of steps that finished last are printed
    when it exits.
    """

    def __init__(self, run_id: str, out=sys.stdout, interval_s: float = 0.25):
        self.run_id, self.out, self.interval_s = run_id, out, interval_s
        self.steps: dict[str, StepRecord] = {}
        self._printed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._cursor = None

    def __enter__(self) -> "RunProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _follow(self) -> None:
        instance = dg.DagsterInstance.get()  # its own connections: the run writes through another
        try:
            while True:
                stopping = self._stop.is_set()
                self._poll(instance)
                if stopping:
                    break
                self._stop.wait(self.interval_s)
        finally:
            instance.dispose()

    def _poll(self, instance) -> None:
        while True:
            result = instance.get_records_for_run(self.run_id, cursor=self._cursor, of_type=_EVENTS, limit=1000)
            for r in result.records:
                self.add(r.event_log_entry)
            self._cursor = result.cursor
            if not result.has_more:
                break

    def add(self, entry) -> None:
        """Take one event log entry of the run; print the step's line when it ends."""
        ev = entry.dagster_event
        if ev is None or ev.step_key is None:
            return
        step = self.steps.setdefault(ev.step_key, StepRecord(ev.step_key))
        kind = ev.event_type
        if kind == dg.DagsterEventType.STEP_START:
            step.started = entry.timestamp
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            m = ev.event_specific_data.materialization
            key, n = m.asset_key.to_user_string(), _rows(m)
            # every partition of a range carries the run's rows: count them once
            step.rows[key] = max(n, step.rows.get(key) or 0) if n is not None else step.rows.get(key)
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            d = ev.event_specific_data
            key = f"{d.asset_key.to_user_string()}:{d.check_name}"
            ok, _ = step.checks.get(key, (True, ""))
            step.checks[key] = (ok and d.passed, d.severity.value)  # failed on any day: failed
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            step.ended, step.failed = entry.timestamp, kind == dg.DagsterEventType.STEP_FAILURE
            if ev.step_key not in self._printed:
                self._printed.add(ev.step_key)
                print(step_line(step), file=self.out, flush=True)
