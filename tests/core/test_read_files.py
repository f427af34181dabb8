"""Many landing files read by worker processes give what reading them one by one gives."""

import pandas as pd

from anomaly_assets import landing
from anomaly_assets.demo.fleet import generate_fleet


def test_worker_processes_read_what_one_process_reads(tmp_path, monkeypatch):
    generate_fleet(tmp_path / "landing", entities=40, days=15, seed=2)  # 2 sites x 15 days
    bad = tmp_path / "landing" / "bad.csv"
    bad.write_text("entity_id,timestamp,temp\npump-1,2026-09-07T00:00:00Z,1.5\npump-1,not a time,2\n")
    (tmp_path / "landing" / "empty.csv").write_text("")
    files = landing.discover_files(tmp_path / "landing")
    assert len(files) == 32
    serial = [landing.read_file(f, root=tmp_path / "landing") for f in files]
    monkeypatch.setattr(landing, "_PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(landing, "_FILES_PER_TASK", 3)
    parallel = landing.read_files(files, root=tmp_path / "landing", workers=2)
    assert [r.source_file for r in parallel] == [r.source_file for r in serial]
    for a, b in zip(parallel, serial):
        assert (a.shape, a.rows_read, a.file_error) == (b.shape, b.rows_read, b.file_error)
        pd.testing.assert_frame_equal(a.observations, b.observations)
        pd.testing.assert_frame_equal(a.rejected_rows, b.rejected_rows)
    assert sum(len(r.rejected_rows) for r in parallel) == 1 and sum(r.file_error is not None for r in parallel) == 1
