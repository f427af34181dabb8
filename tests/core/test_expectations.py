"""The expectations rules file and the Great Expectations runner (real GX, no Dagster)."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.config import ConfigFileError
from anomaly_assets.expectations import (
    DEFAULT_PATH,
    ExpectationRules,
    load_expectations,
    validate,
)


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


def _frame(n=60, seed=3):
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({
        "entity_id": pd.Series([f"e{i // 10}" for i in range(n)], dtype="category"),
        "metric": ["m"] * n,
        "ts": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
        "value": rng.normal(size=n),
        "upper": 1.0,
    })
    f.loc[[3, 17, 41], "value"] = [np.inf, np.nan, 9.0]
    f.loc[[5, 44], "metric"] = [None, ""]
    f.loc[[30, 31], "ts"] = f.loc[29, "ts"]  # e2 has three rows at one time
    f.loc[31, "entity_id"] = "e3"  # ... and e3 one of them
    return f


def _expectations():
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="metric"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["entity_id", "metric", "ts"]),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=-5, max_value=5),
        gxe.ExpectColumnValueLengthsToBeBetween(column="metric", min_value=1),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="upper", column_B="value", or_equal=True),
        gxe.ExpectColumnValuesToNotBeNull(column="value"),
    ]


def _same(a, b):
    assert (a.success, a.statistics) == (b.success, b.statistics)
    assert [(o.expectation, o.success, o.observed, o.error) for o in a.outcomes] == \
           [(o.expectation, o.success, o.observed, o.error) for o in b.outcomes]
    for x, y in zip(a.outcomes, b.outcomes):
        pd.testing.assert_frame_equal(x.examples.reset_index(drop=True), y.examples.reset_index(drop=True),
                                      check_categorical=False)


def test_narrow_frames_give_what_gx_gives_on_the_whole_frame():
    import great_expectations.expectations as gxe

    frame = _frame()
    extra = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=["entity_id", "metric"]),  # a column_list, but a table's
             gxe.ExpectColumnMedianToBeBetween(column="value", min_value=0, max_value=0.01),
             gxe.ExpectColumnValuesToNotBeNull(column="missing")]
    narrow = validate(frame, _expectations() + extra)
    whole = validate(frame, _expectations() + extra, narrow=False)
    _same(narrow, whole)
    by_name = {o.expectation: o for o in narrow.outcomes}
    assert by_name["expect_table_columns_to_match_ordered_list(column_list=['entity_id', 'metric'])"].observed[
        "observed_value"] == list(frame.columns)
    assert by_name["expect_column_values_to_not_be_null(column='missing')"].error
    # failing rows are whole rows of the frame
    assert list(by_name["expect_column_values_to_be_between(column='value', min_value=-5.0, max_value=5.0)"]
                .examples.columns) == list(frame.columns)
    # in the order GX itself reports one suite on the whole frame
    import great_expectations as gx

    from anomaly_assets.expectations import _batch_definition, _describe

    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    gx_result = batch.validate(gx.ExpectationSuite(name="t", expectations=_expectations() + extra))
    assert [o.expectation for o in narrow.outcomes] == [_describe(r.expectation_config) for r in gx_result.results]
    assert [o.success for o in narrow.outcomes] == [r.success for r in gx_result.results]


@pytest.mark.parametrize("cuts", [[0, 60], [0, 10, 10, 33, 60], [0, 1, 2, 20, 40, 59, 60]])
def test_chunks_combine_to_the_validation_of_all_rows(cuts):
    from anomaly_assets.expectations import ChunkedValidation

    frame = _frame()
    # chunks cut between entities except where noted: duplicates of a key stay in one chunk when
    # the cut is between entities (10, 20, 40 are; 1, 2, 33, 59 cut inside e0, e3, e5 whose keys are unique)
    acc = ChunkedValidation(_expectations(), examples=3)
    for a, b in itertools.pairwise(cuts):
        acc.add(frame.iloc[a:b])
    assert acc.chunks == len(cuts) - 1
    _same(acc.result, validate(frame, _expectations(), examples=3))
    v = acc.result
    assert not v.success and v.statistics["unsuccessful_expectations"] == 6
    between = next(o for o in v.outcomes if o.expectation.startswith("expect_column_values_to_be_between"))
    assert between.observed == {"element_count": 60, "unexpected_count": 2, "unexpected_percent": 2 / 59 * 100,
                                "missing_count": 1}


def test_chunked_validation_refuses_what_does_not_add_up():
    import great_expectations.expectations as gxe

    from anomaly_assets.expectations import ChunkedValidation

    with pytest.raises(ValueError, match="ExpectColumnMedianToBeBetween is not a row-wise"):
        ChunkedValidation([gxe.ExpectColumnMedianToBeBetween(column="x", min_value=0, max_value=1)])
    with pytest.raises(ValueError, match="mostly=0.9"):
        ChunkedValidation([gxe.ExpectColumnValuesToNotBeNull(column="x", mostly=0.9)])
    acc = ChunkedValidation([gxe.ExpectColumnValuesToNotBeNull(column="x")])
    with pytest.raises(ValueError, match="no chunk"):
        _ = acc.result
    acc.add(pd.DataFrame({"x": pd.Series([], dtype=float)}))  # no rows at all: vacuously true, as GX says
    assert acc.result.success and acc.result.outcomes[0].observed["element_count"] == 0


def test_a_chunk_where_an_expectation_cannot_run_fails_the_whole():
    import great_expectations.expectations as gxe

    from anomaly_assets.expectations import ChunkedValidation

    acc = ChunkedValidation([gxe.ExpectColumnValuesToBeBetween(column="x", max_value=5),
                             gxe.ExpectColumnValuesToNotBeNull(column="y")])
    acc.add(pd.DataFrame({"x": [1.0, 2.0], "y": [1, 2]}))
    acc.add(pd.DataFrame({"x": [3.0, 9.0]}))  # no y here
    v = acc.result
    assert not v.success and [o.expectation.split("(")[1][:10] for o in v.outcomes] == ["column='y'", "column='x'"]
    assert v.outcomes[0].error and "y" in v.outcomes[0].error  # listed first, as GX lists what could not run
    assert v.outcomes[1].observed["unexpected_count"] == 1 and v.outcomes[1].examples["x"].tolist() == [9.0]


@pytest.mark.parametrize("narrow", [True, False])
def test_outcomes_are_what_one_gx_summary_run_reports(narrow):
    """The runner takes the counts from GX's BASIC result format and runs the expectations that
    failed again with SUMMARY for their failing rows: what it reports is what one SUMMARY run of
    the whole suite reports (success, observed values, errors, the failing rows' positions), and
    an expectation that held shows no rows (with the frame's columns)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from anomaly_assets.expectations import _OBSERVED, _batch_definition, _describe, _plain

    frame = _frame()
    expectations = _expectations() + [
        gxe.ExpectColumnMedianToBeBetween(column="value", min_value=0, max_value=0.01),
        gxe.ExpectColumnMedianToBeBetween(column="value", min_value=-10, max_value=10),
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=["entity_id", "metric"]),
        gxe.ExpectColumnValuesToBeInSet(column="metric", value_set=["m"]),
        gxe.ExpectColumnValuesToNotBeNull(column="ts"),
        gxe.ExpectColumnValuesToNotBeNull(column="missing"),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=-5, max_value=5),  # the same twice
    ]
    v = validate(frame, expectations, examples=3, narrow=narrow)
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    ref = batch.validate(gx.ExpectationSuite(name="t", expectations=expectations),
                         result_format={"result_format": "SUMMARY", "partial_unexpected_count": 3}).results
    assert [o.expectation for o in v.outcomes] == [_describe(r.expectation_config) for r in ref]
    assert v.statistics["successful_expectations"] == sum(r.success for r in ref) > 0
    assert sum(not r.success for r in ref) > 3
    for o, r in zip(v.outcomes, ref):
        res = r.result or {}
        assert o.success == r.success
        assert o.observed == {k: _plain(res[k]) for k in _OBSERVED if k in res}
        assert (o.error is not None) == any(
            e.get("raised_exception") for e in ([r.exception_info] if "raised_exception" in r.exception_info
                                                else r.exception_info.values()))
        failing = [i for i in res.get("partial_unexpected_index_list") or [] if isinstance(i, int)]
        assert o.examples.index.tolist() == ([] if r.success else failing[:3])
        assert list(o.examples.columns) == list(frame.columns)
        pd.testing.assert_frame_equal(o.examples, frame.loc[pd.Index(failing[:3] if not r.success else [], dtype=int)])


@pytest.mark.parametrize("cuts", [[0, 60], [0, 10, 20, 40, 60], [0, 20, 30, 40, 50, 60]])
def test_chunks_of_some_columns_report_what_the_whole_rows_report(cuts):
    """add(frame of the checked columns, whole=..., columns=...): the whole rows are fetched only
    for a chunk where an expectation fails, and the result is what adding the whole rows reports."""
    import great_expectations.expectations as gxe

    from anomaly_assets.expectations import ChunkedValidation

    frame = _frame().assign(upper=10.0)
    frame.loc[[3, 41, 44], "value"] = [0.5, 0.5, 7.0]  # failing rows: 17 (NULL) and 44 only
    checked = [gxe.ExpectColumnValuesToNotBeNull(column="value"),
               gxe.ExpectColumnValuesToBeBetween(column="value", min_value=-5, max_value=5),
               gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="upper", column_B="value", or_equal=True)]
    narrow, whole = ChunkedValidation(checked, examples=3), ChunkedValidation(checked, examples=3)
    fetched = []
    for a, b in itertools.pairwise(cuts):
        rows = frame.iloc[a:b]
        whole.add(rows)
        narrow.add(rows[["value", "upper"]], columns=frame.head(0),
                   whole=lambda a=a, rows=rows: fetched.append(a) or rows)
    _same(narrow.result, whole.result)
    assert fetched == [a for a, b in itertools.pairwise(cuts) if a <= 17 < b or a <= 44 < b]
    failing = narrow.result.failing_examples()
    assert not narrow.result.success and sorted(set(failing["ts"])) == [frame["ts"][17], frame["ts"][44]]
    assert list(failing.columns) == ["expectation", *frame.columns]
