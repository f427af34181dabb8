"""Who holds the warehouse, and waiting for it with lines that say so.

DuckDB lets one process write a database file, and while a process has it open for writing no
other process can open it at all; a process reading it keeps writers out. DuckDB's error names
the holder's program and PID and nothing more, and ``dagster_duckdb`` retried it silently for
about 100 s before failing the step. :func:`connect` waits instead with a line every
``report_s`` seconds naming the holder (its PID, command line and how long it has been running)
and how long it has waited, and gives up after ``wait_s`` with an error that says the same
(:class:`WarehouseBusy`). Command lines pass through :func:`anomaly_assets.webhooks.redact`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from anomaly_assets.webhooks import redact

_HELD = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


@dataclass(frozen=True)
class Holder:
    """The process holding a DuckDB file, as far as this machine can tell."""

    pid: int
    program: str
    command: str | None = None  # its command line, secrets redacted, shortened
    running_s: float | None = None  # since the process started

    def describe(self) -> str:
        what = self.command or self.program
        since = f", running for {self.running_s:.0f} s" if self.running_s is not None else ""
        return f"PID {self.pid} ({what}{since})"


def is_lock_error(error: BaseException) -> bool:
    """Whether ``error`` is DuckDB refusing a file another process holds."""
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def _running_s(pid: int) -> float | None:
    """Seconds since ``pid`` started (Linux /proc), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command in parentheses
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def lock_holder(error: BaseException) -> Holder | None:
    """The holder named in DuckDB's lock error, with what /proc says about it; None if not named."""
    match = _HELD.search(str(error))
    if match is None:
        return None
    pid = int(match["pid"])
    command = None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        command = redact(raw)[:160] or None
    except OSError:
        pass
    return Holder(pid, match["program"], command, _running_s(pid))


class WarehouseBusy(RuntimeError):
    """The warehouse stayed held by another process for longer than the caller would wait."""

    def __init__(self, path: Path, holder: Holder | None, waited_s: float):
        self.path, self.holder, self.waited_s = Path(path), holder, waited_s
        who = holder.describe() if holder else "another process"
        super().__init__(
            f"warehouse {path} is held by {who}; gave up after waiting {waited_s:.0f} s. DuckDB lets no "
            "process open the file while another writes it, and no writer in while another process reads "
            "it: analysts query the analysts' copy (ANOMALY_ANALYST_COPY), never the warehouse"
        )


def connect(path: str | Path, *, read_only: bool = False, config: dict | None = None, wait_s: float = 600.0,
            report_s: float = 15.0, log: Callable[[str], None] | None = None) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(path)``, waiting while another process holds the file.

    Parameters
    ----------
    path : str or Path
        The DuckDB file.
    read_only, config
        As for ``duckdb.connect``.
    wait_s : float
        How long to wait in all; 0 tries once.
    report_s : float
        A line to ``log`` when the wait starts and then every ``report_s`` seconds: who holds the
        file, for how long it has been running, and how long this connection has waited.
    log : callable, optional
        Takes the line (e.g. ``context.log.warning``).

    Returns
    -------
    duckdb.DuckDBPyConnection

    Raises
    ------
    WarehouseBusy
        When the file is still held after ``wait_s``, naming the holder.
    """
    t0 = time.monotonic()
    next_report = t0
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config or {})
        except duckdb.IOException as e:
            if not is_lock_error(e):
                raise
            holder = lock_holder(e)
        waited = time.monotonic() - t0
        if waited >= wait_s:
            raise WarehouseBusy(Path(path), holder, waited)
        if log is not None and time.monotonic() >= next_report:
            who = holder.describe() if holder else "another process"
            log(f"waiting for warehouse {Path(path).name}: held by {who}; waited {waited:.0f} s of up to {wait_s:.0f} s")
            next_report = time.monotonic() + report_s
        time.sleep(min(delay, max(wait_s - waited, 0.0)))
        delay = min(delay * 2, 1.0)
