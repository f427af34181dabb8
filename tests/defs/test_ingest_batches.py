"""The ingest streams the landing folder batch by batch: the tables do not depend on the batch size.

The same landing folder (a small fleet, a resent copy of a file far later by path, a partial
overlap, a long file repeating rows of a wide one in the same batch, bad files) is ingested
through the real asset with batches of 3 files (worker processes, duplicates across files
found across batches) and with one batch (one process); every table is the same. Then a
day is re-run and a file fixed, and both warehouses still agree and balance.
"""

import os
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from anomaly_assets.landing import batching
from anomaly_assets.definitions import resources
from anomaly_assets.defs.ingest import observations
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import load_settings

TABLES = ("raw.observations", "raw.rejected_rows", "raw.rejected_files", "raw.landing_files")
FIXED_NS = 1_700_000_000_000_000_000


def _template(root: Path) -> None:
    generate_fleet(root, entities=40, days=15, seed=6)  # 2 sites x 15 days, wide
    resend = root / "zz_resend" / "2026-09-08"
    resend.mkdir(parents=True)
    shutil.copy(root / "2026-09-08" / "site-01.csv", resend / "site-01.csv")  # a whole day of a site, again
    lines = (root / "2026-09-09" / "site-02.csv").read_text().splitlines(True)
    (resend / "partial.csv").write_text(lines[0] + "".join(lines[5:25]))
    src = (root / "2026-09-07" / "site-01.csv").read_text().splitlines()
    metric = src[0].split(",")[2]
    (root / "2026-09-07" / "site-01b.csv").write_text(  # same keys as site-01.csv, long shape, same batch
        "entity_id,timestamp,metric,value\n" + "".join(f"{r.split(',')[0]},{r.split(',')[1]},{metric},1\n" for r in src[1:11]))
    (root / "bad").mkdir()
    (root / "bad" / "semicolons.csv").write_text("entity_id;timestamp;metric;value\nx;2026-09-07T00:00:00Z;temp;1\n")
    (root / "bad" / "values.csv").write_text("entity_id,timestamp,metric,value\nx,2026-09-07T00:00:00Z,temp,abc\n"
                                             "x,2026-09-07T01:00:00Z,temp,2\nx,2099-01-01T00:00:00Z,temp,3\n")
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(FIXED_NS, FIXED_NS))  # both copies have the same manifest


def _ingest(root: Path, start: str, end: str):
    res = resources(load_settings({"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb")}))
    result = dg.materialize([observations], resources=res, instance=dg.DagsterInstance.ephemeral(),
                            tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})
    assert result.success
    return result.asset_materializations_for_node("raw__observations")[0].metadata


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    try:
        out = {}
        for t in TABLES:
            df = con.execute(f"SELECT * FROM {t}").df().drop(columns=["ingested_at", "read_at"], errors="ignore")
            if "reason" in df:  # the future row's reason names when the file was read
                df["reason"] = df["reason"].str.replace(r"read at \S+\)", "read at X)", regex=True)
            out[t] = df
        return out
    finally:
        con.close()


def _balance(root: Path) -> pd.DataFrame:
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    try:
        return con.execute("""
            SELECT m.source_file, m.rows_read, m.rows_rejected,
                   (SELECT count(*) FROM raw.observations o WHERE o.source_file = m.source_file) AS stored,
                   (SELECT count(*) FROM raw.rejected_rows r WHERE r.source_file = m.source_file) AS rejected
            FROM raw.landing_files m""").df().set_index("source_file")
    finally:
        con.close()


@pytest.fixture(scope="module")
def two_warehouses(tmp_path_factory):
    base = tmp_path_factory.mktemp("batches")
    _template(base / "template")
    runs = {}
    mp = pytest.MonkeyPatch()
    try:
        for name, batch_files, min_parallel in (("small", 3, 2), ("one", 10_000, 10_000)):
            root = base / name
            shutil.copytree(base / "template", root / "landing", copy_function=shutil.copy2)
            mp.setattr(batching, "_FILES_PER_TASK", batch_files)
            mp.setattr(batching, "_PARALLEL_MIN_FILES", min_parallel)
            runs[name] = (root, [_ingest(root, "2026-09-07", "2026-09-21")])
    finally:
        mp.undo()
    return runs


def _assert_same(a: Path, b: Path) -> None:
    ta, tb = _tables(a), _tables(b)
    for t in TABLES:
        pd.testing.assert_frame_equal(ta[t], tb[t], obj=t)  # same rows, same values, same order


def test_batch_size_does_not_change_the_tables(two_warehouses):
    (small, md_small), (one, md_one) = two_warehouses["small"], two_warehouses["one"]
    _assert_same(small, one)
    for key in ("rows_read", "rows_stored", "rows_rejected", "rows_of_other_days", "files_read", "files_rejected",
                "entities", "metrics", "dagster/row_count", "first_ts", "last_ts", "rejected_reasons"):
        assert md_small[0][key] == md_one[0][key], key
    assert md_small[0]["rows_stored"].value == 40 * 4 * 24 * 15 + 1  # the fleet and one good row of bad/values.csv


def test_duplicates_across_batches_name_the_first_file_and_line(two_warehouses):
    root, _ = two_warehouses["small"]
    rej = _tables(root)["raw.rejected_rows"]
    across = rej[rej["reason"].str.startswith("duplicate across files: ")]
    assert across.groupby("source_file").size().to_dict() == {
        "2026-09-07/site-01b.csv": 10, "zz_resend/2026-09-08/partial.csv": 20 * 4, "zz_resend/2026-09-08/site-01.csv": 20 * 24 * 4}
    resent = across[across["source_file"] == "zz_resend/2026-09-08/site-01.csv"]
    assert (resent["reason"] == "duplicate across files: same entity_id, metric and ts as 2026-09-08/site-01.csv line "
            + resent["line_number"].astype(str) + " (the first file by path is kept)").all()
    partial = across[across["source_file"] == "zz_resend/2026-09-08/partial.csv"]
    assert (partial["reason"].str.contains("as 2026-09-09/site-02.csv line ")).all()
    acc = _balance(root)
    assert (acc.rows_read == acc.stored + acc.rejected).all() and (acc.rows_rejected == acc.rejected).all()


def test_rerunning_a_day_and_fixing_a_file_keep_both_equal_and_balanced(two_warehouses, monkeypatch):
    for name, batch_files in (("small", 3), ("one", 10_000)):
        root, _ = two_warehouses[name]
        monkeypatch.setattr(batching, "_FILES_PER_TASK", batch_files)
        monkeypatch.setattr(batching, "_PARALLEL_MIN_FILES", 2 if batch_files == 3 else 10_000)
        _ingest(root, "2026-09-08", "2026-09-08")  # re-run one day: other days' duplicates stay
        acc = _balance(root)
        assert (acc.rows_read == acc.stored + acc.rejected).all()
        resent = root / "landing" / "zz_resend" / "2026-09-08" / "site-01.csv"  # fixed: half of it left
        lines = resent.read_text().splitlines(True)
        resent.write_text("".join(lines[:1] + lines[1::2]))
        os.utime(resent, ns=(FIXED_NS + 1, FIXED_NS + 1))
        (root / "landing" / "bad" / "semicolons.csv").write_text("entity_id,timestamp,metric,value\nx,2026-09-08T00:00:00Z,temp,1\n")
        os.utime(root / "landing" / "bad" / "semicolons.csv", ns=(FIXED_NS + 1, FIXED_NS + 1))
        _ingest(root, "2026-09-08", "2026-09-09")
        acc = _balance(root)
        # the fixed file's old rejections are gone with its old lines: nothing stale is left over
        assert acc.loc["zz_resend/2026-09-08/site-01.csv"].tolist() == [240 * 4, 240 * 4, 0, 240 * 4]
        assert acc.loc["bad/semicolons.csv"].stored == 1
        assert (acc.rows_read == acc.stored + acc.rejected).all() and (acc.rows_rejected == acc.rejected).all()
    _assert_same(two_warehouses["small"][0], two_warehouses["one"][0])


def test_ahead_yields_in_order_passes_errors_on_and_closes_its_source_when_stopped():
    from anomaly_assets.defs.ingest import ahead

    assert list(ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("batch 2 is broken")

    got = []
    with pytest.raises(ValueError, match="batch 2 is broken"):
        for x in ahead(failing()):
            got.append(x)
    assert got == [1]

    closed = []

    def source():
        try:
            for i in range(1000):
                yield i
        finally:
            closed.append(True)

    items = ahead(source(), depth=2)
    assert [next(items), next(items)] == [0, 1]
    items.close()  # the consumer stops early (its write failed): the thread stops and closes the source
    assert closed == [True]


def test_streamed_slice_write_is_one_insert_that_checks_the_slice_and_passes_errors_on(tmp_path):
    from anomaly_assets import warehouse as wh

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    wh.ensure_tables(con, (wh.OBSERVATIONS,))
    day = pd.Timestamp("2026-03-01", tz="UTC")

    def frame(hours, value):
        return pd.DataFrame({"entity_id": "e", "metric": "m", "ts": [day + pd.Timedelta(hours=h) for h in hours],
                             "value": float(value), "source_file": "f.csv", "ingested_at": day})

    with wh.transaction(con):
        wh.replace_time_slice(con, wh.OBSERVATIONS, frame(range(3), 0), day, day + pd.Timedelta(days=1))
    with wh.transaction(con):  # replaces the slice, in the frames' order
        wh.replace_time_slice_streamed(con, wh.OBSERVATIONS, iter([frame([0, 1], 1), frame([], 9), frame([5], 2)]),
                                       day, day + pd.Timedelta(days=1))
    got = con.execute("SELECT value, hour(ts) FROM raw.observations").fetchall()
    assert got == [(1.0, 0), (1.0, 1), (2.0, 5)]

    def failing():
        yield frame([7], 3)
        raise RuntimeError("reading batch 2 failed")

    for frames, error in ((failing(), RuntimeError), (iter([frame([7], 3), frame([30], 4)]), ValueError)):
        with pytest.raises(error):  # the producer's own exception; a row outside the slice is refused
            with wh.transaction(con):
                wh.replace_time_slice_streamed(con, wh.OBSERVATIONS, frames, day, day + pd.Timedelta(days=1))
        assert con.execute("SELECT value, hour(ts) FROM raw.observations").fetchall() == got  # rolled back
    con.close()
