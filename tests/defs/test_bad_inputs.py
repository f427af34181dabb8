"""Bad landing files through the real ingest asset and its checks, on a temp warehouse.

One landing folder holds a good file beside one file per kind of bad input; one materialization
of raw.observations (+ its GX checks) over two days reads them all. Every case asserts the
reason each row or file was refused, and that nothing is lost: for every file, rows read = rows
stored + rows rejected (raw.landing_files, raw.observations, raw.rejected_rows agree).
"""

import gzip
import os
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anomaly_assets.defs.checks import observations_checks
from anomaly_assets.defs.ingest import observations
from anomaly_assets.definitions import resources
from anomaly_assets.refused_files import ReleaseError, list_refused, release
from anomaly_assets.settings import load_settings

START, END = "2026-03-01", "2026-03-02"  # the run's two days
T0, T1, T2 = "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z", "2026-03-02T23:00:00Z"
LONG = "entity_id,timestamp,metric,value\n"


def _parquet(columns: dict) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue().to_pybytes()


# name -> (bytes, stored, [(line, reason substring)] or "file error substring")
CASES = {
    "good.csv": (LONG + f"g1,{T0},temp,20.5\ng1,{T1},temp,21\ng1,{T2},temp,22\n", 3, []),
    "bad_timestamps.csv": (LONG + f"a,{T0},temp,1\na,2026-13-45,temp,2\na,yesterday,temp,3\na,,temp,4\n", 1,
                           [(3, "timestamp '2026-13-45' is not a date (expected ISO 8601 or epoch seconds)"),
                            (4, "timestamp 'yesterday' is not a date"), (5, "missing timestamp")]),
    "text_in_numbers.csv": ("entity_id,timestamp,temp,rpm\n" f"b,{T0},1.5,abc\nb,{T1},n/a,1200\n", 2,
                            [(2, "value 'abc' in column 'rpm' is not a number"),
                             (3, "value 'n/a' in column 'temp' is not a number")]),
    "empty.csv": (b"", 0, "is empty (0 bytes); expected a CSV header line"),
    "only_header.csv": (LONG, 0, []),
    "semicolons.csv": ("entity_id;timestamp;metric;value\n" f"c;{T0};temp;1\n", 0,
                       "looks delimited by semicolons (';'), but landing files must be comma-separated"),
    "duplicated_rows.csv": (LONG + f"d,{T0},temp,1\nd,{T0},temp,1\nd,2026-03-01T02:00:00+02:00,temp,9\n", 1,
                            [(3, "duplicate of line 2"), (4, "duplicate of line 2")]),
    "mixed_zones.csv": (LONG + "e,2026-03-01T12:00:00+02:00,temp,1\ne,2026-03-01T12:00:00Z,temp,2\n"
                        "e,2026-03-01 13:00:00,temp,3\ne,2026-03-01T12:00:00-05:00,temp,4\n", 4, []),
    "nan_and_inf.csv": (LONG + f"f,{T0},temp,NaN\nf,{T1},temp,inf\nf,2026-03-01T02:00:00Z,temp,-Infinity\n"
                        f"f,2026-03-01T03:00:00Z,temp,7\n", 1,
                        [(2, "value 'NaN' in column 'value' is not finite"), (3, "value 'inf'"), (4, "'-Infinity'")]),
    "unknown_shape.csv": ("host,when,reading\nh1,2026-03-01,3\n", 0,
                          "unknown file shape (found header 'host,when,reading'); expected long"),
    "missing_columns.csv": ("entity_id,metric,value\ng,temp,1\n", 0, "missing column(s) timestamp for a long file"),
    "huge_values.csv": (LONG + f"h,{T0},temp,1e308\nh,{T1},temp,1e400\nh,2026-03-01T02:00:00Z,temp,-1e14\n", 1,
                        [(2, "value '1e308' in column 'value' is beyond the limit of ±1e+15"),
                         (3, "value '1e400' in column 'value' is not finite")]),
    "latin1.csv": (LONG.encode() + f"i,{T0},temp,1\n".encode() + b"caf\xe9,2026-03-01T01:00:00Z,temp,2\n", 1,
                   [(3, "line is not valid UTF-8 (byte 0xe9); expected UTF-8 text")]),
    "hostile_names.csv": (LONG + f"'; DROP TABLE raw.observations; --,{T0},temp,1\n"
                          f"\"Robert \"\"Bobby\"\" Tables\",{T0},temp,2\n"
                          f"ünïcødé-機械-🚀,{T0},temp,3\n,{T0},temp,4\n   ,{T1},temp,5\n", 3,
                          [(5, "missing entity_id"), (6, "missing entity_id")]),
    "hostile_metrics.csv": ("entity_id,timestamp,température °C,\"x; DROP TABLE raw.rejected_rows; --\"\n"
                            f"j,{T0},1,2\n", 2, []),
    "ragged.csv": (LONG + f"k,{T0},temp,1\nk,{T1},temp,2,extra\nk,2026-03-01T02:00:00Z\n", 1,
                   [(3, "expected 4 fields, found 5"), (4, "expected 4 fields, found 2")]),
    "bom.csv": (b"\xef\xbb\xbf" + (LONG + f"l,{T0},temp,1\n").encode(), 1, []),
    "epoch_and_iso.csv": ("timestamp,value\n1772323200,1\n2026-03-01T01:00:00Z,2\n1772330400.5,3\n", 3, []),
    "epoch_millis.csv": ("timestamp,value\n1772323200000,1\n", 0,
                         [(2, "epoch values must be in seconds, this looks like milliseconds")]),
    "future.csv": (LONG + f"m,{T0},temp,1\nm,2099-01-01T00:00:00Z,temp,2\n", 1,
                   [(3, "timestamp 2099-01-01T00:00:00Z is in the future (the file was read at ")]),
    "before_start.csv": (LONG + f"n,{T0},temp,1\nn,2012-06-01T00:00:00Z,temp,2\nn,0,temp,3\n", 1,
                         [(3, "timestamp 2012-06-01T00:00:00Z is before the first partition 2013-01-01 "
                              "(ANOMALY_PARTITION_START)"),
                          (4, "timestamp 1970-01-01T00:00:00Z is before the first partition")]),
    "corrupt.csv.gz": (b"\x1f\x8b\x08\x00" + bytes(range(40)), 0, "is not a readable gzip file"),
    "good.csv.gz": (gzip.compress((LONG + f"o,{T0},temp,1\n").encode()), 1, []),
    "utf16.csv": ((LONG + f"p,{T0},temp,1\n").encode("utf-16"), 0, "is encoded as UTF-16; expected UTF-8"),
    "missing_value.csv": (LONG + f"q,{T0},temp,\nq,{T1},,2\n", 0,
                          [(2, "empty value in column 'value'"), (3, "missing metric")]),
    "quoted.csv": (LONG + f"\"r, line\nbreak\",{T0},temp,1\n\"r, comma\",{T0},temp,1\n", 1,
                   [(2, "entity_id 'r, line\\nbreak' contains U+000A LINE FEED, which does not print")]),
    "crlf.csv": (LONG.replace("\n", "\r\n") + f"s,{T0},temp,1\r\n", 1, []),
    "bool_values.parquet": (_parquet({"entity_id": ["t"], "timestamp": [T0], "metric": ["temp"], "value": [True]}),
                            0, "column 'value' has type bool; expected numbers"),
    "text_values.parquet": (_parquet({"entity_id": ["u", "u"], "timestamp": [T0, T1], "metric": ["temp", "temp"],
                                      "value": ["1.5", "abc"]}), 1,
                            [(3, "value 'abc' in column 'value' is not a number")]),
    "corrupt.parquet": (b"PAR1 not really parquet", 0, "is not a readable Parquet file"),
    "z_copy_of_good.csv": (LONG + f"g1,{T0},temp,20.5\ng1,{T1},temp,99\n", 0,
                           [(2, "duplicate across files: same entity_id, metric and ts as good.csv line 2 "
                                "(the first file by path is kept)"),
                            (3, "duplicate across files: same entity_id, metric and ts as good.csv line 3")]),
}


def _write(landing: Path, name: str, content) -> None:
    path = landing / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def _q(db: Path, sql: str, params=()) -> pd.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def _ingest(root: Path, start=START, end=END):
    res = resources(load_settings({"ANOMALY_LANDING_DIR": str(root / "landing"),
                                   "ANOMALY_WAREHOUSE": str(root / "wh.duckdb")}))
    return dg.materialize([observations, observations_checks], resources=res, instance=dg.DagsterInstance.ephemeral(),
                          tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end},
                          raise_on_error=False)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    for name, (content, _, _) in CASES.items():
        _write(root / "landing", name, content)
    result = _ingest(root)
    # Bad rows are quarantined and the good files load; the files refused whole fail the blocking
    # no_rejected_files check, so the run stops there (nothing downstream would run) and only there.
    assert not result.success
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert [n for n, e in evals.items() if not e.passed and e.blocking] == ["no_rejected_files"]
    assert {m.asset_key for m in result.get_asset_materialization_events()} == {dg.AssetKey(["raw", "observations"])}
    return root, result


def _accounting(db: Path) -> pd.DataFrame:
    return _q(db, """
        SELECT m.source_file, m.rows_read, m.rows_rejected, m.shape,
               (SELECT count(*) FROM raw.observations o WHERE o.source_file = m.source_file) AS stored,
               (SELECT count(*) FROM raw.rejected_rows r WHERE r.source_file = m.source_file) AS rejected,
               (SELECT any_value(reason) FROM raw.rejected_files f WHERE f.source_file = m.source_file) AS file_error
        FROM raw.landing_files m""").set_index("source_file")


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_input_is_quarantined_with_its_reason_and_nothing_is_lost(ingested, name):
    root, _ = ingested
    _, stored, expected = CASES[name]
    acc = _accounting(root / "wh.duckdb").loc[name]
    assert acc.rows_read == acc.stored + acc.rejected  # nothing lost
    assert acc.rows_rejected == acc.rejected and acc.stored == stored
    if isinstance(expected, str):  # the whole file is refused, with a message naming it
        assert acc.file_error.startswith(f"{name}: ") and expected in acc.file_error, acc.file_error
        assert pd.isna(acc["shape"]) and acc.rows_read == 0
        return
    assert pd.isna(acc.file_error)
    rej = _q(root / "wh.duckdb", "SELECT line_number, reason FROM raw.rejected_rows WHERE source_file = ? "
                                 "ORDER BY line_number, reason", [name])
    got = list(zip(rej["line_number"], rej["reason"]))
    assert len(got) == len(expected), got
    for (line, reason), (want_line, want) in zip(got, expected):
        assert line == want_line and want in reason, (line, reason)


def test_good_rows_are_stored_exactly(ingested):
    root, _ = ingested
    db = root / "wh.duckdb"
    good = _q(db, "SELECT entity_id, metric, ts, value FROM raw.observations WHERE source_file = 'good.csv' ORDER BY ts")
    assert good["value"].tolist() == [20.5, 21.0, 22.0] and good["entity_id"].tolist() == ["g1"] * 3
    zones = _q(db, "SELECT ts, value FROM raw.observations WHERE source_file = 'mixed_zones.csv' ORDER BY value")
    assert [t.isoformat() for t in zones["ts"].dt.tz_convert("UTC")] == [
        "2026-03-01T10:00:00+00:00", "2026-03-01T12:00:00+00:00", "2026-03-01T13:00:00+00:00",
        "2026-03-01T17:00:00+00:00"]
    epoch = _q(db, "SELECT entity_id, ts FROM raw.observations WHERE source_file = 'epoch_and_iso.csv' ORDER BY ts")
    assert set(epoch["entity_id"]) == {"epoch_and_iso"}
    assert epoch["ts"].tolist() == [pd.Timestamp(t, tz="UTC") for t in
                                    ("2026-03-01 00:00", "2026-03-01 01:00", "2026-03-01 02:00:00.5")]
    names = set(_q(db, "SELECT DISTINCT entity_id FROM raw.observations")["entity_id"])
    assert {"'; DROP TABLE raw.observations; --", 'Robert "Bobby" Tables', "ünïcødé-機械-🚀", "r, comma"} <= names
    metrics = set(_q(db, "SELECT metric FROM raw.observations WHERE source_file = 'hostile_metrics.csv'")["metric"])
    assert metrics == {"température °C", "x; DROP TABLE raw.rejected_rows; --"}
    tables = set(_q(db, "SELECT table_schema || '.' || table_name t FROM information_schema.tables")["t"])
    assert {"raw.observations", "raw.rejected_rows", "raw.rejected_files", "raw.landing_files"} <= tables


def test_checks_pass_on_quarantined_data_and_name_every_rejected_file(ingested):
    root, result = ingested
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    for name in ("schema", "keys_present", "no_duplicates", "in_partition_window"):
        assert evals[name].passed, evals[name].description  # quarantine kept the bad rows out
    files = evals["no_rejected_files"]
    refused = sorted(n for n, (_, _, e) in CASES.items() if isinstance(e, str))
    assert not files.passed and files.metadata["files_rejected"].value == len(refused) == 8
    shown = files.metadata["failing_examples"].value
    assert all(n in shown for n in refused)
    assert "semicolons.csv: unknown file shape" in files.description


def test_ingest_metadata_balances(ingested):
    root, result = ingested
    md = result.asset_materializations_for_node("raw__observations")[0].metadata
    total = _q(root / "wh.duckdb", "SELECT sum(rows_read) n, sum(rows_rejected) r FROM raw.landing_files").iloc[0]
    assert md["rows_read"].value == total.n and md["rows_rejected"].value == total.r
    assert md["rows_read"].value == md["rows_stored"].value + md["rows_rejected"].value
    assert md["rows_of_other_days"].value == 0 and md["files_rejected"].value == 8
    assert md["files_read"].value == len(CASES)
    assert "not a date" in md["rejected_reasons"].value


def test_fixing_a_file_and_running_again_picks_it_up(ingested, tmp_path):
    root, _ = ingested
    shutil.copytree(root / "landing", tmp_path / "landing")
    shutil.copy(root / "wh.duckdb", tmp_path / "wh.duckdb")
    db = tmp_path / "wh.duckdb"
    before = _q(db, "SELECT source_file, read_at FROM raw.landing_files").set_index("source_file")["read_at"]
    _write(tmp_path / "landing", "semicolons.csv", LONG + f"c,{T0},temp,1\n")  # now comma-separated
    _write(tmp_path / "landing", "bad_timestamps.csv", LONG + f"a,{T0},temp,1\na,{T1},temp,2\n")
    old = tmp_path / "landing" / "corrupt.csv.gz"  # a bad file the user has not fixed yet
    result = _ingest(tmp_path, START, START)
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    # the files still refused keep blocking (before: this run passed, as it read no bad file)
    assert not result.success and not evals["no_rejected_files"].passed
    assert "corrupt.csv.gz" in evals["no_rejected_files"].description
    assert "semicolons.csv" not in evals["no_rejected_files"].description  # fixed, read again, stored
    acc = _accounting(db)
    assert acc.loc["semicolons.csv"].stored == 1 and pd.isna(acc.loc["semicolons.csv"].file_error)
    assert acc.loc["bad_timestamps.csv"].stored == 2 and acc.loc["bad_timestamps.csv"].rejected == 0
    assert (acc.rows_read == acc.stored + acc.rejected).all()
    after = _q(db, "SELECT source_file, read_at FROM raw.landing_files").set_index("source_file")["read_at"]
    # unchanged files without rows on that day are not read again; the refused one stays refused
    assert after["corrupt.csv.gz"] == before["corrupt.csv.gz"] and old.exists()
    assert after["future.csv"] > before["future.csv"]  # it holds rows on 2026-03-01
    # released with the command's function: the next run goes on, and the files are not read again
    refused = list_refused(db)["source_file"].tolist()
    assert "corrupt.csv.gz" in refused and "semicolons.csv" not in refused
    instance = dg.DagsterInstance.ephemeral()
    assert release(db, refused, note="known bad export", actor="ops", instance=instance)["source_file"].tolist() == refused
    with pytest.raises(ReleaseError, match="not refused: good.csv"):
        release(db, ["good.csv"], note="x")
    result = _ingest(tmp_path, START, START)
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert result.success and evals["no_rejected_files"].passed
    assert _q(db, "SELECT read_at FROM raw.landing_files WHERE source_file = 'corrupt.csv.gz'")["read_at"][0] == \
        before["corrupt.csv.gz"]
    [obs] = instance.fetch_observations(dg.AssetKey(["raw", "observations"]), limit=1).records[:1]
    md = obs.asset_observation.metadata
    assert md["released_by"].value == "ops" and md["note"].value == "known bad export"
    # a refused file that is removed from the folder no longer blocks either
    _write(tmp_path / "landing", "corrupt.csv.gz", b"\x1f\x8b not gzip, changed")
    assert not _ingest(tmp_path, START, START).success
    (tmp_path / "landing" / "corrupt.csv.gz").unlink()
    assert _ingest(tmp_path, START, START).success and list_refused(db).empty


def test_rows_of_other_days_wait_for_their_partition(tmp_path):
    _write(tmp_path / "landing", "span.csv", LONG + f"v,{T0},temp,1\nv,2026-03-05T00:00:00Z,temp,2\nv,x,temp,3\n")
    db = tmp_path / "wh.duckdb"
    assert _ingest(tmp_path, START, START).success
    acc = _accounting(db).loc["span.csv"]
    assert (acc.rows_read, acc.stored, acc.rejected) == (3, 1, 1)  # one row belongs to 2026-03-05
    assert _ingest(tmp_path, "2026-03-05", "2026-03-05").success
    acc = _accounting(db).loc["span.csv"]
    assert (acc.rows_read, acc.stored, acc.rejected) == (3, 2, 1)


def test_duplicates_across_files_are_kept_per_day(tmp_path):
    """Day-by-day runs re-read both files; each day's cross-file rejections survive the other day's run."""
    rows = LONG + "".join(f"w,2026-03-0{d}T0{h}:00:00Z,temp,{d}{h}\n" for d in (1, 2) for h in (0, 1))
    _write(tmp_path / "landing", "a.csv", rows)
    _write(tmp_path / "landing", "b/b.csv", rows + "w,2026-03-02T05:00:00Z,temp,bad\n")
    db = tmp_path / "wh.duckdb"
    for day, stored_a, rejected_b in ((START, 2, 3), (END, 4, 5), (START, 4, 5)):
        assert _ingest(tmp_path, day, day).success
        acc = _accounting(db)
        assert acc.loc["a.csv"].stored == stored_a and acc.loc["b/b.csv"].stored == 0
        assert acc.loc["b/b.csv"].rejected == rejected_b and acc.loc["b/b.csv"].rows_rejected == rejected_b
        assert (acc.rows_read == acc.stored + acc.rejected).all() or day == START and stored_a == 2
    assert (acc.rows_read == acc.stored + acc.rejected).all()  # every day has run: nothing is pending
    reasons = _q(db, "SELECT reason FROM raw.rejected_rows ORDER BY line_number")["reason"].tolist()
    assert reasons[:4] == [f"duplicate across files: same entity_id, metric and ts as a.csv line {n} "
                           "(the first file by path is kept)" for n in (2, 3, 4, 5)]
    assert reasons[4] == "value 'bad' in column 'value' is not a number"


def test_symbolic_links_out_of_the_landing_folder_are_refused_recorded_and_never_read(tmp_path):
    """Before: /etc/passwd's lines went into raw.rejected_files (and the analysts' copy), a CSV linked
    from outside was ingested, and a linked directory was skipped without a record."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(LONG + f"x,{T0},temp,1\n")
    landing = tmp_path / "landing"
    _write(landing, "good.csv", LONG + f"g1,{T0},temp,20.5\n")
    (landing / "passwd.csv").symlink_to("/etc/passwd")
    (landing / "stolen.csv").symlink_to(outside / "secret.csv")
    (landing / "elsewhere").symlink_to(outside, target_is_directory=True)
    result = _ingest(tmp_path, START, START)
    db = tmp_path / "wh.duckdb"
    refused = _q(db, "SELECT source_file, reason FROM raw.rejected_files ORDER BY 1")
    assert refused["source_file"].tolist() == ["elsewhere", "passwd.csv", "stolen.csv"]
    assert refused["reason"].str.contains("is a symbolic link to a path outside the landing folder: not read").all()
    assert _q(db, "SELECT DISTINCT source_file FROM raw.observations")["source_file"].tolist() == ["good.csv"]
    for table in ("raw.rejected_files", "raw.rejected_rows", "raw.observations", "raw.landing_files"):
        text = _q(db, f"SELECT * FROM {table}").astype(str).to_csv()
        assert "root:" not in text and "x,2026" not in text, table
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not result.success and not evals["no_rejected_files"].passed  # blocks until removed or released
    assert not _ingest(tmp_path, START, START).success  # ... every run, not only the first
    for link in ("passwd.csv", "stolen.csv", "elsewhere"):
        (landing / link).unlink()
    assert _ingest(tmp_path, START, START).success
    assert _q(db, "SELECT count(*) AS n FROM raw.rejected_files")["n"][0] == 0
