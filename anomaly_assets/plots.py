"""Plots of what a person checks first: actual against the expected band, anomalies marked.

Pure functions, frames in and PNG bytes out (matplotlib's Agg backend: no display, no files), so
the daily report, the report asset's UI metadata and the tests draw the same pictures.

:func:`band_plot` stacks an entity's top metrics over the days before a moment, in the style of
the single-metric viewers of anomaly products: the observed value as a line, the expectation
dashed, the band outside which a point is flagged shaded (where the decomposition gives one),
and the entity's flagged points marked (orange: warning, red: critical).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

SEVERITY_COLORS = {"warning": "#f08c00", "critical": "#d6336c"}
_BAND = "#a5d8ff"
_VALUE = "#1c3d5a"


def _figure(rows: int, width: float = 9.0, height_per_row: float = 1.9):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global figure state between calls

    return Figure(figsize=(width, 0.6 + height_per_row * rows), dpi=80, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def band_plot(series: pd.DataFrame, flags: pd.DataFrame | None = None, *, title: str = "",
              metrics: list[str] | None = None, units: dict[str, str] | None = None) -> bytes:
    """Actual vs expected (and the band) for each metric, stacked, with the flagged points marked.

    Parameters
    ----------
    series : DataFrame
        ``metric, ts, value, expected`` and optionally ``lower, upper`` (NULL where the
        decomposition gives no band: cold start, or before the band existed; one side NULL where
        it reaches past any plausible value, drawn to the axis' edge), one row per metric and
        time, as ``features.decomposition`` holds them.
    flags : DataFrame, optional
        ``ts, severity`` of the entity's flagged points (``scoring.anomaly_scores`` where
        ``is_anomaly``); each is marked on every metric at its time.
    title : str
        Figure title (the entity, and why it is shown).
    metrics : list of str, optional
        Metrics to draw, top to bottom (default: every metric of ``series``, sorted).
    units : dict, optional
        metric -> unit, shown on the y axis.

    Returns
    -------
    bytes
        A PNG image.
    """
    metrics = list(metrics) if metrics is not None else sorted(series["metric"].dropna().unique())
    if not metrics:
        raise ValueError("band_plot: no metric to draw (series is empty and no metrics were given)")
    fig = _figure(len(metrics))
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    flags = flags if flags is not None else pd.DataFrame(columns=["ts", "severity"])
    flag_ts = pd.to_datetime(flags["ts"], utc=True)
    for ax, metric in zip(axes, metrics):
        s = series[series["metric"] == metric].sort_values("ts")
        ts = pd.to_datetime(s["ts"], utc=True).dt.tz_convert(None)
        bottom, top = _limit_to_data(ax, s)
        if {"lower", "upper"} <= set(s.columns):
            lo, hi = s["lower"].to_numpy(float), s["upper"].to_numpy(float)
            # a side with no bound (NULL past any plausible value) reaches the axis' edge
            has = np.isfinite(s["expected"].to_numpy(float)) & (np.isfinite(lo) | np.isfinite(hi))
            if has.any():
                ax.fill_between(ts, np.where(has, np.where(np.isfinite(lo), lo, bottom), np.nan),
                                np.where(has, np.where(np.isfinite(hi), hi, top), np.nan), color=_BAND, alpha=0.6,
                                linewidth=0, label="expected band")
        ax.plot(ts, s["expected"].to_numpy(float), color="#868e96", linestyle="--", linewidth=1, label="expected")
        ax.plot(ts, s["value"].to_numpy(float), color=_VALUE, linewidth=1.2, label="actual")
        if len(flags) and len(s):
            at = pd.Series(s["value"].to_numpy(float), index=pd.to_datetime(s["ts"], utc=True))
            at = at[~at.index.duplicated()]
            for severity, color in SEVERITY_COLORS.items():
                when = flag_ts[(flags["severity"] == severity).to_numpy()]
                when = when[when.isin(at.index)]
                if len(when):
                    ax.scatter(when.dt.tz_convert(None), at.loc[when].to_numpy(), color=color, s=22, zorder=3,
                               label=severity)
        unit = (units or {}).get(metric)
        ax.set_ylabel(f"{metric}\n({unit})" if unit else metric, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes[0].legend(handles, labels, fontsize=7, loc="upper left", ncols=len(labels), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, horizontalalignment="left")
    return _png(fig)


def fleet_plot(fleet: pd.DataFrame, *, title: str = "Fleet health per day") -> bytes:
    """Share of scored points flagged, and entities with an anomaly, per day (``marts.fleet_health``).

    Parameters
    ----------
    fleet : DataFrame
        ``day, anomaly_rate, entities_with_anomalies, critical_points`` per day.

    Returns
    -------
    bytes
        A PNG image.
    """
    if fleet.empty:
        raise ValueError("fleet_plot: marts.fleet_health has no day to draw")
    fig = _figure(2, height_per_row=1.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    day = pd.to_datetime(fleet["day"])
    top.plot(day, 100 * fleet["anomaly_rate"].astype(float), color=_VALUE, marker="o", markersize=3)
    top.set_ylabel("flagged %", fontsize=8)
    bottom.bar(day, fleet["entities_with_anomalies"].astype(float), color="#74c0fc", label="entities flagged")
    bottom.set_ylabel("entities\nflagged", fontsize=8)
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    fig.suptitle(title, fontsize=10, x=0.01, horizontalalignment="left")
    return _png(fig)


def _limit_to_data(ax, s: pd.DataFrame) -> tuple[float, float]:
    """The y-axis follows the values and the expected line; a band reaching far beyond them (a
    heavy-tailed metric's) is cut at half their span, so it cannot flatten the line it frames.
    Returns the axis' limits."""
    data = np.concatenate([s["value"].to_numpy(float), s["expected"].to_numpy(float)])
    data = data[np.isfinite(data)]
    if not len(data):
        return ax.get_ylim()
    lo, hi = float(data.min()), float(data.max())
    pad = 0.5 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    band = [s[c].to_numpy(float) for c in ("lower", "upper") if c in s.columns]
    band = np.concatenate(band) if band else np.empty(0)
    band = band[np.isfinite(band)]
    b_lo, b_hi = (float(band.min()), float(band.max())) if len(band) else (lo, hi)
    limits = (max(min(lo, b_lo), lo - pad) - 0.05 * pad, min(max(hi, b_hi), hi + pad) + 0.05 * pad)
    ax.set_ylim(*limits)
    return limits
