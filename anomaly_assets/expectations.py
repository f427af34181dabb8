"""Data expectations: the rules users edit (``configs/expectations.yaml``) and a small Great
Expectations runner that the asset checks call.

The rules are validated with pydantic when definitions load; a bad file fails with one line per
problem naming the file, the field, the value found and what is allowed::

    configs/expectations.yaml: field 'observations.ranges.voltage_v': min 500.0 is above max 10.0

:func:`validate` runs Great Expectations 1.x expectations on one pandas frame in an ephemeral
context (no files, no analytics, no progress bars) and returns a :class:`Validation`: whether every
expectation held, GX's statistics, what each expectation observed, and up to ``examples`` failing
rows per expectation. GX is imported on first use (it takes about 3 s); the context and its
pandas datasource are made once per process and reused for every frame. :class:`ChunkedValidation`
runs row-wise expectations on disjoint chunks of rows and combines them into what one validation
of all the rows reports.

No dagster, no DuckDB: frames in, results out.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from anomaly_assets.config import ConfigFileError, read_yaml_mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO_ROOT / "configs" / "expectations.yaml"


# --------------------------------------------------------------------------------------------
# Rules (configs/expectations.yaml)
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """Inclusive bounds; a missing bound is no bound."""

    min: Optional[float] = None
    max: Optional[float] = None

    @model_validator(mode="after")
    def _ordered(self):
        for name in ("min", "max"):
            v = getattr(self, name)
            if v is not None and math.isnan(v):
                raise ValueError(f"{name} is NaN; expected a number or nothing")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @property
    def lower(self) -> float:
        return -math.inf if self.min is None else self.min

    @property
    def upper(self) -> float:
        return math.inf if self.max is None else self.max


class Volume(_Strict):
    """A day's row count against the median of the previous ``history_partitions`` days that have rows."""

    history_partitions: int = Field(7, ge=1, le=366)
    min_ratio: float = Field(0.5, ge=0)
    max_ratio: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_ratio >= self.max_ratio:
            raise ValueError(f"min_ratio {self.min_ratio} is not below max_ratio {self.max_ratio}")
        return self


class ObservationRules(_Strict):
    default_range: Range = Range()
    ranges: dict[str, Range] = {}
    volume: Volume = Volume()

    def range_of(self, metric: str) -> Range:
        return self.ranges.get(metric, self.default_range)


class DecompositionRules(_Strict):
    median_abs_residual_z: Range = Range(min=0.2, max=5.0)


class ScoreRules(_Strict):
    anomaly_rate: Range = Range(min=0.0, max=0.05)


class ExpectationRules(_Strict):
    """Everything in ``configs/expectations.yaml``; every section and field has a default."""

    observations: ObservationRules = ObservationRules()
    decomposition: DecompositionRules = DecompositionRules()
    scores: ScoreRules = ScoreRules()


def _problems(path: Path, exc: ValidationError) -> str:
    lines = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: field '{where}': {msg} (found {e.get('input')!r})")
    return "\n".join(lines)


def load_expectations(path: Path | None) -> ExpectationRules:
    """The rules in ``path`` (None: the defaults). Raises ConfigFileError naming file and field."""
    if path is None:
        return ExpectationRules()
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"{path}: expectations file not found (set ANOMALY_EXPECTATIONS or create it)")
    data = read_yaml_mapping(path, "sections observations, decomposition, scores")
    try:
        return ExpectationRules.model_validate(data)
    except ValidationError as e:
        raise ConfigFileError(_problems(path, e)) from e


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one expectation found."""

    expectation: str  # e.g. "expect_column_values_to_not_be_null(column='entity_id')"
    success: bool
    observed: dict[str, Any]  # element_count, unexpected_count, unexpected_percent, observed_value
    examples: pd.DataFrame  # failing rows of the frame (up to the limit), all columns
    error: str | None = None  # the exception GX caught, if the expectation could not run


@dataclass
class Validation:
    """The result of :func:`validate` (or several, combined with ``+``)."""

    success: bool
    statistics: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)

    def __add__(self, other: Validation) -> Validation:
        outcomes = self.outcomes + other.outcomes
        return Validation(self.success and other.success, _statistics(outcomes), outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def failing_examples(self, limit: int = 10) -> pd.DataFrame:
        """Up to ``limit`` failing rows over all failed expectations, with the expectation's name."""
        frames = [o.examples.assign(expectation=o.expectation) for o in self.failed if len(o.examples)]
        if not frames:
            return pd.DataFrame()
        out = pd.concat(frames, ignore_index=True).head(limit)
        return out[["expectation", *[c for c in out.columns if c != "expectation"]]]

    def summary(self) -> str:
        """One line: what failed, how often (or that everything held)."""
        if self.success:
            return f"{len(self.outcomes)} expectation(s) met"
        parts = []
        for o in self.failed:
            if o.error:
                parts.append(f"{o.expectation} could not run: {o.error}")
            elif "unexpected_count" in o.observed:
                parts.append(
                    f"{o.expectation}: {o.observed['unexpected_count']} of {o.observed.get('element_count')} rows"
                )
            else:
                parts.append(f"{o.expectation}: observed {o.observed.get('observed_value')!r}")
        return "; ".join(parts)


# What an Outcome keeps of GX's result, in this order.
_OBSERVED = ("element_count", "unexpected_count", "unexpected_percent", "missing_count", "observed_value")


def _statistics(outcomes: list[Outcome]) -> dict[str, Any]:
    n, ok = len(outcomes), sum(o.success for o in outcomes)
    return {
        "evaluated_expectations": n,
        "successful_expectations": ok,
        "unsuccessful_expectations": n - ok,
        "success_percent": ok / n * 100 if n else None,  # as GX computes it
    }


@functools.cache
def _batch_definition():
    """One ephemeral GX context with a pandas datasource, per process."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every batch under 1 GB (hash_pandas_object + md5 of all of it, twice per
    # validation: the batch is fetched again to validate). The fingerprint is a batch marker no
    # result uses; on a chunk of millions of rows it cost as much as the expectations themselves.
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("anomaly_assets").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def _describe(config) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{config.type}({args})"


def _plain(v: Any) -> Any:
    """JSON-friendly scalars (numpy and pandas values to Python)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v if isinstance(v, (str, int, float, bool, type(None))) else str(v)


def _domain(expectation, frame: pd.DataFrame) -> tuple[str, ...] | None:
    """The columns ``expectation`` looks at: a column's, a pair's or a column list's expectation
    (None: the whole frame, e.g. a table expectation such as the ordered column list)."""
    from great_expectations.expectations.expectation import (
        ColumnAggregateExpectation,
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    kwargs = expectation.configuration.kwargs
    if kwargs.get("row_condition"):
        return None
    if isinstance(expectation, (ColumnMapExpectation, ColumnAggregateExpectation)):
        cols = (kwargs["column"],)
    elif isinstance(expectation, ColumnPairMapExpectation):
        cols = (kwargs["column_A"], kwargs["column_B"])
    elif isinstance(expectation, MulticolumnMapExpectation):
        cols = tuple(kwargs["column_list"])
    else:
        return None
    # a column the frame lacks: the whole frame, so that GX reports it as it would
    return tuple(dict.fromkeys(cols)) if all(c in frame.columns for c in cols) else None


def _gx_results(batch, expectations: list, result_format: dict) -> list:
    """GX's results of one suite of ``expectations`` on ``batch``, in the order of ``expectations``
    (GX lists them in its own order, see :func:`_in_gx_order`; equal expectations keep theirs)."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="anomaly_assets_check", expectations=list(expectations))
    by_name: dict[str, list] = {}
    for r in batch.validate(suite, result_format=result_format).results:
        by_name.setdefault(_describe(r.expectation_config), []).append(r)
    return [by_name[_describe(e.configuration)].pop(0) for e in expectations]


def _run_suite(frame: pd.DataFrame, expectations: list, examples: int, rows: pd.DataFrame) -> list[Outcome]:
    """One GX suite on ``frame`` (index 0..n-1): an Outcome per expectation, in their order, with
    the failing rows as ``examples``, taken whole from ``rows`` (the same rows as ``frame``, with
    every column when GX was handed only some).

    The suite runs with GX's BASIC result format (the counts and observed values an Outcome
    keeps), and the expectations that did not hold (or could not run) run again with SUMMARY for
    their failing rows' positions: those are what an Outcome takes from SUMMARY, and an expectation
    that held has no failing rows to show. SUMMARY on every expectation cost twice BASIC on a
    chunk of millions of rows (GX builds the unexpected rows' index and value counts, a take of
    every column of the frame even when nothing failed)."""
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    results = _gx_results(batch, expectations, {"result_format": "BASIC"})
    redo = [i for i, r in enumerate(results) if not r.success]
    if redo:
        summary = {"result_format": "SUMMARY", "partial_unexpected_count": examples}
        for i, r in zip(redo, _gx_results(batch, [expectations[i] for i in redo], summary)):
            results[i] = r
    outcomes = []
    for r in results:
        res = dict(r.result or {})
        failing = [i for i in res.get("partial_unexpected_index_list") or [] if isinstance(i, int)]
        exc = r.exception_info or {}
        if "raised_exception" not in exc and exc:  # several metrics: {metric_id: info}
            exc = next((v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")), {})
        name = _describe(r.expectation_config)
        outcomes.append(Outcome(
            expectation=name,
            success=bool(r.success),
            observed={k: _plain(res[k]) for k in _OBSERVED if k in res},
            # no failing rows: the frame's first 0 rows (a slice; a take of none costs as much as
            # a take of some on Arrow-backed columns)
            examples=rows.loc[pd.Index(failing[:examples])] if failing and not r.success else rows.iloc[:0],
            error=str(exc.get("exception_message")) if exc.get("raised_exception") else None,
        ))
    return outcomes


def validate(frame: pd.DataFrame, expectations: list, *, examples: int = 10, narrow: bool = True) -> Validation:
    """Run GX expectations on ``frame``.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows to check (its index is replaced by row positions).
    expectations : list of great_expectations.expectations.Expectation
        Built by the caller (``import great_expectations.expectations as gxe`` inside the check).
    examples : int
        Failing rows kept per expectation.
    narrow : bool
        Hand GX only the columns each expectation names (one suite per set of columns; a table
        expectation, or one naming a missing column, gets the whole frame). GX's pandas engine
        copies its whole frame for every map metric (dropping NULLs of the column), so on a wide
        frame of millions of rows this is several times faster. The results are the same: GX
        looks at no other column; the failing rows shown are still whole rows of ``frame``.
        False: one suite on the whole frame (the reference the tests compare with).

    Returns
    -------
    Validation
        ``success`` is True when every expectation held. An expectation that raised inside GX
        counts as failed, with the exception's message in ``Outcome.error``.
    """
    if not expectations:
        return Validation(True, _statistics([]), [])
    return _in_gx_order(_outcomes(frame, expectations, examples, narrow), expectations)


def _outcomes(frame: pd.DataFrame, expectations: list, examples: int, narrow: bool = True) -> list[Outcome]:
    """An Outcome per expectation, in the order of ``expectations`` (see :func:`validate`)."""
    frame = frame.reset_index(drop=True)
    groups: dict[tuple[str, ...] | None, list[int]] = {}
    for i, e in enumerate(expectations):
        groups.setdefault(_domain(e, frame) if narrow else None, []).append(i)
    outcomes: list[Outcome | None] = [None] * len(expectations)
    for cols, idx in groups.items():
        sub = frame if cols is None else frame[list(cols)]
        for i, o in zip(idx, _run_suite(sub, [expectations[i] for i in idx], examples, frame)):
            outcomes[i] = o
    return outcomes


def _in_gx_order(outcomes: list[Outcome], expectations: list) -> Validation:
    """The Validation of ``outcomes`` (one per expectation, in their order), listed as GX lists
    one suite's results: those whose metrics could not be computed first
    (``Validator.graph_validate``), then grouped by ``column``
    (``Validator.process_expectations_for_validation``: groups in order of first appearance,
    expectations without a single column together as one group)."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(expectations):
        column = e.configuration.kwargs.get("column")
        groups.setdefault(column if isinstance(column, str) else "\0no column", []).append(i)
    order = [i for g in groups.values() for i in g]
    listed = [outcomes[i] for i in order if outcomes[i].error] + [outcomes[i] for i in order if not outcomes[i].error]
    return Validation(all(o.success for o in listed), _statistics(listed), listed)


_ADDITIVE = ("element_count", "unexpected_count", "missing_count")


class ChunkedValidation:
    """GX map expectations validated on disjoint chunks of rows, combined exactly.

    ``add(frame)`` runs :func:`validate` on one chunk; :attr:`result` is what one validation of
    all the chunks' rows together reports: element, unexpected and missing counts add up, the
    unexpected percent is GX's formula on the sums, an expectation holds when it held in every
    chunk (exact for map expectations with ``mostly`` = 1: some row failed, or none did), and
    the failing rows are the first ``examples`` in chunk order. Memory follows the chunk.

    Only row-wise (map) expectations qualify: a median or a row count is not the sum of its
    parts. An expectation that compares rows with each other (compound uniqueness) is exact when
    no group of rows it compares spans two chunks: cut the chunks between entities when the key
    starts with the entity.
    """

    def __init__(self, expectations: list, *, examples: int = 10):
        from great_expectations.expectations.expectation import (
            ColumnMapExpectation,
            ColumnPairMapExpectation,
            MulticolumnMapExpectation,
        )

        for e in expectations:
            if not isinstance(e, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)):
                raise ValueError(f"{type(e).__name__} is not a row-wise (map) expectation: it cannot be "
                                 "validated chunk by chunk")
            if getattr(e, "mostly", 1) != 1:
                raise ValueError(f"{type(e).__name__} has mostly={e.mostly}: chunks combine exactly only with mostly=1")
        self.expectations = list(expectations)
        self.examples = examples
        self.chunks = 0
        self._outcomes: list[Outcome] = []

    def add(self, frame: pd.DataFrame, whole=None, columns: pd.DataFrame | None = None) -> None:
        """Validate one chunk (rows disjoint from every other chunk's).

        ``whole`` and ``columns``, for a ``frame`` that holds only some columns of the rows (at
        least every column the expectations name): a function returning the same rows with every
        column, and those columns with no rows (same types as ``whole()`` gives). ``whole`` is
        called only when an expectation fails or cannot run on ``frame``, and the chunk is then
        validated on the whole rows, so that the failing rows shown are whole rows; when every
        expectation holds, the chunk's (no) failing rows are ``columns``. The result is what
        adding ``whole()`` reports (the expectations see the same values), without reading the
        other columns of a chunk with nothing to show.
        """
        outcomes = _outcomes(frame, self.expectations, self.examples)  # in the expectations' order
        if whole is not None:
            if all(o.success for o in outcomes):
                for o in outcomes:
                    o.examples = columns.iloc[:0]
            else:
                outcomes = _outcomes(whole(), self.expectations, self.examples)
        self.chunks += 1
        if not self._outcomes:
            self._outcomes = outcomes
            return
        for o, n in zip(self._outcomes, outcomes):
            o.success = o.success and n.success
            o.error = o.error or n.error
            for k in _ADDITIVE:
                if k in o.observed or k in n.observed:
                    o.observed[k] = o.observed.get(k, 0) + n.observed.get(k, 0)
            if len(o.examples) < self.examples and len(n.examples):
                o.examples = pd.concat([o.examples, n.examples], ignore_index=True).head(self.examples)

    @property
    def result(self) -> Validation:
        if not self.chunks:
            raise ValueError("no chunk was added (add an empty frame with the columns when there are no rows)")
        for o in self._outcomes:
            if "unexpected_count" in o.observed and "element_count" in o.observed:
                o.observed["unexpected_percent"] = _unexpected_percent(o.observed)
                o.observed = {k: o.observed[k] for k in _OBSERVED if k in o.observed}
        return _in_gx_order(self._outcomes, self.expectations)


def _unexpected_percent(observed: dict) -> float | None:
    """GX's unexpected_percent (``_format_map_output``): of the non-missing rows when GX counts missing ones."""
    n, u = observed["element_count"], observed["unexpected_count"]
    if u is None or n == 0:
        return None
    if "missing_count" not in observed:
        return u / n * 100
    nonnull = n - observed["missing_count"]
    return u / nonnull * 100 if nonnull > 0 else None
