"""Data expectations: the rules users edit (``configs/expectations.yaml``) and a small Great
Expectations runner that the asset checks call.

The rules are validated with pydantic when definitions load; a bad file fails with one line per
problem naming the file, the field, the value found and what is allowed::

    configs/expectations.yaml: field 'observations.ranges.voltage_v': min 500.0 is above max 10.0

:func:`validate` runs Great Expectations 1.x expectations on one pandas frame in an ephemeral
context (no files, no analytics, no progress bars) and returns a :class:`Validation`: whether every
expectation held, GX's statistics, what each expectation observed, and up to ``examples`` failing
rows per expectation. GX is imported on first use (it takes about 3 s); the context and its
pandas datasource are made once per process and reused for every frame.

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


def _statistics(outcomes: list[Outcome]) -> dict[str, Any]:
    n, ok = len(outcomes), sum(o.success for o in outcomes)
    return {
        "evaluated_expectations": n,
        "successful_expectations": ok,
        "unsuccessful_expectations": n - ok,
        "success_percent": 100.0 * ok / n if n else None,
    }


@functools.cache
def _batch_definition():
    """One ephemeral GX context with a pandas datasource, per process."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

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


def validate(frame: pd.DataFrame, expectations: list, *, examples: int = 10) -> Validation:
    """Run GX expectations on ``frame``.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows to check (its index is replaced by row positions).
    expectations : list of great_expectations.expectations.Expectation
        Built by the caller (``import great_expectations.expectations as gxe`` inside the check).
    examples : int
        Failing rows kept per expectation.

    Returns
    -------
    Validation
        ``success`` is True when every expectation held. An expectation that raised inside GX
        counts as failed, with the exception's message in ``Outcome.error``.
    """
    import great_expectations as gx

    if not expectations:
        return Validation(True, _statistics([]), [])
    frame = frame.reset_index(drop=True)
    suite = gx.ExpectationSuite(name="anomaly_assets_check", expectations=list(expectations))
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(
        suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": examples}
    )
    outcomes = []
    for r in result.results:
        res = dict(r.result or {})
        rows = [i for i in res.get("partial_unexpected_index_list") or [] if isinstance(i, int)]
        exc = r.exception_info or {}
        if "raised_exception" not in exc and exc:  # several metrics: {metric_id: info}
            exc = next((v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")), {})
        observed = {k: _plain(res[k]) for k in
                    ("element_count", "unexpected_count", "unexpected_percent", "missing_count", "observed_value")
                    if k in res}
        outcomes.append(Outcome(
            expectation=_describe(r.expectation_config),
            success=bool(r.success),
            observed=observed,
            examples=frame.loc[rows[:examples]] if rows and not r.success else frame.iloc[0:0],
            error=str(exc.get("exception_message")) if exc.get("raised_exception") else None,
        ))
    return Validation(bool(result.success), _plain(dict(result.statistics)), outcomes)
