"""Model artifacts are data: each day's fitted parameters round-trip through Parquet, and nothing a
file (or a path in the warehouse) says can run code."""

import pickle

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.detector import DetectorParams
from anomaly_assets.core.fleet import PARAM_COLUMNS, days_in, detect_days
from anomaly_assets.defs.resources import ModelStore


def _fitted():
    rng = np.random.default_rng(0)
    ts = pd.date_range("2026-03-01", periods=24 * 12, freq="1h", tz="UTC")
    rows = pd.concat([pd.DataFrame({"entity_id": f"e{e}", "metric": m, "ts": ts, "value": rng.normal(size=len(ts))})
                      for e in range(3) for m in ("a", "b")], ignore_index=True)
    days = days_in(ts.min(), ts.max() + pd.Timedelta(hours=1))
    return detect_days(rows, days, DetectorParams()).models[days[-1]]


def test_a_days_parameters_round_trip(tmp_path):
    model = _fitted()
    frame = model.series_params()
    assert list(frame.columns) == PARAM_COLUMNS and len(frame) == 6
    store = ModelStore(path=str(tmp_path / "models"))
    path = store.save(frame, str(model.day.date()), model.version)
    assert path.suffix == ".parquet" and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    pd.testing.assert_frame_equal(store.load(str(path)), frame)


class _Boom:
    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(_Boom.marker),)


def test_nothing_in_a_file_or_a_stored_path_runs_code(tmp_path):
    """ModelStore.load used to be joblib.load of whatever path ml.model_versions held."""
    store = ModelStore(path=str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    _Boom.marker = str(tmp_path / "pwned")
    pickled = tmp_path / "models" / "2026-01-01_v.joblib"
    pickled.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="not a .parquet artifact"):
        store.load(str(pickled))
    disguised = tmp_path / "models" / "2026-01-02_v.parquet"  # a pickle named like an artifact
    disguised.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(Exception):
        store.load(str(disguised))
    outside = tmp_path / "elsewhere.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(outside)
    with pytest.raises(ValueError, match="not inside the model store"):
        store.load(str(outside))
    assert not (tmp_path / "pwned").exists()
