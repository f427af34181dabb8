"""What a metric measures, and how its values are written for people.

Every metric has a *kind*:

=========  ==========================================  =========================
kind       what it is                                  written as
=========  ==========================================  =========================
sensor     a physical reading (°C, mm/s, V, %CPU)      3 significant digits
count      events in a period (units sold, move-ins)   an integer: ``12``
currency   money (revenue, payments)                   ``$1,110``
ratio      a share (delinquency rate, conversion)      a percentage: ``8.4%``
stock      a level of goods on hand                    an integer: ``39 units``
=========  ==========================================  =========================

The kind is declared in ``configs/metric_families.yaml`` (``kinds:``) or inferred: from the name
first (``_usd``, ``revenue`` -> currency; ``on_hand`` -> stock; ``rate`` -> ratio; ``units``,
``move_ins`` -> count), then from the values (non-negative integers that are often 0 are counts),
else sensor. Rules read it: only a sensor can be "stuck", and a business metric's evidence is in
money and units, never in sensor words.

No number is ever written in scientific notation: a why is read by people, and ``1.11e+03``
is a number nobody should have to decode.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

KINDS = ("sensor", "count", "currency", "ratio", "stock")
BUSINESS_KINDS = frozenset({"count", "currency", "ratio", "stock"})

# First matching pattern wins; stock before count so that "units_on_hand" is stock.
_KIND_PATTERNS: tuple[tuple[str, str], ...] = (
    ("currency", r"(^|_)(usd|eur|gbp|cad|dollars?)$|revenue|payment|amount|gmv|sales_value|(^|_)cost(_|$)"),
    ("stock", r"on_hand|onhand|stock|inventory"),
    ("ratio", r"(^|_)(rate|ratio|pct|percent|share)($|_)"),
    ("count", r"(^|_)(units|count|orders|visits|tickets|transactions|move_ins|move_outs|sold|n)($|_)"),
)
COUNT_ZERO_SHARE = 0.1  # integer series with at least this share of zeros are counts, not readings
CURRENCY_SYMBOLS = {"usd": "$", "cad": "$", "eur": "€", "gbp": "£"}


def name_match(metric: str, patterns: tuple[tuple[str, str], ...]) -> str | None:
    """The label of the first ``(label, regex)`` pattern the lower-cased name matches, or None."""
    low = metric.lower()
    return next((label for label, pattern in patterns if re.search(pattern, low)), None)


def infer_kind(metric: str, kinds: Mapping[str, str] | None = None, values: np.ndarray | None = None) -> str:
    """Kind of a metric: declared, else from its name, else from its values, else ``sensor``.

    Parameters
    ----------
    metric : str
        Metric name.
    kinds : mapping, optional
        Declared kinds (``configs/metric_families.yaml`` ``kinds:``).
    values : array, optional
        Observed values; non-negative integers with at least ``COUNT_ZERO_SHARE`` zeros are a count.

    Returns
    -------
    str
        One of :data:`KINDS`.
    """
    if kinds and metric in kinds:
        return kinds[metric]
    kind = name_match(metric, _KIND_PATTERNS)
    if kind:
        return kind
    if values is not None and looks_like_count(values):
        return "count"
    return "sensor"


def looks_like_count(values) -> bool:
    """Non-negative integers, often 0: events counted in a period (a reading is rarely exactly 0)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 10:
        return False
    return bool((v >= 0).all() and (v == np.round(v)).all() and (v == 0).mean() >= COUNT_ZERO_SHARE)


def metric_kinds(decomposition: pd.DataFrame, kinds: Mapping[str, str] | None = None) -> dict[str, str]:
    """metric -> kind for every metric of ``decomposition`` (entity_id, metric, value)."""
    if decomposition.empty:
        return {}
    out = {}
    for metric, values in decomposition.groupby("metric", sort=True)["value"]:
        out[str(metric)] = infer_kind(str(metric), kinds, values.to_numpy(float))
    return out


def currency_symbol(metric: str, unit: str | None = None) -> str:
    """The symbol money of ``metric`` is written with: from its unit, else its name, else ``$``."""
    for text in (unit or "", metric):
        for code, sym in CURRENCY_SYMBOLS.items():
            if re.search(rf"(^|_|\b){code}($|_|\b)", text.lower()):
                return sym
        if text and text.strip() in ("$", "€", "£"):
            return text.strip()
    return "$"


def plain_number(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, thousands separated, never in scientific notation."""
    x = float(x)
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    text = np.format_float_positional(x, precision=digits, unique=False, fractional=False, trim="-")
    whole, dot, frac = text.partition(".")
    return text if len(whole.lstrip("-")) < 4 else f"{int(whole):,}{dot}{frac}"


def fmt_value(x, kind: str = "sensor", unit: str | None = None, metric: str = "", digits: int | None = None) -> str:
    """One value as a person reads it (see the module docstring); ``n/a`` when missing.

    Parameters
    ----------
    x : float or None
    kind : str
        The metric's kind.
    unit : str, optional
        Unit appended to sensor readings and used for the currency symbol.
    metric : str
        Metric name (the currency symbol may come from it).
    digits : int, optional
        Significant digits, in place of each kind's own rounding (:func:`fmt_pair`).

    Returns
    -------
    str
    """
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not np.isfinite(x):
        return "n/a"
    if kind == "currency":
        sym = currency_symbol(metric, unit)
        sign = "-" if x < 0 else ""
        if digits:
            return f"{sign}{sym}{plain_number(abs(x), digits)}"
        if abs(x) >= 10:
            return f"{sign}{sym}{abs(x):,.0f}"
        # below a cent, the digits that say how much (a unit cost of $0.00041)
        return f"{sign}{sym}{abs(x):,.2f}" if abs(x) >= 0.01 or x == 0 else f"{sign}{sym}{plain_number(abs(x), 2)}"
    if kind in ("count", "stock"):
        if digits:
            return plain_number(x, digits)
        return f"{x:,.0f}" if abs(x - round(x)) < 0.05 or abs(x) >= 10 else f"{x:,.1f}"
    if kind == "ratio":
        return f"{plain_number(100 * x, digits or 2)}%" if abs(x) <= 1.5 else plain_number(x, digits or 3)
    return plain_number(x, digits or 3) + (f" {unit}" if unit else "")


def fmt_pair(actual, expected, kind: str = "sensor", unit: str | None = None, metric: str = "") -> tuple[str, str]:
    """``actual`` and ``expected`` as :func:`fmt_value` writes them (the unit on ``actual`` only),
    with more significant digits (up to 7) when that would print two different values alike:
    "100 vs 100 expected (+3.8σ)" says nothing."""
    try:
        x, y = float(actual), float(expected)
    except (TypeError, ValueError):
        return fmt_value(actual, kind, unit, metric), fmt_value(expected, kind, None, metric)
    if kind == "ratio" and max(abs(x), abs(y)) > 1.5:
        kind = "sensor"  # one scale for both: not "1.6 vs 140%"
    a, e = fmt_value(actual, kind, unit, metric), fmt_value(expected, kind, None, metric)
    if a != e or x == y or not (np.isfinite(x) and np.isfinite(y)):
        return a, e
    for digits in range(4, 8):
        a, e = fmt_value(x, kind, unit, metric, digits), fmt_value(y, kind, None, metric, digits)
        if a != e:
            break
    return a, e


def fmt_money(x, symbol: str = "$") -> str:
    """``x`` as money: ``$1,110``; cents below $10."""
    return fmt_value(x, "currency", symbol)
