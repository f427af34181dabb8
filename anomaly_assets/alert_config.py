"""Alert rules and the entity register: user-edited YAML, validated with pydantic when definitions load.

``configs/alert_rules.yaml`` (``ANOMALY_ALERT_RULES``) holds the rules, routing, materiality floors and
timing; ``configs/entities.yaml`` or a CSV ``entity_id,site,tags[,team]`` (``ANOMALY_ENTITIES``) the
entities' sites, tags and owning teams. A bad rule fails fast with one line per problem naming the
file, the rule, the field, the value found and what is allowed::

    configs/alert_rules.yaml: rule 'power' (rules[1]) field 'min_share': Input should be less than
    or equal to 1 (found 45; allowed: a share in (0, 1], e.g. 0.45)
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from anomaly_assets.config import ConfigFileError, read_yaml_mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RULES = REPO_ROOT / "configs" / "alert_rules.yaml"
DEFAULT_ENTITIES = REPO_ROOT / "configs" / "entities.yaml"

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
RULE_TYPES = ("burst", "dominant_family", "sustained_deviation", "fleet_outlier", "business_gap")
METRIC_KINDS = ("sensor", "count", "currency", "ratio", "stock")  # core/semantics.py

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$")
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
DURATION_HELP = "a duration like '15min', '3h', '2d' (units s, min, h, d) or a number of minutes"


def parse_duration(v: Any) -> dt.timedelta:
    """'15min' | '3h' | '2d' | 90 (minutes) -> timedelta; anything else is a clear error."""
    if isinstance(v, dt.timedelta):
        return v
    if isinstance(v, bool):
        raise ValueError(f"expected {DURATION_HELP}")
    if isinstance(v, (int, float)):
        if v <= 0:
            raise ValueError(f"expected a positive duration, {DURATION_HELP}")
        return dt.timedelta(minutes=float(v))
    m = _DURATION.match(str(v))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a positive duration, {DURATION_HELP}")
    return dt.timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Share = Annotated[float, Field(gt=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeverityThresholds(_Strict):
    """Severity by the rule's measure (burst: count, dominant_family: share, sustained: periods,
    fleet_outlier: |robust z|): at least ``critical`` -> critical, else at least ``warning`` -> warning,
    else info."""

    warning: float = 0.0
    critical: float

    @model_validator(mode="after")
    def _order(self):
        if self.critical < self.warning:
            raise ValueError(f"critical ({self.critical}) must be >= warning ({self.warning})")
        return self


SeverityMapping = Union[Literal["info", "warning", "critical", "from_scores"], SeverityThresholds]


class RuleBase(_Strict):
    name: Name
    title: str | None = None  # shown to people; default: the name in words
    severity: SeverityMapping = "from_scores"
    team: str | None = None  # overrides routing
    fault_kind: Name | None = None  # the diagnosis this rule stands for (routing key, evaluation)
    action: str | None = None  # what to do, appended to the why
    floor: float | None = Field(default=None, ge=0)  # materiality in metric units; default: `materiality`
    resolve_after: Duration | None = None
    cooldown: Duration | None = None
    prior_precision: float | None = Field(default=None, gt=0, lt=1)
    peer_z: float | None = Field(default=None, ge=0)  # the hit must stand out from its site peers (0 = off)
    min_hits: int = Field(default=1, ge=1)  # hits before the alert opens (until then: pending, not sent)
    after_events: Duration | None = None  # quiet this long after a known event; default: defaults.after_events
    enabled: bool = True

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, v):
        if isinstance(v, str) and v not in (*SEVERITIES, "from_scores"):
            raise ValueError(f"expected one of {', '.join(SEVERITIES)}, from_scores, or "
                             f"a mapping {{warning: X, critical: Y}} on the rule's measure")
        return v


class BurstRule(RuleBase):
    """``count`` or more flagged points of one entity within ``within`` (window inclusive at both ends)."""

    type: Literal["burst"]
    count: int = Field(ge=2)
    within: Duration
    min_severity: Literal["warning", "critical"] = "warning"


class DominantFamilyRule(RuleBase):
    """At a flagged point, ``families`` together carry at least ``min_share`` of the deviation
    (and each of them at least ``min_each``)."""

    type: Literal["dominant_family"]
    families: list[Name] = Field(min_length=1)
    min_share: Share
    min_each: float = Field(default=0.0, ge=0, lt=1)
    direction: Literal["above", "below", "either"] = "either"  # sign of the families' lead metric


class SustainedDeviationRule(RuleBase):
    """``periods`` consecutive observations of one metric away from expected by at least ``floor``
    (metric units) in ``direction``; ``condition: stuck`` instead asks for ``periods`` identical
    values (within ``tolerance``) of a metric that normally moves."""

    type: Literal["sustained_deviation"]
    condition: Literal["deviation", "stuck"] = "deviation"
    direction: Literal["above", "below", "either"] = "either"
    periods: int = Field(ge=2)
    min_z: float = Field(default=0.0, ge=0)
    tolerance: float = Field(default=0.0, ge=0)
    metrics: list[str] | None = None
    families: list[Name] | None = None
    require_flagged: bool = False  # the detector flagged the entity at least once during the run

    @model_validator(mode="after")
    def _needs_a_floor(self):
        if self.condition == "deviation" and self.floor is None and self.min_z == 0:
            raise ValueError("a deviation needs 'floor' (metric units) or 'min_z' (σ) above 0, "
                             "else every reading counts as deviating")
        return self


class FleetOutlierRule(RuleBase):
    """The entity's residual departs from its peers' (same site, or same tag) at the same time:
    robust z (median / MAD of the group's residual_z) at least ``z`` for ``periods`` observations."""

    type: Literal["fleet_outlier"]
    peer_by: str = "site"  # 'site' or 'tag:<tag>'
    kinds: list[Literal[METRIC_KINDS]] | None = None  # only metrics of these kinds (core/semantics.py)
    z: float = Field(default=4.0, gt=0)
    min_peers: int = Field(default=5, ge=2)
    periods: int = Field(default=1, ge=1)
    metrics: list[str] | None = None
    families: list[Name] | None = None
    require_flagged: bool = False  # the detector flagged the entity at least once during the run

    @field_validator("peer_by")
    @classmethod
    def _peer_by(cls, v: str) -> str:
        if v != "site" and not re.match(r"^tag:\S+$", v):
            raise ValueError("expected 'site' or 'tag:<tag>' (peers are entities with the same site or tag)")
        return v


class BusinessGapRule(RuleBase):
    """A business metric's total over the last ``window`` readings far from its expected total:
    at most ``max_share`` of it (``direction: below``) or at least ``min_ratio`` times it
    (``above``), by at least ``floor`` (metric units) with an expected total of at least
    ``min_expected``. Optional context: ``others`` hold (payment channels), the ``stock`` metric
    is ``frozen`` (> 0 and unchanged: ghost stock) or ``moving``, the reading before the window was
    (``after_gap: true``) or was not (``false``) itself a gap (a missing settlement caught up).
    History: ``baseline`` (expected rescaled by the recent actual / expected), ``min_window_z``
    (against the series' noise), ``recur_window`` + ``max_recur`` (not what it does every few weeks),
    ``max_tail_p`` + ``law_readings`` (improbable under the count's own law); ``min_cover`` (the
    stock held that many readings of expected sales: not a stockout).
    Evidence in money: ``value_at_risk`` = the gap in currency, or in units x ``price_column``."""

    type: Literal["business_gap"]
    metrics: list[str] | None = None
    kinds: list[Literal[METRIC_KINDS]] | None = None  # metrics of these kinds (when metrics is not given)
    direction: Literal["below", "above"] = "below"
    window: int = Field(default=1, ge=1, le=60)  # readings summed (days, on daily data)
    max_share: float | None = Field(default=None, ge=0, lt=1)
    min_share: float | None = Field(default=None, ge=0, lt=1)  # below: and strictly more than this share (0: not nothing at all)
    min_ratio: float | None = Field(default=None, gt=1)
    min_expected: float = Field(default=0.0, ge=0)
    min_z: float = Field(default=0.0, ge=0)  # the detector's residual_z at the last reading, in direction
    min_window_z: float = Field(default=0.0, ge=0)  # sum of residual_z over the window / sqrt(window), in direction
    others: list[str] = []
    hold_share: Share = 0.5
    stock: Literal["frozen", "moving", "any"] = "any"
    stock_metrics: list[str] | None = None  # default: every metric of kind stock
    min_cover: float = Field(default=0.0, ge=0)  # stock >= this many readings of expected sales throughout
    after_gap: bool | None = None
    gap_share: Share = 0.15
    price_column: str | None = None  # entities.csv column: price of a unit, for value at risk
    min_value: float = Field(default=0.0, ge=0)  # value at risk (money) at least
    # billing days that move the metric by design (rent due on the 1st, past due after the grace
    # period): no hit on them, as on a calendar event
    skip_days_of_month: list[Annotated[int, Field(ge=1, le=31)]] = []
    # readings before the window whose median actual / expected rescales the expected total: the
    # detector's expected lags a level that drifts (delinquency), so only a fresh change counts
    baseline: int | None = Field(default=None, ge=3, le=60)
    # what a series does every few weeks is its noise: the condition held in at most max_recur of
    # the recur_window readings before the window (0: never)
    recur_window: int | None = Field(default=None, ge=1, le=365)
    max_recur: int = Field(default=0, ge=0)
    # counts: the window's total at most this probable under the series' own negative-binomial law,
    # fitted on the law_readings readings before the window (core/rules/business.py)
    max_tail_p: float | None = Field(default=None, gt=0, lt=1)
    law_readings: int = Field(default=56, ge=7, le=365)

    @model_validator(mode="after")
    def _threshold(self):
        if not self.metrics and not self.kinds:
            raise ValueError("a business_gap rule needs 'metrics' or 'kinds' (which metrics it watches)")
        if self.direction == "below" and self.max_share is None:
            raise ValueError("direction 'below' needs 'max_share' (e.g. 0.15: at most 15% of expected)")
        if self.direction == "above" and self.min_ratio is None:
            raise ValueError("direction 'above' needs 'min_ratio' (e.g. 1.8: at least 1.8x expected)")
        if self.max_tail_p is not None and self.baseline:
            raise ValueError("'max_tail_p' rescales the expected by its own law: drop 'baseline'")
        if self.max_recur and not self.recur_window:
            raise ValueError("'max_recur' needs 'recur_window' (the readings to count the condition in)")
        return self


Rule = Annotated[
    Union[BurstRule, DominantFamilyRule, SustainedDeviationRule, FleetOutlierRule, BusinessGapRule],
    Field(discriminator="type"),
]


class Route(_Strict):
    """First matching route wins; every key given must match the alert."""

    team: str = Field(min_length=1)
    fault_kind: str | None = None
    family: str | None = None
    tag: str | None = None
    site: str | None = None
    rule: str | None = None

    @model_validator(mode="after")
    def _has_matcher(self):
        if not any((self.fault_kind, self.family, self.tag, self.site, self.rule)):
            raise ValueError("a route needs at least one of fault_kind, family, tag, site, rule to match on")
        return self


class Routing(_Strict):
    default_team: str = Field(default="operations", min_length=1)
    routes: list[Route] = []


class Defaults(_Strict):
    resolve_after: Duration = dt.timedelta(hours=6)
    cooldown: Duration = dt.timedelta(hours=12)
    prior_precision: float = Field(default=0.7, gt=0, lt=1)
    peer_z: float | None = Field(default=None, ge=0)
    # rules stay quiet on known calendar events (holidays, promotions) and this long after them
    after_events: Duration = dt.timedelta(days=2)


class AlertRules(_Strict):
    defaults: Defaults = Defaults()
    materiality: dict[str, Annotated[float, Field(ge=0)]] = {}  # metric or family -> floor in metric units
    routing: Routing = Routing()
    rules: list[Rule] = []

    @model_validator(mode="after")
    def _unique(self):
        seen = set()
        for r in self.rules:
            if r.name in seen:
                raise ValueError(f"rule name '{r.name}' is used twice; names must be unique (they key the alerts)")
            seen.add(r.name)
        return self

    @property
    def active(self) -> list:
        return [r for r in self.rules if r.enabled]

    def resolve_after(self, rule) -> dt.timedelta:
        return rule.resolve_after or self.defaults.resolve_after

    def cooldown(self, rule) -> dt.timedelta:
        return rule.cooldown if rule.cooldown is not None else self.defaults.cooldown

    def after_events(self, rule) -> dt.timedelta:
        """How long after a known calendar event ``rule`` stays quiet."""
        return rule.after_events if rule.after_events is not None else self.defaults.after_events

    def prior(self, rule) -> float:
        return rule.prior_precision or self.defaults.prior_precision

    def peer_z(self, rule) -> float:
        """|robust z| against site peers a hit needs (0: no peer check)."""
        if rule.type == "fleet_outlier" or (rule.type == "business_gap" and rule.peer_z is None):
            return 0.0  # a business gap has its own context (others hold); a processor outage hits a whole site
        z = rule.peer_z if rule.peer_z is not None else self.defaults.peer_z
        return z or 0.0

    def floor(self, rule, metric: str, family: str) -> float:
        """Materiality floor of ``metric`` for ``rule`` (rule floor, else per metric, else per family, else 0)."""
        if rule is not None and rule.floor is not None:
            return rule.floor
        return self.materiality.get(metric, self.materiality.get(family, 0.0))


_ALLOWED = {
    "greater_than_equal": "at least {ge}", "greater_than": "more than {gt}",
    "less_than_equal": "at most {le}", "less_than": "less than {lt}",
}


def _allowed(err: dict, field: str) -> str:
    ctx = err.get("ctx") or {}
    if err["type"] in _ALLOWED:
        return _ALLOWED[err["type"]].format(**{k: ctx.get(k) for k in ("ge", "gt", "le", "lt")})
    if err["type"] == "union_tag_invalid":
        return "type one of " + ", ".join(RULE_TYPES)
    if err["type"] == "union_tag_not_found":
        return "a 'type' field, one of " + ", ".join(RULE_TYPES)
    if err["type"] == "extra_forbidden":
        return f"no field '{field}' here (check the spelling; see configs/alert_rules.yaml)"
    if err["type"] == "literal_error":
        return ctx.get("expected", "")
    if err["type"] == "string_pattern_mismatch":
        return "lower_snake_case: a-z, 0-9 and _, starting with a letter"
    if err["type"] == "missing":
        return "the field is required"
    return ""


def _format(path: Path, data: Any, exc: ValidationError) -> str:
    lines = [f"{path}: invalid alert rules"]
    for e in exc.errors():
        loc = list(e["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            raw = data.get("rules", [])[loc[1]] if isinstance(data.get("rules"), list) else {}
            name = raw.get("name", "?") if isinstance(raw, dict) else "?"
            where = f"rule '{name}' (rules[{loc[1]}]) "
            loc = loc[2:]
            if loc and loc[0] in RULE_TYPES:  # the discriminator's tag, not a field
                loc = loc[1:]
        field = ".".join(str(x) for x in loc) or "(the rule)"
        allowed = _allowed(e, field)
        msg = e["msg"].removeprefix("Value error, ")
        found = e.get("input")
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field, msg = "type", "unknown rule type" if e["type"] == "union_tag_invalid" else "missing"
            found = (e.get("ctx") or {}).get("tag")
        if e["type"] in _ALLOWED:
            msg, allowed = f"must be {allowed}", ""
        found_s = "" if e["type"] == "missing" else f" (found {found!r})" if not isinstance(found, dict) else ""
        lines.append(f"  {where}field '{field}': {msg}{found_s}" + (f"; allowed: {allowed}" if allowed and allowed not in msg else ""))
    return "\n".join(lines)


def load_alert_rules(path: Path | None = None, known_families: set[str] | None = None) -> AlertRules:
    """Read and validate the rules file; raise :class:`ConfigFileError` naming rule, field and value.

    ``known_families``: when given, families named by rules must be among them (catches typos).
    A missing file means no rules (and no alerts).
    """
    path = Path(path) if path else DEFAULT_RULES
    if not path.exists():
        return AlertRules()
    data = read_yaml_mapping(path, "'rules' (and optionally defaults, materiality, routing)")
    if "rules" in data and not isinstance(data["rules"], list):
        raise ConfigFileError(f"{path}: field 'rules' must be a list of rules, found {type(data['rules']).__name__}")
    try:
        rules = AlertRules.model_validate(data)
    except ValidationError as e:
        raise ConfigFileError(_format(path, data, e)) from e
    if known_families:
        problems = []
        for i, r in enumerate(rules.rules):
            for f in getattr(r, "families", None) or []:
                if f not in known_families:
                    problems.append(f"  rule '{r.name}' (rules[{i}]) field 'families': unknown family {f!r}; "
                                    f"allowed: {', '.join(sorted(known_families))} "
                                    f"(families come from configs/metric_families.yaml and metric names)")
        if problems:
            raise ConfigFileError("\n".join([f"{path}: invalid alert rules", *problems]))
    return rules


# ------------------------------------------------------------------------------------------------
# entities: site, tags, team
# ------------------------------------------------------------------------------------------------
class Entity(_Strict):
    site: str | None = None
    tags: list[str] = []
    team: str | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v):
        if isinstance(v, str):
            return [t.strip() for t in v.split(";") if t.strip()]
        return v


class EntityRegister(_Strict):
    entities: dict[str, Entity] = {}


def infer_group(entity_id: str) -> str:
    """Peer group of an entity with no site: its id without the trailing number (pump-0007 -> pump)."""
    g = re.sub(r"[-_.\s]*\d+$", "", str(entity_id))
    return g or str(entity_id)


def load_entities(path: Path | None = None) -> EntityRegister:
    """Entities from YAML (``entities: {id: {site, tags, team}}``) or CSV (``entity_id,site,tags[,team]``)."""
    path = Path(path) if path else DEFAULT_ENTITIES
    if not path.exists():
        return EntityRegister()
    if path.suffix.lower() == ".csv":
        import csv

        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "entity_id" not in reader.fieldnames:
                raise ConfigFileError(f"{path}: expected a header with entity_id (and site, tags, team), "
                                      f"found {reader.fieldnames}")
            data = {"entities": {}}
            for line, row in enumerate(reader, start=2):
                eid = (row.get("entity_id") or "").strip()
                if not eid:
                    raise ConfigFileError(f"{path} line {line}: empty entity_id")
                data["entities"][eid] = {k: v for k, v in row.items() if k in ("site", "tags", "team") and v}
    else:
        data = read_yaml_mapping(path, "'entities'")
        data.setdefault("entities", {})
        if data["entities"] is None:
            data["entities"] = {}
    try:
        return EntityRegister.model_validate(data)
    except ValidationError as e:
        lines = [f"{path}: invalid entities"]
        for err in e.errors():
            lines.append(f"  field '{'.'.join(map(str, err['loc']))}': {err['msg']} (found {err.get('input')!r})")
        raise ConfigFileError("\n".join(lines)) from e


def alert_paths(env: dict[str, str] | None = None) -> tuple[Path, Path]:
    """(rules, entities) paths from ``ANOMALY_ALERT_RULES`` / ``ANOMALY_ENTITIES`` or the defaults."""
    env = os.environ if env is None else env
    rules = env.get("ANOMALY_ALERT_RULES") or str(DEFAULT_RULES)
    from anomaly_assets.settings import load_settings

    # the data folder's entities.csv when there is one (the demo writes it), else the YAML register
    entities = env.get("ANOMALY_ENTITIES") or str(load_settings(dict(env)).entities or DEFAULT_ENTITIES)
    return Path(rules).expanduser().resolve(), Path(entities).expanduser().resolve()


def calendar_path(env: dict[str, str] | None = None) -> Path | None:
    """The calendar of known events (``ANOMALY_CALENDAR``, else ``calendar.csv`` in the data folder),
    or None when there is none: alerts stay quiet on its days (holidays, promotions, store events)."""
    env = os.environ if env is None else env
    if env.get("ANOMALY_CALENDAR"):
        return Path(env["ANOMALY_CALENDAR"]).expanduser().resolve()
    from anomaly_assets.settings import load_settings

    p = load_settings(dict(env)).data_dir / "calendar.csv"
    return p.resolve() if p.is_file() else None
