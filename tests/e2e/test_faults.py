"""Fault injection, the short form CI runs: every kind of bad input of benchmarks/faults.py (40+:
malformed lines and files, out-of-range times, stray quotes, control characters, Parquet types,
symbolic links out of the folder, a FIFO) beside a small demo fleet, through the real
`anomaly-assets backfill`. Each kind must be read, stored, quarantined or refused as expected with
rows balanced, nothing from outside the folder may reach a table, the refused files must block the
run, and releasing them must let the next run succeed with nothing left over. The long form (kill -9
at every step, a reader on the warehouse, two runs at once, malformed secrets) is
`benchmarks/faults.py`."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import faults  # noqa: E402

pytestmark = pytest.mark.slow


def test_every_kind_of_bad_input_is_accounted_for_and_refused_files_block_until_released(tmp_path):
    rows = faults.scenario_inputs(tmp_path)
    print("\n" + faults.table(rows))
    assert len(rows) >= 32  # 30+ kinds of bad input, and the two runs
    assert [r.kind for r in rows if not r.ok] == []
