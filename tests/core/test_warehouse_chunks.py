"""Chunked reads and streamed writes: the entity chunks cover the window once, a chunk's rows
come back with their names as the rows a plain query gives, and a stream of chunk frames is written
whole even when later frames need wider types than the first."""

import duckdb
import numpy as np
import pandas as pd
import pytest

from anomaly_assets import warehouse as wh

START = pd.Timestamp("2026-10-01", tz="UTC")
# names that sort and quote awkwardly, and entities of different sizes
ENTITIES = {"a'1": 30, "b,2": 5, "b,3": 60, "pompe-é": 12, "z 9": 1, "zz": 44}
METRICS = ["rpm", "temp_c", "vib'x"]


def _observations(path) -> tuple[duckdb.DuckDBPyConnection, pd.DataFrame]:
    rng = np.random.default_rng(3)
    frames = []
    for e, hours in ENTITIES.items():
        for m in METRICS[: 1 + len(e) % 3]:  # entities differ in their metrics
            ts = START + pd.to_timedelta(np.arange(hours), unit="h")
            frames.append(pd.DataFrame({"entity_id": e, "metric": m, "ts": ts, "value": rng.normal(size=hours),
                                        "source_file": "f.csv", "line_number": np.arange(hours) + 2,
                                        "ingested_at": START}))
    rows = pd.concat(frames, ignore_index=True)
    con = duckdb.connect(str(path))
    wh.ensure_tables(con)
    with wh.transaction(con):
        wh.replace_time_slice(con, wh.OBSERVATIONS, rows[wh.OBSERVATIONS.column_names], START, START + pd.Timedelta(days=3))
    return con, rows


def _read(con, entities, metrics, lo, hi) -> pd.DataFrame:
    """The chunk's observations in [lo, hi), nothing stored before: what a first night reads."""
    got = wh.read_history_chunk(con, entities, metrics, lo, hi, lo, lo, lo, 0)
    assert got["residual"].isna().all() and got["excluded"].isna().all()
    return got[["entity_id", "metric", "ts", "value"]]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype({"entity_id": str, "metric": str})
    return out.sort_values(["entity_id", "metric", "ts"]).reset_index(drop=True)


@pytest.mark.parametrize("max_rows,parts", [(10**9, 1), (70, 1), (1, 1), (10**9, 2), (40, 3)])
def test_chunks_read_every_row_once_with_its_names(tmp_path, max_rows, parts):
    con, rows = _observations(tmp_path / "w.duckdb")
    end = START + pd.Timedelta(days=3)
    chunks = wh.entity_chunks(con, wh.OBSERVATIONS, START, end, max_rows, parts)
    assert [e for c in chunks for e in c] == sorted(ENTITIES)  # each entity once, in DuckDB's order
    metrics = wh.distinct_metrics(con, wh.OBSERVATIONS, START, end)
    assert metrics == sorted(METRICS)
    per_entity = rows.groupby("entity_id").size()
    for c in chunks:  # an entity bigger than max_rows is a chunk of its own
        assert len(c) == 1 or per_entity[c].sum() <= max_rows
    if parts > 1:
        assert len(chunks) >= parts
    read = [_read(con, c, metrics, START, end) for c in chunks]
    for c, frame in zip(chunks, read):
        assert list(frame.columns) == ["entity_id", "metric", "ts", "value"]
        assert list(frame["entity_id"].cat.categories) == c and list(frame["metric"].cat.categories) == metrics
    got = _sorted(pd.concat(read, ignore_index=True))
    want = _sorted(rows[["entity_id", "metric", "ts", "value"]])
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert got["ts"].dt.tz is not None


def test_the_window_bounds_the_read(tmp_path):
    con, rows = _observations(tmp_path / "w.duckdb")
    lo, hi = START + pd.Timedelta(hours=10), START + pd.Timedelta(hours=40)
    chunks = wh.entity_chunks(con, wh.OBSERVATIONS, lo, hi, 50)
    metrics = wh.distinct_metrics(con, wh.OBSERVATIONS, lo, hi)
    got = _sorted(pd.concat([_read(con, c, metrics, lo, hi) for c in chunks]))
    inside = rows[(rows["ts"] >= lo) & (rows["ts"] < hi)]
    assert "z 9" not in {e for c in chunks for e in c}  # its one row is before the window
    pd.testing.assert_frame_equal(got, _sorted(inside[["entity_id", "metric", "ts", "value"]]), check_dtype=False)


def test_a_name_missing_from_the_lists_is_an_error_not_a_dropped_row(tmp_path):
    con, _ = _observations(tmp_path / "w.duckdb")
    end = START + pd.Timedelta(days=3)
    with pytest.raises(ValueError, match=r"raw.observations has metric values .* not among the 2 names"):
        _read(con, sorted(ENTITIES), ["rpm", "temp_c"], START, end)
    # an entity between the first and last listed ones but not listed is not read at all
    got = _read(con, ["a'1", "b,3"], METRICS, START, end)
    assert set(got["entity_id"]) == {"a'1", "b,3"}


def test_a_null_entity_id_is_named_not_read_past(tmp_path):
    # the contract forbids it; a table that breaks the contract must not lose rows silently
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.observations (entity_id VARCHAR, metric VARCHAR, ts TIMESTAMPTZ, value DOUBLE)")
    con.execute("INSERT INTO raw.observations VALUES ('e1', 'm', ?, 1.0), (NULL, 'm', ?, 2.0)", [START, START])
    end = START + pd.Timedelta(days=1)
    chunks = wh.entity_chunks(con, wh.OBSERVATIONS, START, end, 10)
    assert chunks == [["e1", None]]
    assert wh.entity_ranges(con, wh.OBSERVATIONS, START, end, 10) == [("e1", None)]
    # NULL rows that do not fit in the last chunk are a chunk of their own, not left out
    assert wh.entity_chunks(con, wh.OBSERVATIONS, START, end, 1) == [["e1"], [None]]
    assert wh.entity_ranges(con, wh.OBSERVATIONS, START, end, 1) == [("e1", "e1"), (None, None)]
    with pytest.raises(ValueError, match="NULL entity_id"):
        wh.read_history_chunk(con, chunks[0], ["m"], START, end, START, START, START, 0)


def _scores(entities, why, model_version, anomaly_score=0.5):
    n = len(entities)
    return pd.DataFrame({"entity_id": pd.Categorical(entities), "ts": START, "anomaly_score": [anomaly_score] * n,
                         "is_anomaly": False, "severity": "normal", "why": why, "model_version": model_version})


def test_a_stream_takes_frames_wider_than_its_first(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    wh.ensure_tables(con)
    many = [f"e{i:05d}" for i in range(40_000)]  # more categories than the first frame's int8 codes hold
    # text and number columns all NULL: no type to read off the first frame
    frames = [_scores(["a", "b"], [None, None], [None, None], anomaly_score=None),
              _scores(many, ["x"] * len(many), ["v1"] * len(many)),
              _scores(["c"], [None], ["v2"])]
    with wh.transaction(con):
        wh.replace_time_slice_streamed(con, wh.ANOMALY_SCORES, iter(frames), START, START + pd.Timedelta(days=1))
    got = con.execute("SELECT count(*), count(DISTINCT entity_id), count(why), max(entity_id), "
                      "string_agg(DISTINCT model_version, ',' ORDER BY model_version), count(anomaly_score) "
                      "FROM scoring.anomaly_scores").fetchone()
    assert got == (40_003, 40_003, 40_000, "e39999", "v1,v2", 40_001)


def test_a_history_chunk_is_the_listed_observations_with_what_was_stored_before_the_day(tmp_path):
    """read_history_chunk against the same rows computed in pandas: each entity from the short
    or the long start by its distinct timestamps before the day, the stored residual and excluded
    before the day only, NULL where nothing was stored, an unlisted entity between the listed
    ones left out."""
    con, rows = _observations(tmp_path / "w.duckdb")
    h = lambda n: START + pd.Timedelta(hours=n)  # noqa: E731
    start, end, short, long_, recent, min_recent = h(30), h(48), h(20), START, h(24), 6
    # "m2": 3 distinct recent timestamps (6 rows over two metrics) and more in the day: long start
    m2 = pd.DataFrame([("m2", m, h(t), float(t)) for t in (10, 11) for m in ("rpm",)]
                      + [("m2", m, h(t), float(t)) for t in (26, 27, 28, *range(30, 41)) for m in ("rpm", "temp_c")],
                      columns=["entity_id", "metric", "ts", "value"])
    m2["source_file"], m2["ingested_at"] = "f.csv", START
    con.register("m2_rows", m2[wh.OBSERVATIONS.column_names])
    con.execute("INSERT INTO raw.observations SELECT * FROM m2_rows")
    rows = pd.concat([rows, m2], ignore_index=True)
    # stored: everything before h(28) and the day's first hours (a re-run day), not h(28)-h(30)
    stored = rows[(rows["ts"] < h(28)) | ((rows["ts"] >= start) & (rows["ts"] < h(34)))].copy()
    rng = np.random.default_rng(4)
    stored["residual"] = rng.normal(size=len(stored))
    stored["excluded"] = rng.random(len(stored)) < 0.2
    for c in wh.DECOMPOSITION.column_names:
        if c not in stored:
            stored[c] = np.nan
    with wh.transaction(con):
        wh.replace_time_slice(con, wh.DECOMPOSITION, stored[wh.DECOMPOSITION.column_names], START, h(48))
    listed = ["a'1", "b,3", "m2", "pompe-é", "zz"]  # "b,2" sorts between them and is not this chunk's
    metrics = wh.distinct_metrics(con, wh.OBSERVATIONS, START, h(60))
    got = wh.read_history_chunk(con, listed, metrics, start, end, short, long_, recent, min_recent)
    assert list(got.columns) == ["entity_id", "metric", "ts", "value", "residual", "excluded"]
    assert list(got["entity_id"].cat.categories) == listed and list(got["metric"].cat.categories) == metrics

    n_recent = rows[(rows["ts"] >= recent) & (rows["ts"] < start)].groupby("entity_id")["ts"].nunique()
    from_ = {e: short if n_recent.get(e, 0) >= min_recent else long_ for e in listed}
    # each rule is exercised: exactly min_recent (a'1), none (pompe-é), few distinct but many
    # rows, and many in the day (m2)
    assert (n_recent["a'1"], from_["a'1"]) == (min_recent, short)
    assert (from_["pompe-é"], from_["m2"], from_["zz"]) == (long_, long_, short)
    want = rows[rows["entity_id"].isin(listed) & (rows["ts"] < end)]
    want = want[want["ts"] >= want["entity_id"].map(from_)]
    before = stored[stored["ts"] < start][["entity_id", "metric", "ts", "residual", "excluded"]]
    want = want.merge(before, how="left")[["entity_id", "metric", "ts", "value", "residual", "excluded"]]
    got, want = _sorted(got), _sorted(want)
    assert got["residual"].isna().any() and got["residual"].notna().any()
    assert got.loc[got["ts"] >= start, "residual"].isna().all()  # the day's stored rows are not its history
    pd.testing.assert_frame_equal(got.drop(columns="excluded"), want.drop(columns="excluded"), check_dtype=False)
    assert (got["excluded"].isna() == want["excluded"].isna()).all()
    assert (got["excluded"].dropna().astype(bool).to_numpy() == want["excluded"].dropna().astype(bool).to_numpy()).all()

    with pytest.raises(ValueError, match=r"raw.observations has metric values .* not among the 2 names"):
        wh.read_history_chunk(con, listed, ["rpm", "temp_c"], start, end, short, long_, recent, min_recent)
