"""Issue 16's landing faults, each reproduced: what a bad line or file costs is exactly itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anomaly_assets.landing import read_batch, read_file

LONG = "entity_id,timestamp,metric,value\n"
UNCLOSED = "unclosed quote: a field opened with '\"' on this line does not close on it"


def _long_lines(n: int) -> list[str]:
    start = pd.Timestamp("2026-03-01", tz="UTC")
    return [f"pump-1,{(start + pd.Timedelta(minutes=i)).isoformat()},temp,{i % 50}.5" for i in range(n)]


def _rejected(r) -> list[tuple[int, str]]:
    return list(zip(r.rejected_rows["line_number"].tolist(), r.rejected_rows["reason"].tolist()))


def test_a_stray_quote_costs_its_line_only(tmp_path: Path):
    """1,440 lines, line 12 starts with a quote: before, lines 12..1441 were one rejected 'row'."""
    lines = _long_lines(1440)
    lines[10] = '"' + lines[10]  # physical line 12 (the header is line 1)
    path = tmp_path / "stray.csv"
    path.write_text(LONG + "\n".join(lines) + "\n")
    r = read_file(path, root=tmp_path)
    assert r.rows_read == 1440
    assert [(n, why[: len(UNCLOSED)]) for n, why in _rejected(r)] == [(12, UNCLOSED)]
    assert r.rejected_rows["raw"].tolist() == [lines[10]]
    assert len(r.observations) == 1439
    assert r.observations["line_number"].tolist() == [n for n in range(2, 1442) if n != 12]
    # the batch reader (the ingest's path) gives the same
    b = read_batch([path], root=tmp_path).file_read(0)
    pd.testing.assert_frame_equal(b.rejected_rows, r.rejected_rows)
    assert len(b.observations) == 1439


def test_two_stray_quotes_that_pair_up_do_not_swallow_the_lines_between(tmp_path: Path):
    lines = _long_lines(30)
    lines[10] = '"' + lines[10]  # line 12 opens a quote ...
    lines[18] = lines[18].replace(",temp,", '",temp,', 1)  # ... line 20 closes one: 4 fields across 9 lines
    path = tmp_path / "pair.csv"
    path.write_text(LONG + "\n".join(lines) + "\n")
    r = read_file(path)
    assert [n for n, _ in _rejected(r)] == [12, 20]
    assert _rejected(r)[0][1].startswith(UNCLOSED)
    assert len(r.observations) == 28 and r.rows_read == 30


def test_a_stray_quote_on_the_last_line_and_a_legit_quoted_comma(tmp_path: Path):
    path = tmp_path / "last.csv"
    path.write_text(LONG + 'a,2026-03-01T00:00:00Z,"temp, inner",1\n' + 'a,2026-03-01T01:00:00Z,temp,"2\n')
    r = read_file(path)
    assert r.observations["metric"].tolist() == ["temp, inner"]
    assert [(n, why[: len(UNCLOSED)]) for n, why in _rejected(r)] == [(3, UNCLOSED)]


def test_a_compact_date_is_not_read_as_epoch_seconds(tmp_path: Path):
    path = tmp_path / "compact.csv"
    path.write_text("timestamp,value\n20260910,1\n1788998400,2\n20261399,3\n")
    r = read_file(path)
    assert _rejected(r) == [(2, "timestamp '20260910' looks like a date written YYYYMMDD, not epoch seconds (as "
                                "seconds it would be 1970-08-23T12:01:50Z); write it in ISO 8601, e.g. 2026-09-10")]
    # a real epoch, and a number that is no date (month 13): epoch seconds as before
    assert r.observations["line_number"].tolist() == [3, 4]


def test_timestamps_differing_in_nanoseconds_are_not_called_duplicates(tmp_path: Path):
    path = tmp_path / "ns.csv"
    path.write_text(LONG + "a,2026-03-01T00:00:00.000000001Z,temp,1\n"
                           "a,2026-03-01T00:00:00.000000002Z,temp,2\n"
                           "a,2026-03-01T00:00:00.000000001Z,temp,3\n")
    r = read_file(path)
    assert _rejected(r) == [
        (3, "same entity, metric and microsecond as line 2 (timestamps are stored to the microsecond; "
            "they differ in finer digits)"),
        (4, "duplicate of line 2"),
    ]
    table = pa.table({"entity_id": ["a", "a"], "metric": ["temp", "temp"], "value": [1.0, 2.0],
                      "timestamp": pa.array(np.array([1, 2], dtype="datetime64[ns]"), type=pa.timestamp("ns"))})
    pq.write_table(table, tmp_path / "ns.parquet")
    r = read_file(tmp_path / "ns.parquet")
    assert [why.split(" (")[0] for _, why in _rejected(r)] == ["same entity, metric and microsecond as line 2"]


def test_a_long_parquet_or_csv_without_metric_is_refused_not_read_as_wide(tmp_path: Path):
    pq.write_table(pa.table({"entity_id": ["a"], "timestamp": ["2026-03-01"], "value": [1.0]}), tmp_path / "l.parquet")
    (tmp_path / "l.csv").write_text("entity_id,timestamp,value\na,2026-03-01,1\n")
    for name in ("l.parquet", "l.csv"):
        r = read_file(tmp_path / name)
        assert r.shape is None and r.file_error.startswith(f"{name}: missing column metric for a long file"), r.file_error
    # with another metric beside it, 'value' is an ordinary metric of a wide file, as before
    (tmp_path / "w.csv").write_text("entity_id,timestamp,value,temp\na,2026-03-01,1,2\n")
    assert read_file(tmp_path / "w.csv").observations["metric"].tolist() == ["value", "temp"]


def test_numbers_as_names_are_refused_with_how_to_fix(tmp_path: Path):
    for name, ids in (("int.parquet", pa.array([7], pa.int64())), ("float.parquet", pa.array([7.0]))):
        pq.write_table(pa.table({"entity_id": ids, "timestamp": ["2026-03-01"], "metric": ["m"], "value": [1.0]}),
                       tmp_path / name)
        r = read_file(tmp_path / name)
        assert r.file_error is not None and "column 'entity_id' has type" in r.file_error
        assert "expected text (write names as strings" in r.file_error


def test_names_that_do_not_print_are_quarantined_and_messages_carry_no_raw_controls(tmp_path: Path):
    names = {"nul\x00x": "U+0000 NUL", "evil\u202ecod.exe": "U+202E RIGHT-TO-LEFT OVERRIDE",
             "zero\u200bwidth": "U+200B ZERO WIDTH SPACE"}
    lines = [f"{n},2026-03-01T00:00:00Z,temp,1" for n in names] + ["fine-ü,2026-03-01T00:00:00Z,temp,1",
                                                                   "a,2026-03-01T00:00:00Z,te\u2066mp,1"]
    path = tmp_path / "names.csv"
    path.write_bytes((LONG + "\n".join(lines) + "\n").encode())
    r = read_file(path)
    assert r.observations["entity_id"].tolist() == ["fine-ü"]
    reasons = r.rejected_rows["reason"].tolist()
    assert [why.split(" contains ")[1].split(",")[0] for why in reasons] == list(names.values()) + [
        "U+2066 LEFT-TO-RIGHT ISOLATE"]
    assert reasons[0].startswith("entity_id 'nul\\x00x'") and reasons[3].startswith("metric 'te\\u2066mp'")
    for why in reasons:
        assert why.isprintable(), why
    # a wide header naming a metric with a control character, and a binary file: one message, printable
    (tmp_path / "w.csv").write_text("entity_id,timestamp,te\u200bmp\na,2026-03-01,1\n")
    assert "contains U+200B ZERO WIDTH SPACE" in read_file(tmp_path / "w.csv").file_error
    (tmp_path / "bin.csv").write_bytes(b"\x00\x01\x02ELF\x00\x00,\x00\n\x00\x00\x00\n")
    err = read_file(tmp_path / "bin.csv").file_error
    assert err.startswith("bin.csv: ") and "\x00" not in err and err.isprintable(), err


def test_symbolic_links_are_followed_only_inside_the_folder(tmp_path: Path):
    import os

    from anomaly_assets.landing import discover

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(LONG + "x,2026-03-01T00:00:00Z,temp,1\n")
    root = tmp_path / "landing"
    (root / "in").mkdir(parents=True)
    (root / "in" / "a.csv").write_text(LONG + "a,2026-03-01T00:00:00Z,temp,1\n")
    (root / "passwd.csv").symlink_to("/etc/passwd")
    (root / "stolen.csv").symlink_to(outside / "secret.csv")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    (root / "nowhere.csv").symlink_to(tmp_path / "missing.csv")
    (root / "alias.csv").symlink_to(root / "in" / "a.csv")  # inside: followed
    (root / "mirror").symlink_to(root / "in", target_is_directory=True)  # inside, walked once only
    (root / "in" / "loop").symlink_to(root, target_is_directory=True)  # back up the tree: no loop
    (root / "notes.txt").symlink_to("/etc/passwd")  # not a landing name: ignored as before
    os.mkfifo(root / "pipe.csv")
    found = discover(root)
    assert [p.relative_to(root).as_posix() for p in found.files] == ["alias.csv", "in/a.csv"]
    assert [(r.source_file, r.reason.split(":")[0]) for r in found.refused] == [
        ("elsewhere", "is a symbolic link to a path outside the landing folder"),
        ("nowhere.csv", "is a symbolic link to nothing (its target does not exist)"),
        ("passwd.csv", "is a symbolic link to a path outside the landing folder"),
        ("pipe.csv", "is not a regular file (a pipe, socket or device)"),
        ("stolen.csv", "is a symbolic link to a path outside the landing folder"),
    ]
    # read_file given the root refuses a path that resolves outside it, without reading it
    r = read_file(root / "passwd.csv", root=root)
    assert r.file_error.startswith("passwd.csv: is a symbolic link to a path outside the landing folder")
    assert r.rows_read == 0 and "root:" not in r.file_error
    assert read_file(root / "alias.csv", root=root).observations["entity_id"].tolist() == ["a"]
