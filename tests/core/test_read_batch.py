"""Files read as one batch (plain CSVs of one header parsed together) give what reading them one by one gives."""

import gzip
from functools import partial

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anomaly_assets import landing
from anomaly_assets.landing import batching
from anomaly_assets.defs.workers import map_chunks
from anomaly_assets.demo.fleet import generate_fleet

T0, T1, T2 = "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z", "2026-03-01T02:00:00Z"
WIDE = "entity_id,timestamp,temp,rpm\n"
LONG = "entity_id,timestamp,metric,value\n"

# plain files that share a header are parsed together; each of these must still come out as if alone
FILES = {
    "a/wide_ok.csv": WIDE + f"e1,{T0},1.5,100\ne2,{T0},2.5,200\ne1,{T1},1.6,101\n",
    "a/wide_bad_cells.csv": WIDE + f"e1,{T0},abc,100\ne1,{T1},NaN,1e400\ne1,yesterday,1,2\n,{T2},1,2\n",
    "a/wide_dups.csv": WIDE + f"e1,{T0},1,2\ne1,{T0},3,4\ne1,2026-03-01T02:00:00+02:00,5,6\n",  # both repeat line 2
    "a/wide_same_keys_as_ok.csv": WIDE + f"e1,{T0},9,9\n",  # duplicates across files are not the reader's business
    "a/wide_no_newline.csv": WIDE + f"e3,{T0},1,2",
    "a/wide_crlf.csv": (WIDE + f"e4,{T0},1,2\ne4,{T1},3,4\n").replace("\n", "\r\n"),
    "a/wide_only_header.csv": WIDE,
    "a/wide_spaces.csv": WIDE + f" e6 , {T0} , 1 ,2\n",
    "b/long_ok.csv": LONG + f"e1,{T0},temp,1\ne1,{T0},rpm,2\ne2,{T1},temp,3\n",
    "b/long_bad.csv": LONG + f"e1,{T0},,1\ne1,{T0},temp,\ne1,{T1},temp,1\ne1,{T1},temp,2\n",
    "b/long_epoch.csv": LONG + "e7,1772323200,temp,1\ne7,1772323200000,temp,2\ne7,1772326800.5,temp,3\n",
    "c/quoted.csv": WIDE + f"\"e, 8\",{T0},1,2\n",
    "c/single-9.csv": f"timestamp,value\n{T0},1\n{T1},x\n",
    "c/unknown.csv": "host,when\nh,1\n",
    "c/empty.csv": "",
}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "landing"
    generate_fleet(root, entities=40, days=15, seed=4)  # 2 sites x 15 days of plain wide files
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
    (root / "c" / "latin1.csv").write_bytes(WIDE.encode() + f"e1,{T0},1,2\n".encode() + b"caf\xe9,2026-03-01T01:00:00Z,1,2\n")
    (root / "c" / "zipped.csv.gz").write_bytes(gzip.compress((WIDE + f"e2,{T2},1,2\n").encode()))
    pq.write_table(pa.table({"entity_id": ["p"], "timestamp": [T0], "metric": ["temp"], "value": [1.0]}),
                   root / "c" / "table.parquet")
    return root


def _same(batch_read: landing.FileRead, alone: landing.FileRead) -> None:
    assert (batch_read.source_file, batch_read.shape, batch_read.rows_read, batch_read.file_error) == (
        alone.source_file, alone.shape, alone.rows_read, alone.file_error)
    pd.testing.assert_frame_equal(batch_read.observations, alone.observations)
    pd.testing.assert_frame_equal(batch_read.rejected_rows, alone.rejected_rows)


def test_a_batch_reads_every_file_as_read_file_does(folder, monkeypatch):
    files = landing.discover_files(folder)
    alone = []
    read_file = landing.read_file
    monkeypatch.setattr(batching, "read_file", lambda p, **kw: alone.append(p.relative_to(folder).as_posix()) or read_file(p, **kw))
    batch = landing.read_batch(files, root=folder)
    monkeypatch.undo()
    # plain CSVs went through the grouped parse; the others were read alone
    assert sorted(alone) == ["c/empty.csv", "c/latin1.csv", "c/quoted.csv", "c/single-9.csv", "c/table.parquet",
                             "c/unknown.csv"]
    assert batch.source_files == [f.relative_to(folder).as_posix() for f in files]
    for i, path in enumerate(files):
        _same(batch.file_read(i), landing.read_file(path, root=folder))
    # flat arrays: by file, and every observation or rejection of a file accounted for
    assert (pd.Series(batch.file).diff().dropna() >= 0).all()
    counts = pd.Series(batch.file).value_counts().reindex(range(len(files)), fill_value=0)
    rejected = pd.Series(batch.rej_file).value_counts().reindex(range(len(files)), fill_value=0)
    assert (counts + rejected).tolist() == batch.rows_read.tolist()
    by_name = dict(zip(batch.source_files, range(len(files))))
    dups = batch.file_read(by_name["a/wide_dups.csv"]).rejected_rows
    assert dups["line_number"].tolist() == [3, 3, 4, 4] and set(dups["reason"]) == {"duplicate of line 2"}


def test_a_file_arrow_refuses_sends_only_its_group_back_to_reading_alone(folder):
    (folder / "a" / "wide_ragged.csv").write_text(WIDE + f"e5,{T0},1,2\ne5,{T1},1,2,3\ne5,{T2},1\n")
    names = ["a/wide_ok.csv", "a/wide_ragged.csv", "b/long_ok.csv"]
    batch = landing.read_batch([folder / n for n in names], root=folder)
    ragged = batch.file_read(1)
    assert ragged.rejected_rows["reason"].tolist() == ["expected 4 fields, found 5"] * 2 + ["expected 4 fields, found 3"] * 2
    for i, n in enumerate(names):
        _same(batch.file_read(i), landing.read_file(folder / n, root=folder))


def test_batches_from_worker_processes_come_in_order_and_equal_read_batch(folder, monkeypatch):
    files = landing.discover_files(folder)
    monkeypatch.setattr(batching, "_PARALLEL_MIN_FILES", 2)
    got = list(landing.iter_batches(files, root=folder, batch_files=7, map_chunks=partial(map_chunks, workers=2)))
    assert [len(b.source_files) for b in got] == [7] * (len(files) // 7) + ([len(files) % 7] if len(files) % 7 else [])
    for k, b in enumerate(got):
        want = landing.read_batch(files[7 * k:7 * k + 7], root=folder)
        assert b.source_files == want.source_files
        for i in range(len(b.source_files)):
            _same(b.file_read(i), want.file_read(i))
