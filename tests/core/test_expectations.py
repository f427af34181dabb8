"""The expectations rules file and the Great Expectations runner (real GX, no Dagster)."""

import math

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.config import ConfigFileError
from anomaly_assets.expectations import DEFAULT_PATH, ExpectationRules, load_expectations, validate


def test_shipped_rules_load_and_unlisted_metrics_get_the_default():
    rules = load_expectations(DEFAULT_PATH)
    assert rules.observations.ranges["voltage_v"].upper == 1000
    other = rules.observations.range_of("not_listed")
    assert other == rules.observations.default_range
    assert other.lower == -math.inf and other.upper == math.inf
    assert rules.observations.volume.history_partitions == 7
    assert load_expectations(None) == ExpectationRules()


@pytest.mark.parametrize("text, where, found", [
    ("observations:\n  ranges:\n    voltage_v: {min: 500, max: 10}\n",
     "field 'observations.ranges.voltage_v': min 500.0 is above max 10.0", None),
    ("observations:\n  volume: {history_partitions: 0}\n",
     "field 'observations.volume.history_partitions'", "(found 0)"),
    ("observations:\n  volume: {min_ratio: 3, max_ratio: 2}\n",
     "field 'observations.volume': min_ratio 3.0 is not below max_ratio 2.0", None),
    ("scores:\n  anomaly_rate: {min: low}\n", "field 'scores.anomaly_rate.min'", "(found 'low')"),
    ("scores:\n  anomaly_rat: {min: 0}\n", "field 'scores.anomaly_rat': Extra inputs are not permitted", None),
    ("decomposition:\n  median_abs_residual_z: {min: .nan}\n",
     "field 'decomposition.median_abs_residual_z': min is NaN", None),
])
def test_bad_rules_name_file_field_and_value(tmp_path, text, where, found):
    path = tmp_path / "expectations.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        load_expectations(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and where in message
    if found:
        assert found in message


@pytest.mark.parametrize("text, message", [
    ("observations: [1, 2\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping with sections observations, decomposition, scores; found list"),
])
def test_rules_file_that_is_not_a_mapping(tmp_path, text, message):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        load_expectations(path)
    with pytest.raises(ConfigFileError, match="expectations file not found"):
        load_expectations(tmp_path / "missing.yaml")


def test_validate_reports_statistics_and_failing_rows():
    import great_expectations.expectations as gxe

    frame = pd.DataFrame({
        "entity_id": ["a", "b", None, "a", "c"],
        "metric": ["m"] * 5,
        "ts": pd.to_datetime(["2026-01-01", "2026-01-01", "2026-01-02", "2026-01-01", "2026-01-03"], utc=True),
        "value": [1.0, 2.0, 3.0, 4.0, np.inf],
    }, index=[10, 11, 12, 13, 14])  # the runner does not depend on the caller's index
    v = validate(frame, [
        gxe.ExpectColumnValuesToNotBeNull(column="entity_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["entity_id", "metric", "ts"]),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, max_value=10),
        gxe.ExpectColumnValuesToNotBeNull(column="metric"),
    ])
    assert not v.success
    assert v.statistics["evaluated_expectations"] == 4 and v.statistics["successful_expectations"] == 1
    by_name = {o.expectation: o for o in v.outcomes}
    nulls = by_name["expect_column_values_to_not_be_null(column='entity_id')"]
    assert by_name["expect_column_values_to_not_be_null(column='metric')"].success
    assert nulls.observed["unexpected_count"] == 1 and nulls.examples["ts"].tolist() == [frame["ts"].iloc[2]]
    dups = by_name["expect_compound_columns_to_be_unique(column_list=['entity_id', 'metric', 'ts'])"]
    assert sorted(dups.examples["value"]) == [1.0, 4.0]
    between = by_name["expect_column_values_to_be_between(column='value', min_value=0.0, max_value=10.0)"]
    assert between.examples["entity_id"].tolist() == ["c"]
    examples = v.failing_examples()
    assert list(examples.columns[:2]) == ["expectation", "entity_id"] and len(examples) == 4
    assert "expect_column_values_to_not_be_null(column='entity_id'): 1 of 5 rows" in v.summary()


def test_validate_caps_examples_and_combines():
    import great_expectations.expectations as gxe

    frame = pd.DataFrame({"x": np.arange(1000.0)})
    v = validate(frame, [gxe.ExpectColumnValuesToBeBetween(column="x", max_value=10)], examples=5)
    assert v.outcomes[0].observed["unexpected_count"] == 989 and len(v.outcomes[0].examples) == 5
    ok = validate(frame, [gxe.ExpectColumnMedianToBeBetween(column="x", min_value=400, max_value=600)])
    assert ok.success and ok.outcomes[0].observed["observed_value"] == 499.5
    both = ok + v
    assert not both.success and both.statistics["evaluated_expectations"] == 2
    assert both.statistics["successful_expectations"] == 1


def test_an_expectation_that_cannot_run_fails_with_the_reason():
    import great_expectations.expectations as gxe

    v = validate(pd.DataFrame({"x": [1.0]}), [gxe.ExpectColumnValuesToNotBeNull(column="nope")])
    assert not v.success
    assert v.outcomes[0].error and "nope" in v.outcomes[0].error
    assert "could not run" in v.summary()
