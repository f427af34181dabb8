"""Landing files -> tidy observations and rejected rows: every kind of bad input we know of."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anomaly_assets.landing import (
    SUFFIXES,
    FileRead,
    LandingError,
    discover_files,
    entity_from_path,
    read_file,
    read_labels,
)

DATA = Path("/work/shared/data")
TS_EXPECTED = "(expected ISO 8601 or epoch seconds)"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    if name.endswith(".gz"):
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def read(tmp_path: Path, name: str, content: str | bytes, **kwargs) -> FileRead:
    result = read_file(write(tmp_path, name, content), root=tmp_path, **kwargs)
    check(result)
    return result


def check(result: FileRead) -> None:
    """The contract every FileRead keeps, whatever the input."""
    assert result.rows_read == len(result.observations) + len(result.rejected_rows)
    obs, rej = result.observations, result.rejected_rows
    assert list(obs.columns) == ["entity_id", "metric", "ts", "value", "line_number"]
    assert str(obs["ts"].dtype) == "datetime64[us, UTC]"
    assert obs["value"].dtype == np.float64 and obs["line_number"].dtype == np.int64
    assert pd.api.types.is_string_dtype(obs["entity_id"]) and pd.api.types.is_string_dtype(
        obs["metric"]
    )
    assert list(rej.columns) == ["source_file", "line_number", "raw", "reason"]
    assert rej["line_number"].dtype == np.int64
    assert (rej["source_file"] == result.source_file).all()
    if result.file_error is not None:
        assert result.shape is None and result.rows_read == 0
        assert result.file_error.startswith(result.source_file + ": ")
    else:
        assert result.shape in ("long", "wide", "single")
        assert np.isfinite(obs["value"]).all()
        assert not obs.duplicated(["entity_id", "metric", "ts"]).any()


def rejected(result: FileRead) -> list[tuple[int, str]]:
    rej = result.rejected_rows
    return list(zip(rej["line_number"].tolist(), rej["reason"].tolist()))


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


LONG_HEADER = "entity_id,timestamp,metric,value\n"


# ------------------------------------------------------------------------------ row rejections


def test_bad_timestamp_is_rejected_with_line_and_value(tmp_path):
    r = read(
        tmp_path,
        "landing/site-3.csv",
        LONG_HEADER
        + "s3,2025-01-01T00:00:00Z,cpu,1\n"
        + "s3,2025-13-45,cpu,2\n"
        + "s3,yesterday,cpu,3\n"
        + "s3,,cpu,4\n",
    )
    assert r.shape == "long" and r.source_file == "landing/site-3.csv"
    assert rejected(r) == [
        (3, f"timestamp '2025-13-45' is not a date {TS_EXPECTED}"),
        (4, f"timestamp 'yesterday' is not a date {TS_EXPECTED}"),
        (5, "missing timestamp"),
    ]
    assert r.rejected_rows["raw"].tolist() == [
        "s3,2025-13-45,cpu,2",
        "s3,yesterday,cpu,3",
        "s3,,cpu,4",
    ]
    assert r.messages()[0] == (
        f"landing/site-3.csv line 3: timestamp '2025-13-45' is not a date {TS_EXPECTED}"
    )
    assert r.observations["line_number"].tolist() == [2] and r.rows_read == 4


def test_text_in_numbers_rejects_only_that_cell(tmp_path):
    r = read(
        tmp_path,
        "w.csv",
        "entity_id,timestamp,m01,m02,m03\n"
        "a,2024-01-01,1,2,3\n"
        "a,2024-01-02,4,abc,6\n"
        "a,2024-01-03,7,8,1,5\n",
    )
    assert r.shape == "wide"
    assert rejected(r) == [
        (3, "value 'abc' in column 'm02' is not a number"),
        (4, "expected 5 fields, found 6"),
        (4, "expected 5 fields, found 6"),
        (4, "expected 5 fields, found 6"),
    ]
    obs = r.observations
    assert obs[obs["line_number"] == 3]["metric"].tolist() == ["m01", "m03"]
    assert obs[obs["line_number"] == 3]["value"].tolist() == [4.0, 6.0]
    assert r.rows_read == 9 and len(obs) == 5


def test_empty_file_is_a_file_error(tmp_path):
    r = read(tmp_path, "drop/empty.csv", b"")
    assert r.shape is None and r.rows_read == 0
    assert r.file_error.startswith("drop/empty.csv: is empty (0 bytes)")
    assert "entity_id,timestamp,metric,value" in r.file_error


def test_only_blank_lines_is_a_file_error(tmp_path):
    r = read(tmp_path, "blank.csv", "\n  \n\n")
    assert "has no header line" in r.file_error


def test_header_only_is_valid_with_no_rows(tmp_path):
    r = read(tmp_path, "h.csv", LONG_HEADER)
    assert r.file_error is None and r.shape == "long"
    assert r.rows_read == 0 and r.observations.empty and r.rejected_rows.empty
    r = read(tmp_path, "single.csv", "timestamp,value")  # no trailing newline either
    assert r.file_error is None and r.shape == "single" and r.rows_read == 0


@pytest.mark.parametrize(
    "delimiter, words", [(";", "semicolons (';')"), ("\t", "tabs"), ("|", "pipes ('|')")]
)
def test_wrong_delimiter_is_named(tmp_path, delimiter, words):
    header = delimiter.join(["entity_id", "timestamp", "metric", "value"])
    r = read(tmp_path, "semi.csv", f"{header}\na{delimiter}2024-01-01{delimiter}cpu{delimiter}1\n")
    assert r.shape is None
    assert r.file_error.startswith("semi.csv: unknown file shape (found header ")
    assert f"(found header '{header}')" in r.file_error
    assert f"looks delimited by {words}" in r.file_error
    assert "must be comma-separated" in r.file_error


def test_duplicate_rows_keep_the_first(tmp_path):
    r = read(
        tmp_path,
        "d.csv",
        LONG_HEADER
        + "a,2024-01-01T00:00:00Z,cpu,1\n"
        + "a,2024-01-01T00:00:00Z,mem,2\n"
        + "a,2024-01-01T02:00:00+02:00,cpu,3\n"  # the same instant as line 2
        + "b,2024-01-01T00:00:00Z,cpu,4\n"
        + "a,2024-01-01T00:00:00Z,cpu,5\n",
    )
    assert rejected(r) == [(4, "duplicate of line 2"), (6, "duplicate of line 2")]
    assert r.observations["value"].tolist() == [1.0, 2.0, 4.0]


def test_duplicate_rows_in_wide_reject_every_metric(tmp_path):
    r = read(
        tmp_path,
        "w.csv",
        "entity_id,timestamp,x,y\n"
        "a,2024-01-01 00:00,1,2\n"
        "a,2024-01-01 00:01,oops,4\n"
        "a,2024-01-01 00:00,5,6\n"
        "a,2024-01-01 00:01,7,8\n",
    )
    # line 3's x was rejected, so line 5's x is the first good one and is kept
    assert rejected(r) == [
        (3, "value 'oops' in column 'x' is not a number"),
        (4, "duplicate of line 2"),
        (4, "duplicate of line 2"),
        (5, "duplicate of line 3"),
    ]
    kept = r.observations.set_index(["metric", "line_number"])["value"].to_dict()
    assert kept == {("x", 2): 1.0, ("y", 2): 2.0, ("y", 3): 4.0, ("x", 5): 7.0}


def test_mixed_time_zones_are_converted_to_utc(tmp_path):
    r = read(
        tmp_path,
        "tz.csv",
        LONG_HEADER
        + "a,2024-03-10T12:00:00+02:00,cpu,1\n"
        + "a,2024-03-10T12:00:00Z,cpu,2\n"
        + "a,2024-03-10 13:00:00,cpu,3\n"  # naive = UTC
        + "a,2024-03-10T12:00:00-05:00,cpu,4\n"
        + "a,2024-03-10T12:00:00.123456+05:30,cpu,5\n"
        + "a,2024-03-11,cpu,6\n",
    )
    assert r.rejected_rows.empty
    assert r.observations["ts"].tolist() == [
        utc("2024-03-10 10:00:00"),
        utc("2024-03-10 12:00:00"),
        utc("2024-03-10 13:00:00"),
        utc("2024-03-10 17:00:00"),
        utc("2024-03-10 06:30:00.123456"),
        utc("2024-03-11 00:00:00"),
    ]
    assert r.observations["line_number"].tolist() == [2, 3, 4, 5, 6, 7]
    # a naive and a Z timestamp for the same instant are duplicates
    r2 = read(tmp_path, "tz2.csv", "timestamp,value\n2024-01-01 00:00,1\n2024-01-01T00:00Z,2\n")
    assert rejected(r2) == [(3, "duplicate of line 2")]


def test_epoch_seconds_integer_and_float(tmp_path):
    r = read(
        tmp_path,
        "epoch.csv",
        "timestamp,value\n1704067200,1\n1704067200.5,2\n 1704067201 ,3\n1.7040672023e9,4\n",
    )
    assert r.rejected_rows.empty and r.shape == "single"
    assert r.observations["ts"].tolist() == [
        utc("2024-01-01 00:00:00"),
        utc("2024-01-01 00:00:00.5"),
        utc("2024-01-01 00:00:01"),
        utc("2024-01-01 00:00:02.3"),
    ]


def test_epoch_milliseconds_are_out_of_range(tmp_path):
    r = read(tmp_path, "ms.csv", "timestamp,value\n1704067200000,1\n")
    assert rejected(r) == [
        (
            2,
            "timestamp '1704067200000' is out of range (expected a date between 1677-09-22 "
            "and 2262-04-11); epoch values must be in seconds, this looks like milliseconds",
        )
    ]


@pytest.mark.parametrize("text", ["NaN", "nan", "-nan"])
def test_nan_is_not_finite(tmp_path, text):
    r = read(tmp_path, "n.csv", f"timestamp,value\n2024-01-01,{text}\n2024-01-02,1\n")
    assert rejected(r) == [(2, f"value '{text}' in column 'value' is not finite")]
    assert r.observations["value"].tolist() == [1.0]


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity", "1e400"])
def test_inf_is_not_finite(tmp_path, text):
    r = read(tmp_path, "i.csv", LONG_HEADER + f"a,2024-01-01,cpu,{text}\n")
    assert rejected(r) == [(2, f"value '{text}' in column 'value' is not finite")]


def test_unknown_shape_lists_header_and_accepted_shapes(tmp_path):
    r = read(tmp_path, "u.csv", "host,when,reading\nh1,2024-01-01,3\n")
    assert r.file_error == (
        "u.csv: unknown file shape (found header 'host,when,reading'); expected long "
        "(entity_id,timestamp,metric,value in any order), wide "
        "(entity_id,timestamp,<metric>,<metric>,...) or single series (timestamp,value; "
        "the entity is the file name)"
    )
    assert r.observations.empty and r.rejected_rows.empty


@pytest.mark.parametrize(
    "header, message",
    [
        (
            "entity_id,metric,value",
            "missing column(s) timestamp for a long file (found header "
            "'entity_id,metric,value'); expected entity_id,timestamp,metric,value",
        ),
        (
            "entity_id,cpu,mem",
            "missing column(s) timestamp for a wide file (found header 'entity_id,cpu,mem'); "
            "expected entity_id,timestamp,<metric>,<metric>,...",
        ),
        (
            "timestamp,cpu,mem",
            "missing column(s) entity_id for a wide file (found header 'timestamp,cpu,mem'); "
            "expected entity_id,timestamp,<metric>,<metric>,...",
        ),
        (
            "entity_id,timestamp",
            "no metric columns (found header 'entity_id,timestamp'); expected a wide file "
            "entity_id,timestamp,<metric>,<metric>,...",
        ),
        (
            "entity_id,timestamp,metric,value,unit",
            "unexpected column(s) unit in a long file (found header "
            "'entity_id,timestamp,metric,value,unit'); a long file has exactly "
            "entity_id,timestamp,metric,value",
        ),
        (
            "value",
            "missing column(s) timestamp for a single-series file (found header 'value'); "
            "expected timestamp,value",
        ),
    ],
)
def test_missing_columns(tmp_path, header, message):
    r = read(tmp_path, "m.csv", header + "\n1,2,3\n")
    assert r.file_error == f"m.csv: {message}"


def test_duplicate_and_empty_column_names(tmp_path):
    r = read(tmp_path, "dup.csv", "entity_id,timestamp,cpu,mem,cpu\na,2024-01-01,1,2,3\n")
    assert r.file_error == (
        "dup.csv: duplicate column name 'cpu' (columns 3 and 5; found header "
        "'entity_id,timestamp,cpu,mem,cpu'); every column name must be unique"
    )
    r = read(tmp_path, "dup2.csv", "Entity_ID,timestamp,entity_id,cpu\n")
    assert "duplicate column name 'entity_id' (columns 1 and 3" in r.file_error
    r = read(tmp_path, "hole.csv", "entity_id,timestamp,cpu,\na,2024-01-01,1,\n")
    assert "column 4 of the header has no name" in r.file_error


def test_huge_values(tmp_path):
    content = LONG_HEADER + "a,2024-01-01,cpu,1e16\na,2024-01-02,cpu,-2e15\na,2024-01-03,cpu,1e15\n"
    r = read(tmp_path, "big.csv", content)
    assert rejected(r) == [
        (2, "value '1e16' in column 'value' is beyond the limit of ±1e+15"),
        (3, "value '-2e15' in column 'value' is beyond the limit of ±1e+15"),
    ]
    assert r.observations["value"].tolist() == [1e15]
    r = read(tmp_path, "big2.csv", content, max_abs_value=100)
    assert len(r.rejected_rows) == 3 and "±100" in r.rejected_rows["reason"].iloc[0]


def test_non_utf8_bytes_reject_the_line_only(tmp_path):
    content = (
        b"entity_id,timestamp,metric,value\n"
        b"caf\xc3\xa9,2024-01-01,cpu,1\n"  # valid UTF-8 e-acute
        b"caf\xe9,2024-01-01,cpu,2\n"  # latin-1 e-acute
        b"cafe,2024-01-01,temp \xff\xfe,3\n"
        b"cafe,2024-01-01,cpu,4\n"
    )
    r = read(tmp_path, "latin.csv", content)
    assert rejected(r) == [
        (3, "line is not valid UTF-8 (byte 0xe9); expected UTF-8 text"),
        (4, "line is not valid UTF-8 (byte 0xff); expected UTF-8 text"),
    ]
    assert r.rejected_rows["raw"].tolist() == [
        "caf\\xe9,2024-01-01,cpu,2",
        "cafe,2024-01-01,temp \\xff\\xfe,3",
    ]
    assert r.observations["entity_id"].tolist() == ["café", "cafe"]
    # in a wide file the line is rejected once per metric column
    wide = b"entity_id,timestamp,a,b\nx,2024-01-01,1,2\nx\xe9,2024-01-02,3,4\n"
    r = read(tmp_path, "latin-wide.csv", wide)
    assert [line for line, _ in rejected(r)] == [3, 3] and len(r.observations) == 2


def test_utf16_file_is_a_file_error(tmp_path):
    text = LONG_HEADER + "a,2024-01-01,cpu,1\n"
    r = read(tmp_path, "u16.csv", text.encode("utf-16"))
    assert r.file_error == (
        "u16.csv: is encoded as UTF-16; expected UTF-8 text (save it as UTF-8 CSV)"
    )
    r = read(tmp_path, "u16-nobom.csv", text.encode("utf-16-le"))
    assert "looks UTF-16 encoded" in r.file_error


HOSTILE = [
    "'; DROP TABLE x; --",
    'Robert"); DELETE FROM observations; --',
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "名前 with ünïcode",
    "$(rm -rf /)",
    "NULL",
]


def test_hostile_entity_names_are_stored_verbatim(tmp_path):
    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    lines = [LONG_HEADER.strip()]
    for i, name in enumerate(HOSTILE):
        lines.append(f"{cell(name)},2024-01-01,{cell(name)},{i}")
    lines.append("  padded  ,2024-01-01,  cpu  ,99")
    r = read(tmp_path, "hostile.csv", "\n".join(lines) + "\n")
    assert r.rejected_rows.empty
    assert r.observations["entity_id"].tolist() == HOSTILE + ["padded"]
    assert r.observations["metric"].tolist() == HOSTILE + ["cpu"]


def test_entity_names_equal_after_stripping_are_one_entity(tmp_path):
    r = read(tmp_path, "s.csv", LONG_HEADER + "a,2024-01-01,cpu,1\n a ,2024-01-01,cpu,2\n")
    assert rejected(r) == [(3, "duplicate of line 2")]


def test_wrong_field_count(tmp_path):
    r = read(
        tmp_path,
        "f.csv",
        LONG_HEADER + "a,2024-01-01,cpu\na,2024-01-02,cpu,1,extra\na,2024-01-03,cpu,3\n",
    )
    assert rejected(r) == [(2, "expected 4 fields, found 3"), (3, "expected 4 fields, found 5")]
    assert r.rejected_rows["raw"].tolist() == ["a,2024-01-01,cpu", "a,2024-01-02,cpu,1,extra"]
    assert r.observations["line_number"].tolist() == [4]


def test_empty_entity_and_metric(tmp_path):
    r = read(
        tmp_path,
        "e.csv",
        LONG_HEADER + ",2024-01-01,cpu,1\n   ,2024-01-01,cpu,2\na,2024-01-01,,3\n,,,\na,2024-01-01,cpu,5\n",
    )
    assert rejected(r) == [
        (2, "missing entity_id"),
        (3, "missing entity_id"),
        (4, "missing metric"),
        (5, "missing entity_id"),
    ]
    r = read(tmp_path, "ew.csv", "entity_id,timestamp,a,b\n,2024-01-01,1,2\n")
    assert rejected(r) == [(2, "missing entity_id"), (2, "missing entity_id")]


def test_empty_cell_in_wide(tmp_path):
    r = read(
        tmp_path,
        "w.csv",
        "entity_id,timestamp,m1,m2,m3\nh,2024-01-01,1,,3\nh,2024-01-02, ,5,\n",
    )
    assert rejected(r) == [
        (2, "empty value in column 'm2'"),
        (3, "empty value in column 'm1'"),
        (3, "empty value in column 'm3'"),
    ]
    assert r.observations["metric"].tolist() == ["m1", "m3", "m2"]


def test_bom_and_odd_header_spelling(tmp_path):
    r = read(
        tmp_path,
        "bom.csv",
        "\ufeff Entity_ID , TIMESTAMP,Metric ,Value\na,2024-01-01,cpu,1\n",
    )
    assert r.shape == "long" and r.rejected_rows.empty
    assert r.observations["entity_id"].tolist() == ["a"]
    # wide metric names keep their spelling (stripped)
    r = read(tmp_path, "bomw.csv", "\ufeffentity_id,Timestamp, CPU Load ,Value\na,2024-01-01,1,2\n")
    assert r.shape == "wide" and r.observations["metric"].tolist() == ["CPU Load", "Value"]


def test_crlf_line_endings(tmp_path):
    r = read(
        tmp_path,
        "crlf.csv",
        "entity_id,timestamp,metric,value\r\na,2024-01-01,cpu,1\r\na,2024-01-02,cpu,x\r\n",
    )
    assert r.observations["value"].tolist() == [1.0]
    assert rejected(r) == [(3, "value 'x' in column 'value' is not a number")]
    assert r.rejected_rows["raw"].tolist() == ["a,2024-01-02,cpu,x"]
    r = read(tmp_path, "cr.csv", "timestamp,value\r2024-01-01,1\r2024-01-02,2\r")
    assert r.rejected_rows.empty and len(r.observations) == 2


def test_gzip_file(tmp_path):
    r = read(tmp_path, "sub/host-7.csv.gz", "timestamp,value\n2024-01-01,1\n2024-01-02,bad\n")
    assert r.shape == "single" and r.source_file == "sub/host-7.csv.gz"
    assert r.observations["entity_id"].tolist() == ["host-7"]
    assert rejected(r) == [(3, "value 'bad' in column 'value' is not a number")]


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(("timestamp,value\n" + "2024-01-01,1\n" * 1000).encode())
    (tmp_path / "trunc.csv.gz").write_bytes(good[: len(good) // 2])
    r = read_file(tmp_path / "trunc.csv.gz", root=tmp_path)
    check(r)
    assert r.file_error.startswith("trunc.csv.gz: is not a readable gzip file (")
    assert "expected a complete gzip-compressed CSV" in r.file_error
    (tmp_path / "plain.csv.gz").write_bytes(b"timestamp,value\n2024-01-01,1\n")
    r = read_file(tmp_path / "plain.csv.gz", root=tmp_path)
    check(r)
    assert r.file_error.startswith("plain.csv.gz: is not a readable gzip file (")


def test_parquet_long_with_typed_columns(tmp_path):
    table = pa.table(
        {
            "Entity_Id": ["a", "a", None, "b", "b"],
            "timestamp": pa.array(
                [
                    pd.Timestamp("2024-01-01 00:00"),
                    pd.Timestamp("2024-01-01 00:01"),
                    pd.Timestamp("2024-01-01 00:02"),
                    None,
                    pd.Timestamp("2024-01-01 00:00"),
                ],
                type=pa.timestamp("ns"),
            ),
            "metric": ["cpu", "cpu", "cpu", "cpu", "cpu"],
            "value": [1.0, float("nan"), 3.0, 4.0, 5.0],
        }
    )
    pq.write_table(table, tmp_path / "long.parquet")
    r = read_file(tmp_path / "long.parquet", root=tmp_path)
    check(r)
    assert r.shape == "long"
    assert rejected(r) == [
        (3, "value 'nan' in column 'value' is not finite"),
        (4, "missing entity_id"),
        (5, "missing timestamp"),
    ]
    assert r.rejected_rows["raw"].tolist() == [
        "a,2024-01-01 00:01:00,cpu,nan",
        ",2024-01-01 00:02:00,cpu,3.0",
        "b,,cpu,4.0",
    ]
    assert r.observations["ts"].tolist() == [utc("2024-01-01 00:00"), utc("2024-01-01 00:00")]
    assert r.observations["line_number"].tolist() == [2, 6]


def test_parquet_wide_with_text_timestamps_and_zone(tmp_path):
    table = pa.table(
        {
            "entity_id": ["1", "1", "2"],
            "timestamp": ["2024-01-01T01:00:00+01:00", "not-a-date", "1704067200"],
            "cpu": pa.array([1, None, 3], type=pa.int32()),
            "mem": ["0.5", "x", "0.7"],
        }
    )
    pq.write_table(table, tmp_path / "wide.parquet")
    r = read_file(tmp_path / "wide.parquet")
    check(r)
    assert r.shape == "wide" and r.source_file == "wide.parquet"
    assert rejected(r) == [
        (3, f"timestamp 'not-a-date' is not a date {TS_EXPECTED}"),
        (3, f"timestamp 'not-a-date' is not a date {TS_EXPECTED}"),
    ]
    obs = r.observations
    assert obs["entity_id"].tolist() == ["1", "1", "2", "2"]
    assert obs["metric"].tolist() == ["cpu", "mem", "cpu", "mem"]
    assert obs["value"].tolist() == [1.0, 0.5, 3.0, 0.7]
    assert set(obs["ts"]) == {utc("2024-01-01 00:00")}
    # epoch timestamps typed as integers, and a tz-aware timestamp column
    table = pa.table(
        {
            "timestamp": pa.array([1704067200, 1704067260], type=pa.int64()),
            "value": [1.0, 2.0],
        }
    )
    pq.write_table(table, tmp_path / "epoch.parquet")
    r = read_file(tmp_path / "epoch.parquet")
    check(r)
    assert r.observations["ts"].tolist() == [utc("2024-01-01 00:00"), utc("2024-01-01 00:01")]
    assert r.observations["entity_id"].tolist() == ["epoch", "epoch"]
    table = pa.table(
        {
            "timestamp": pa.array(
                [pd.Timestamp("2024-01-01 02:00", tz="Europe/Berlin")],
                type=pa.timestamp("us", tz="Europe/Berlin"),
            ),
            "value": [1.0],
        }
    )
    pq.write_table(table, tmp_path / "berlin.parquet")
    r = read_file(tmp_path / "berlin.parquet")
    assert r.observations["ts"].tolist() == [utc("2024-01-01 01:00")]


def test_corrupt_and_empty_parquet(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    r = read_file(tmp_path / "bad.parquet", root=tmp_path)
    check(r)
    assert r.file_error.startswith("bad.parquet: is not a readable Parquet file (")
    (tmp_path / "zero.parquet").write_bytes(b"")
    r = read_file(tmp_path / "zero.parquet", root=tmp_path)
    assert r.file_error == "zero.parquet: is empty (0 bytes); expected a Parquet file"
    pq.write_table(pa.table({"entity_id": pa.array([], pa.string()),
                             "timestamp": pa.array([], pa.string()),
                             "cpu": pa.array([], pa.float64())}), tmp_path / "none.parquet")
    r = read_file(tmp_path / "none.parquet")
    check(r)
    assert r.file_error is None and r.shape == "wide" and r.rows_read == 0
    pq.write_table(pa.table({"timestamp": ["2024-01-01"], "value": [[1, 2]]}), tmp_path / "l.parquet")
    r = read_file(tmp_path / "l.parquet")
    assert r.file_error == "l.parquet: column 'value' has type list<element: int64>; expected numbers"


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path):
    r = read(
        tmp_path,
        "b.csv",
        "\n\nentity_id,timestamp,metric,value\n\na,2024-01-01,cpu,1\n   \n\na,2024-01-02,cpu,y\n\n",
    )
    assert r.rows_read == 2
    assert r.observations["line_number"].tolist() == [5]
    assert rejected(r) == [(8, "value 'y' in column 'value' is not a number")]


def test_quoted_fields_with_commas_and_line_breaks(tmp_path):
    r = read(
        tmp_path,
        "q.csv",
        'entity_id,timestamp,"cpu, %","say ""hi"""\n'
        '"Site, A",2024-01-01,"1.5",2\n'
        '"multi\nline",2024-01-02,3,4\n'
        '"Site, A",2024-01-03,"1,5",6\n',
    )
    assert r.shape == "wide"
    obs = r.observations
    assert obs["metric"].unique().tolist() == ["cpu, %", 'say "hi"']
    assert obs["entity_id"].unique().tolist() == ["Site, A"]
    assert obs["line_number"].tolist() == [2, 2, 5]
    assert rejected(r) == [
        (3, "entity_id 'multi\\nline' contains U+000A LINE FEED, which does not print; names must be "
            "printable text"),
        (3, "entity_id 'multi\\nline' contains U+000A LINE FEED, which does not print; names must be "
            "printable text"),
        (5, "value '1,5' in column 'cpu, %' is not a number"),
    ]
    assert r.rejected_rows["raw"].tolist()[2] == '"Site, A",2024-01-03,"1,5",6'


def test_single_series_takes_entity_from_the_file_name(tmp_path):
    r = read(tmp_path, "deep/dir/Machine 7.csv", " Timestamp , VALUE \n2024-01-01,1\n")
    assert r.shape == "single" and r.source_file == "deep/dir/Machine 7.csv"
    assert r.observations[["entity_id", "metric"]].values.tolist() == [["Machine 7", "value"]]
    r = read(tmp_path, "s.csv", "timestamp,value,extra\n2024-01-01,1,2\n")
    assert "unexpected column(s) extra in a single-series file" in r.file_error


def test_without_root_source_file_is_the_name(tmp_path):
    r = read_file(write(tmp_path, "a/b/c.csv", "timestamp,value\n2024-01-01,oops\n"))
    assert r.source_file == "c.csv"
    assert r.messages() == ["c.csv line 2: value 'oops' in column 'value' is not a number"]


def test_unreadable_path_is_a_file_error(tmp_path):
    r = read_file(tmp_path / "missing.csv", root=tmp_path)
    check(r)
    assert r.file_error.startswith("missing.csv: cannot be read (")


# ------------------------------------------------------------------------------ real files


def test_real_nab_single_series():
    path = DATA / "nab/realKnownCause/nyc_taxi.csv"
    r = read_file(path, root=DATA)
    check(r)
    assert r.shape == "single" and r.source_file == "nab/realKnownCause/nyc_taxi.csv"
    assert r.rejected_rows.empty and r.rows_read == 10320
    obs = r.observations
    assert set(obs["entity_id"]) == {"nyc_taxi"} and set(obs["metric"]) == {"value"}
    assert obs["ts"].iloc[0] == utc("2014-07-01 00:00:00") and obs["value"].iloc[0] == 10844.0


def test_real_nab_file_with_repeated_timestamps():
    # NAB's machine_temperature repeats one hour of timestamps (a clock change in the source)
    r = read_file(DATA / "nab/realKnownCause/machine_temperature_system_failure.csv", root=DATA)
    check(r)
    assert r.rows_read == 22695 and len(r.rejected_rows) == 12
    assert r.rejected_rows["line_number"].tolist() == list(range(10151, 10163))
    assert r.rejected_rows["reason"].tolist() == [f"duplicate of line {n}" for n in range(10139, 10151)]
    assert r.rejected_rows["raw"].iloc[0] == "2014-01-07 02:00:00,94.13972336"


def test_real_smd_wide_file_is_fast():
    path = DATA / "smd/machine-1-6.csv.gz"
    started = time.perf_counter()
    r = read_file(path, root=DATA)
    seconds = time.perf_counter() - started
    check(r)
    assert r.shape == "wide" and r.file_error is None
    assert r.rejected_rows.empty
    assert r.rows_read == len(r.observations) == 47_377 * 38
    obs = r.observations
    assert obs["metric"].nunique() == 38 and set(obs["entity_id"]) == {"machine-1-6"}
    assert obs["line_number"].min() == 2 and obs["line_number"].max() == 47_378
    assert obs["ts"].iloc[0] == utc("2024-01-01 00:00:00")
    assert obs["value"].iloc[0] == pytest.approx(0.061728)
    assert seconds < 3.0, f"reading SMD took {seconds:.2f}s"


def test_real_asd_labels():
    labels = read_labels(DATA / "asd/labels.csv")
    assert list(labels.columns) == ["entity_id", "start", "end", "metrics"]
    assert str(labels["start"].dtype) == "datetime64[us, UTC]"
    assert str(labels["end"].dtype) == "datetime64[us, UTC]"
    assert len(labels) == 22 and (labels["end"] >= labels["start"]).all()
    first = labels.iloc[0]
    assert first["entity_id"] == "omi-1"
    assert first["start"] == utc("2024-02-02 15:20:00") and first["end"] == utc("2024-02-02 15:45:00")
    assert first["metrics"][:3] == ["m04", "m05", "m07"] and len(first["metrics"]) == 15


# ------------------------------------------------------------------------------ labels


LABELS_HEADER = "entity_id,start,end,metrics\n"


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "a,2024-13-45,2024-01-02,m1",
            "line 3: field 'start' value '2024-13-45' is not a date "
            "(expected ISO 8601 or epoch seconds)",
        ),
        ("a,2024-01-01,,m1", "line 3: field 'end' is empty"),
        ("  ,2024-01-01,2024-01-02,m1", "line 3: field 'entity_id' is empty"),
        (
            "a,2024-01-03,2024-01-02,m1",
            "line 3: field 'end' value '2024-01-02' is before start '2024-01-03'",
        ),
        ("a,2024-01-01,2024-01-02", "line 3: expected 4 fields, found 3"),
    ],
)
def test_bad_label_rows_raise_naming_file_line_field_value(tmp_path, line, message):
    path = write(tmp_path, "labels.csv", LABELS_HEADER + "a,2024-01-01,2024-01-02,m1\n" + line + "\n")
    with pytest.raises(LandingError) as info:
        read_labels(path)
    assert str(info.value) == f"{path} {message}"


def test_labels_missing_column_and_more_problems(tmp_path):
    path = write(tmp_path, "l.csv", "entity_id,start,stop\n")
    with pytest.raises(LandingError, match=r"missing column\(s\) end, metrics"):
        read_labels(path)
    path = write(tmp_path, "l2.csv", LABELS_HEADER + "a,x,2024-01-01,\nb,y,2024-01-01,\n")
    with pytest.raises(LandingError, match=r"line 2: .*'x'.* \(and 1 more problem\(s\)\)$"):
        read_labels(path)


def test_labels_parse_zones_and_metric_lists(tmp_path):
    path = write(
        tmp_path,
        "labels.csv",
        LABELS_HEADER
        + "a,2024-01-01T01:00:00+01:00,2024-01-01 02:00,m1; m2 ;\n"
        + "b,1704067200,1704067260,\n",
    )
    labels = read_labels(path)
    assert labels["metrics"].tolist() == [["m1", "m2"], []]
    assert labels["start"].tolist() == [utc("2024-01-01 00:00"), utc("2024-01-01 00:00")]
    assert labels["end"].tolist() == [utc("2024-01-01 02:00"), utc("2024-01-01 00:01")]


# ------------------------------------------------------------------------------ discovery


def test_discover_files(tmp_path):
    for name in [
        "a.csv",
        "z/b.CSV.GZ",
        "z/deeper/c.parquet",
        "z/deeper/d.csv.gz",
        "notes.txt",
        "e.csv.bak",
        "f.json.gz",
        ".hidden.csv",
        ".git/g.csv",
        "z/.cache/h.parquet",
    ]:
        write(tmp_path, name, "timestamp,value\n")
    (tmp_path / "dir.csv").mkdir()
    found = discover_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.csv",
        "z/b.CSV.GZ",
        "z/deeper/c.parquet",
        "z/deeper/d.csv.gz",
    ]
    with pytest.raises(LandingError, match="does not exist"):
        discover_files(tmp_path / "nope")


def test_entity_from_path():
    assert SUFFIXES == (".csv", ".csv.gz", ".parquet")
    assert entity_from_path(Path("x/site-3.csv")) == "site-3"
    assert entity_from_path(Path("x/site-3.csv.gz")) == "site-3"
    assert entity_from_path(Path("x/site.3.parquet")) == "site.3"
    assert entity_from_path(Path("x/site-3.CSV")) == "site-3"


# ------------------------------------------------------------------------------ read paths


def _summary(records) -> tuple:
    def cells(col) -> list:
        values = col.to_pylist() if hasattr(col, "to_pylist") else list(col)
        return [None if v is None else str(v) for v in values]

    positions = np.arange(len(records.line_numbers))
    return (
        records.header,
        records.raw_header,
        {c: cells(col) for c, col in records.columns.items()},
        records.line_numbers.tolist(),
        list(records.raw(positions)) if len(positions) else [],
        records.pre_lines.tolist(),
        records.pre_reasons.tolist(),
        records.pre_raws.tolist(),
    )


@pytest.mark.parametrize(
    "content",
    [
        b"entity_id,timestamp,metric,value\na,2024-01-01,cpu,1\na,2024-01-02,cpu,x\n",
        b"entity_id,timestamp,metric,value\na,2024-01-01,cpu,1",  # no final newline
        b"entity_id,timestamp,metric,value\n",
        b"\n\n entity_id,timestamp,metric,value\n\na,2024-01-01,cpu,1\n  \n,,,\na,1,cpu\n",
        b"entity_id,timestamp,metric,value\r\na,2024-01-01,cpu,1\r\n\r\nb,2024-01-01,cpu,2\r\n",
        b'entity_id,timestamp,metric,value\n"a, b",2024-01-01,cpu,1\nc,2024-01-01,"m ""q""",2\n',
        b"entity_id,timestamp,metric,value\ncaf\xe9,2024-01-01,cpu,1\nb,2024-01-01,cpu,2\n",
        b'"entity_id","timestamp","cpu, %"\na,2024-01-01,1\na,2024-01-02,2,3\n',
    ],
)
def test_fast_and_general_csv_paths_agree(content):
    """The Arrow paths (plain and split) must give what the csv module alone gives."""
    from anomaly_assets.landing.csv_records import _csv_records, _general_records

    assert _summary(_csv_records(content)) == _summary(_general_records(content))


def test_many_lines_with_a_few_irregular_ones(tmp_path):
    lines = [f"h{i % 7},{1704067200 + i},cpu,{i}" for i in range(20_000)]
    lines[100] = '"h,quoted",1704067200,cpu,1'
    lines[200] = ""
    lines[300] = "h1,1704067200"
    lines[400] = "h1,1704067200,cpu,1e99"
    r = read(tmp_path, "big.csv", "entity_id,timestamp,metric,value\n" + "\n".join(lines) + "\n")
    assert rejected(r) == [
        (302, "expected 4 fields, found 2"),
        (402, "value '1e99' in column 'value' is beyond the limit of ±1e+15"),
    ]
    assert r.rows_read == 20_000 - 1  # the blank line is not an observation
    obs = r.observations
    assert obs["line_number"].is_monotonic_increasing
    assert obs.loc[obs["line_number"] == 102, "entity_id"].tolist() == ["h,quoted"]
    assert obs.loc[obs["line_number"] == 5002, "value"].tolist() == [5000.0]


def test_header_that_is_not_utf8(tmp_path):
    r = read(tmp_path, "h.csv", b"entity_id,timestamp,caf\xe9\na,2024-01-01,1\n")
    assert r.file_error == (
        "h.csv: header line is not valid UTF-8 ('entity_id,timestamp,caf\\xe9'); "
        "save the file as UTF-8"
    )
    r = read(tmp_path, "h2.csv", b'entity_id,"x\ny",caf\xe9\na,2024-01-01,1\n')
    assert "header line is not valid UTF-8" in r.file_error
