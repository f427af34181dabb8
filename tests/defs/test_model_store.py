"""Model artifacts are data: a fitted model round-trips through .npz + JSON and scores the same, and
nothing a file (or a path in the warehouse) says can run code."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from anomaly_assets import artifacts
from anomaly_assets.core.fleet import DecompositionParams, DetectorParams, days_in, decompose_days, fit_fleet, score_day
from anomaly_assets.defs.resources import ModelStore
from anomaly_assets.demo.fleet import METRICS, simulate_fleet


def _features(entities=4, days=16):
    d = simulate_fleet(entities=entities, days=days, freq="1h", seed=3)
    e, m, t = np.meshgrid(np.arange(len(d.entity_ids)), np.arange(d.values.shape[1]), np.arange(len(d.timestamps)),
                          indexing="ij")
    obs = pd.DataFrame({"entity_id": d.entity_ids[e.ravel()], "metric": np.asarray(METRICS)[m.ravel()],
                        "ts": pd.to_datetime(d.timestamps[t.ravel()], utc=True), "value": d.values.ravel()})
    day_list = days_in(obs.ts.min().floor("D"), obs.ts.max().floor("D") + pd.Timedelta(days=1))
    return obs, decompose_days(obs, day_list, DecompositionParams(history_days=7, min_history_days=3)), day_list


def test_a_fitted_model_round_trips_and_scores_the_same(tmp_path):
    obs, dec, days = _features()
    day = days[-1]
    model = fit_fleet(dec, day, DetectorParams(min_training_days=2), entities=sorted(obs.entity_id.unique()))
    store = ModelStore(path=str(tmp_path / "models"))
    path = store.save(model, str(day.date()), model.version)
    assert path.suffix == ".npz" and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    back = store.load(str(path))
    assert type(back) is type(model) and back.version == model.version and back.params == model.params
    window = dec[(dec.ts >= day - pd.Timedelta(days=2)) & (dec.ts < day + pd.Timedelta(days=1))]
    want, want_e = score_day(window, model)
    got, got_e = score_day(window, back)
    pd.testing.assert_frame_equal(got, want)  # the same arithmetic on the same numbers: identical
    pd.testing.assert_frame_equal(got_e, want_e)


@dataclasses.dataclass(frozen=True)
class _Frozen:  # a dataclass of this test module: outside the allowed prefix unless allowed
    when: pd.Timestamp
    values: tuple


def test_the_tree_keeps_types_and_refuses_what_is_not_data(tmp_path):
    tree = {"nan": float("nan"), "inf": float("-inf"), "ints": np.arange(3, dtype=np.int32), "text": np.array(["a", "b"]),
            "obj": np.array(["x", None], dtype=object), "scalar": np.float32(1.5), "nat": pd.NaT,
            "td": pd.Timedelta("90min"), (1, "k"): [1, (2, 3)], "frozen": _Frozen(pd.Timestamp("2026-01-01", tz="UTC"), (1,))}
    blob = artifacts.dumps(tree, allowed=("test_model_store", "tests."))
    (tmp_path / "t.npz").write_bytes(blob)
    back = artifacts.load(tmp_path / "t.npz", allowed=("test_model_store", "tests."))
    assert np.isnan(back["nan"]) and back["inf"] == float("-inf") and back["ints"].dtype == np.int32
    assert back["text"].tolist() == ["a", "b"] and back["obj"].tolist() == ["x", None]
    assert type(back["scalar"]) is np.float32 and back["nat"] is pd.NaT and back["td"] == pd.Timedelta("90min")
    assert back[(1, "k")] == [1, (2, 3)] and back["frozen"] == tree["frozen"]
    with pytest.raises(artifacts.ArtifactError, match=r"outside anomaly_assets\.: not loaded"):
        artifacts.load(tmp_path / "t.npz")  # by default only the project's own classes
    with pytest.raises(artifacts.ArtifactError, match=r"dict\['f'\]\[0\]: a builtins.builtin_function_or_method cannot"):
        artifacts.dumps({"f": [len]})


def _crafted_npz(tmp_path, root) -> str:
    buffer = tmp_path / "crafted.npz"
    tree = json.dumps({"format": 1, "root": root}).encode()
    np.savez(buffer, __tree__=np.frombuffer(tree, dtype=np.uint8))
    return str(buffer)


class _Boom:
    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(_Boom.marker),)


def test_nothing_in_a_file_or_a_stored_path_runs_code(tmp_path):
    """Before, ModelStore.load was joblib.load of whatever path ml.model_versions held: a crafted pickle ran."""
    store = ModelStore(path=str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    _Boom.marker = str(tmp_path / "pwned")
    for name in ("2026-01-01_v.joblib", "2026-01-02_v.npz"):  # a pickle, also one named like an artifact
        (tmp_path / "models" / name).write_bytes(pickle.dumps(_Boom()))
        with pytest.raises(artifacts.ArtifactError):
            store.load(str(tmp_path / "models" / name))
    np.save(tmp_path / "models" / "obj.npy", np.array([_Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(artifacts.ArtifactError, match="not inside the model store|not an .npz"):
        store.load(str(tmp_path / "models" / "obj.npy"))
    outside = _crafted_npz(tmp_path, {"__object__": "os:system", "state": {}})
    with pytest.raises(artifacts.ArtifactError, match="not inside the model store"):
        store.load(outside)
    crafted = tmp_path / "models" / "2026-01-03_v.npz"
    crafted.write_bytes((tmp_path / "crafted.npz").read_bytes())
    with pytest.raises(artifacts.ArtifactError, match="names class os:system, outside anomaly_assets"):
        store.load(str(crafted))
    assert not (tmp_path / "pwned").exists()
