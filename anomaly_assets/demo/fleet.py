"""Seeded, deterministic generator of a realistic pump fleet for the demo.

The fleet is what a nightly industrial feed would drop into a landing folder:
one wide CSV per site per day, ``<landing>/<YYYY-MM-DD>/<site>.csv``::

    entity_id,timestamp,bearing_temp_c,vibration_mm_s,voltage_v,current_a
    pump-0001,2026-09-07T00:00:00Z,56.214,1.487,398.904,41.377

plus the ground truth the demo evaluates against:

* ``labels.csv``   - ``entity_id,start,end,metrics`` (inclusive ISO windows,
  root-cause metrics ``;``-separated; the project's standard label format),
* ``faults.csv``   - the same windows with their ``fault_kind``,
* ``entities.csv`` - ``entity_id,site,model,tags``.

Signal model (per entity *i*, all vectorised over entities with numpy/scipy):

* **load** in [0, 1]: base + amplitude x working-hours profile (smooth
  sigmoid ramps around a per-site shift start/end, per-entity jitter) x
  weekday factor (Saturday/Sunday lower, per site) + AR(1) noise;
* ``bearing_temp_c`` = 55 degC + site ambient + entity offset + gain x load
  (first-order thermal lag) + slow weather wave + outdoor daily swing +
  linear trend + AR(1) noise -> ~55-75 degC;
* ``vibration_mm_s`` = base + gain x load + slow wear trend + AR(1) -> ~1-3;
* ``voltage_v`` = ~400 V site level - drop under load + site-common grid noise
  + entity noise;
* ``current_a`` = model scale x (32 + 50 x load) + AR(1) -> ~40-80 A.

AR(1) noise uses ``phi = exp(-step / tau)`` with innovations scaled so the
marginal standard deviation does not depend on the sampling interval; the
daily cycle is evaluated at the real hour of day, so it scales with ``freq``
(for ``"1D"`` the daily cycle is replaced by its daily mean).

Faults (~15 % of entities, one incident each, all after
``max(14 days, 40 % of the period)`` so the first 14 days are clean history).
Magnitudes are multiples of the entity's *unexplained* variation ``sigma``
(noise + load noise, i.e. what remains once time-of-week is known):

=============  ==================================================  =========================
kind           effect                                              labeled metrics
=============  ==================================================  =========================
bearing_wear   vibration ramps up (convex) over 3-6 days to        vibration_mm_s;
               +5-8 sigma, temperature +2-3.5 sigma                bearing_temp_c
overheating    temperature ramps up over 12-48 h to +5-8 sigma     bearing_temp_c
power_spike    2-4 short (10-60 min, >= 1 sample) spikes within    voltage_v;current_a
               ~36 h: voltage +5-9 sigma, current +4-7 sigma;
               one label window per spike
stuck_sensor   one random metric frozen at its last value for      that metric
               6-36 h (>= 3 samples)
level_shift    current steps by +/-4-6 sigma for 24-72 h           current_a
=============  ==================================================  =========================

Every fault ends at its window end (repair), so labels are exactly the
points whose values differ from the fault-free fleet.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from anomaly_assets.demo.fleet_csv import write_fleet
from anomaly_assets.demo.fleet_data import _DAY_S, CSV_HEADER, FAULT_KINDS, METRICS, Fault, FleetData, FleetSummary

# the demo's pump fleet: simulated here, its types in fleet_data.py, its files written by fleet_csv.py
__all__ = [
    "CSV_HEADER",
    "ENTITIES_PER_SITE",
    "FAULT_KINDS",
    "HISTORY_DAYS",
    "METRICS",
    "Fault",
    "FleetData",
    "FleetSummary",
    "generate_fleet",
    "simulate_fleet",
    "write_fleet",
]

TEMP, VIB, VOLT, CUR = range(4)  # rows of METRICS
HISTORY_DAYS = 14  # no fault before this many days after start
FAULT_START_FRACTION = 0.4  # faults only in the last 60 % of the period
FAULTY_SHARE = 0.15
ENTITIES_PER_SITE = 20
MODELS = ("CP-15", "CP-22", "CP-30")
_MODEL_P = (0.3, 0.45, 0.25)
_MODEL_CURRENT_SCALE = (0.9, 1.0, 1.1)
_LOAD_SIGMA = 0.03  # AR(1) std of the load (fraction of full load)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _step_seconds(freq: str) -> int:
    try:
        step = pd.Timedelta(freq)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unsupported freq {freq!r}") from exc
    s = step.total_seconds()
    if s < 1 or s != int(s) or _DAY_S % int(s) != 0:
        raise ValueError(f"freq must divide one day evenly (e.g. 1min, 5min, 15min, 1h, 1D), got {freq!r}")
    return int(s)


def _start_ts(start: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.normalize():
        raise ValueError(f"start must be a UTC midnight (daily files), got {start!r}")
    return ts.as_unit("s")


def _ar1(
    rng: np.random.Generator, n: int, t: int, sigma: float | np.ndarray, tau_h: float, step_h: float
) -> np.ndarray:
    """Stationary AR(1) noise, shape (n, t), marginal std ``sigma``.

    ``phi = exp(-step / tau)``; the first value is drawn from the stationary
    distribution, so the std is the same at every sampling interval.
    """
    phi = math.exp(-step_h / tau_h)
    eps = rng.standard_normal((n, t), dtype=np.float32)
    if t > 1:
        eps[:, 1:] *= math.sqrt(1.0 - phi * phi)
    out = lfilter(np.float32([1.0]), np.float32([1.0, -phi]), eps, axis=1) if phi > 1e-12 else eps
    return out.astype(np.float64) * sigma


def _lag(x: np.ndarray, tau_h: float, step_h: float) -> np.ndarray:
    """First-order low-pass along time (thermal inertia), starting in steady state."""
    a = 1.0 - math.exp(-step_h / tau_h)
    if a > 1 - 1e-9:
        return x
    return lfilter([a], [1.0, -(1.0 - a)], x, axis=1, zi=(1.0 - a) * x[:, :1])[0]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# --------------------------------------------------------------------------- #
# simulation
# --------------------------------------------------------------------------- #
def simulate_fleet(
    *,
    entities: int = 200,
    days: int = 35,
    freq: str = "1h",
    start: str = "2026-09-07",
    seed: int = 7,
    keep_clean: bool = False,
) -> FleetData:
    """Simulate the fleet in memory (no I/O); see the module docstring.

    Parameters
    ----------
    entities : int
        Number of pumps (``pump-0001`` ...), ``ENTITIES_PER_SITE`` per site.
    days : int
        Length of the period in days; must exceed ``HISTORY_DAYS`` (14).
    freq : str
        Sampling interval dividing a day (``"1min"``, ``"5min"``,
        ``"15min"``, ``"1h"``, ``"1D"``).
    start : str
        First day (UTC midnight).
    seed : int
        Seed; the result is a pure function of all arguments.
    keep_clean : bool
        Also return the fault-free values in ``FleetData.clean``.

    Returns
    -------
    FleetData
    """
    if entities < 1:
        raise ValueError("entities must be >= 1")
    if days <= HISTORY_DAYS:
        raise ValueError(f"days must be > {HISTORY_DAYS} (the first {HISTORY_DAYS} days are fault-free history)")
    step_s = _step_seconds(freq)
    step_h = step_s / 3600.0
    ppd = _DAY_S // step_s
    n, t_len = int(entities), int(days) * ppd
    t0 = _start_ts(start)
    timestamps = pd.date_range(t0, periods=t_len, freq=pd.Timedelta(seconds=step_s))

    rng_ent, rng_noise, rng_fault = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    # ---- entities & sites ------------------------------------------------ #
    n_sites = -(-n // ENTITIES_PER_SITE)
    width_e = max(4, len(str(n)))
    width_s = max(2, len(str(n_sites)))
    site_idx = np.arange(n) // ENTITIES_PER_SITE
    entity_ids = np.array([f"pump-{i + 1:0{width_e}d}" for i in range(n)])
    site_names = np.array([f"site-{k + 1:0{width_s}d}" for k in range(n_sites)])
    model_idx = rng_ent.choice(len(MODELS), size=n, p=_MODEL_P)
    outdoor = rng_ent.random(n) < 0.35
    critical = rng_ent.random(n) < 0.10
    tags = np.array(
        [("outdoor" if o else "indoor") + (";critical" if c else "") for o, c in zip(outdoor, critical, strict=True)]
    )

    # site-level parameters
    s_shift_start = rng_ent.uniform(6.0, 8.0, n_sites)
    s_shift_end = rng_ent.uniform(17.0, 20.0, n_sites)
    s_sat = rng_ent.uniform(0.35, 0.70, n_sites)
    s_sun = rng_ent.uniform(0.15, 0.45, n_sites)
    s_volt = 400.0 + rng_ent.normal(0.0, 2.5, n_sites)
    s_ambient = rng_ent.normal(0.0, 2.0, n_sites)

    def col(a: np.ndarray) -> np.ndarray:  # (n,) -> (n, 1), broadcasts over time
        return np.asarray(a, dtype=float)[:, None]

    shift_start = col(s_shift_start[site_idx] + rng_ent.normal(0.0, 0.3, n))
    shift_end = col(s_shift_end[site_idx] + rng_ent.normal(0.0, 0.3, n))
    base_load = col(rng_ent.uniform(0.12, 0.25, n))
    amp_load = col(rng_ent.uniform(0.50, 0.70, n))
    temp_offset = col(s_ambient[site_idx] + rng_ent.normal(0.0, 2.0, n))
    temp_gain = col(rng_ent.uniform(16.0, 22.0, n))
    temp_slope = col(rng_ent.normal(0.0, 0.03, n))  # degC / day
    vib_base = col(rng_ent.uniform(1.1, 1.8, n))
    vib_gain = col(rng_ent.uniform(0.4, 0.7, n))
    vib_slope = col(np.abs(rng_ent.normal(0.0, 0.003, n)))  # mm/s / day, wear only grows
    volt_level = col(s_volt[site_idx] + rng_ent.normal(0.0, 1.0, n))
    volt_drop = col(rng_ent.uniform(2.0, 5.0, n))
    cur_scale = col(np.asarray(_MODEL_CURRENT_SCALE)[model_idx])
    weather_phase = rng_ent.uniform(0.0, 2 * np.pi)

    # ---- time axes -------------------------------------------------------- #
    sec = np.arange(t_len, dtype=np.int64) * step_s
    day_no = sec // _DAY_S
    hod = (sec % _DAY_S) / 3600.0  # hour of day
    dow = (t0.day_of_week + day_no) % 7
    days_el = sec / _DAY_S

    # ---- load ------------------------------------------------------------- #
    # daily profile on one day's grid (n, ppd), weekday factor per day (n, days)
    if ppd > 1:
        h = hod[:ppd]
        work_day = _sigmoid((h - shift_start) / 0.5) * _sigmoid((shift_end - h) / 0.5)
    else:  # daily data: no daily cycle, use the daily mean of the profile
        grid = (np.arange(96) + 0.5) / 4.0
        work_day = (_sigmoid((grid - shift_start) / 0.5) * _sigmoid((shift_end - grid) / 0.5)).mean(1, keepdims=True)
    dow_d = dow[::ppd]
    week_d = np.where(dow_d == 5, col(s_sat[site_idx]), np.where(dow_d == 6, col(s_sun[site_idx]), 1.0))
    load = base_load + amp_load * (week_d[:, :, None] * work_day[:, None, :]).reshape(n, t_len)
    del work_day, week_d
    load += _ar1(rng_noise, n, t_len, _LOAD_SIGMA, tau_h=2.0, step_h=step_h)
    np.clip(load, 0.02, 1.2, out=load)

    values = np.empty((n, len(METRICS), t_len))

    # temperature: thermal lag on load, weather, outdoor daily swing, trend
    weather = 1.5 * np.sin(2 * np.pi * days_el / 23.0 + weather_phase)
    temp = 55.0 + temp_offset + temp_gain * _lag(load, tau_h=1.5, step_h=step_h)
    temp += weather * np.where(outdoor, 1.5, 0.5)[:, None]
    if ppd > 1:
        temp += np.where(outdoor, 2.0, 0.0)[:, None] * np.sin(2 * np.pi * (hod - 9.0) / 24.0)
    temp += temp_slope * days_el
    temp += _ar1(rng_noise, n, t_len, 0.5, tau_h=3.0, step_h=step_h)
    values[:, TEMP] = temp
    del temp

    vib = vib_base + vib_gain * load + vib_slope * days_el
    vib += _ar1(rng_noise, n, t_len, 0.08, tau_h=1.0, step_h=step_h)
    values[:, VIB] = np.maximum(vib, 0.05)
    del vib

    grid_noise = _ar1(rng_noise, n_sites, t_len, 0.8, tau_h=1.0, step_h=step_h)[site_idx]
    values[:, VOLT] = volt_level - volt_drop * load + grid_noise
    values[:, VOLT] += _ar1(rng_noise, n, t_len, 0.5, tau_h=0.5, step_h=step_h)
    del grid_noise

    values[:, CUR] = cur_scale * (32.0 + 50.0 * load)
    values[:, CUR] += _ar1(rng_noise, n, t_len, 1.0, tau_h=0.5, step_h=step_h)
    del load

    # unexplained std per entity & metric (noise + load noise), for fault sizes
    sigma = np.stack(
        [
            np.hypot(0.5, temp_gain[:, 0] * _LOAD_SIGMA),
            np.hypot(0.08, vib_gain[:, 0] * _LOAD_SIGMA),
            np.sqrt(0.8**2 + 0.5**2 + (volt_drop[:, 0] * _LOAD_SIGMA) ** 2),
            np.hypot(1.0, cur_scale[:, 0] * 50.0 * _LOAD_SIGMA),
        ],
        axis=1,
    )

    np.round(values, 3, out=values)
    clean = values.copy() if keep_clean else None
    faults = _inject_faults(rng_fault, values, sigma, timestamps, entity_ids, days, ppd, step_s)
    np.round(values, 3, out=values)

    return FleetData(
        entity_ids=entity_ids,
        sites=site_names[site_idx],
        models=np.asarray(MODELS)[model_idx],
        tags=tags,
        timestamps=timestamps,
        values=values,
        faults=faults,
        freq=freq,
        step_seconds=step_s,
        seed=seed,
        clean=clean,
    )


def _samples(rng: np.random.Generator, lo_h: float, hi_h: float, step_s: int, minimum: int) -> int:
    return max(minimum, int(round(rng.uniform(lo_h, hi_h) * 3600.0 / step_s)))


def _inject_faults(
    rng: np.random.Generator,
    values: np.ndarray,
    sigma: np.ndarray,
    timestamps: pd.DatetimeIndex,
    entity_ids: np.ndarray,
    days: int,
    ppd: int,
    step_s: int,
) -> tuple[Fault, ...]:
    """Inject one incident into ~15 % of entities, in place; return the windows."""
    n, _, t_len = values.shape
    first = int(math.ceil(max(HISTORY_DAYS, FAULT_START_FRACTION * days) * ppd))
    avail = t_len - first  # > 0 because days > HISTORY_DAYS
    n_faulty = max(1, int(round(FAULTY_SHARE * n)))
    who = np.sort(rng.choice(n, size=n_faulty, replace=False))
    kinds = rng.permutation(np.resize(np.arange(len(FAULT_KINDS)), n_faulty))

    out: list[Fault] = []

    def place(length: int) -> tuple[int, int]:
        length = min(length, avail)
        s = first + int(rng.integers(0, avail - length + 1))
        return s, s + length - 1

    def record(i: int, kind: str, s: int, e: int, metrics: tuple[str, ...]) -> None:
        out.append(Fault(str(entity_ids[i]), kind, timestamps[s], timestamps[e], metrics, int(i), int(s), int(e)))

    for i, k in zip(who, kinds, strict=True):
        kind = FAULT_KINDS[k]
        sig = sigma[i]
        if kind == "bearing_wear":
            s, e = place(_samples(rng, 72, 144, step_s, 3))
            ramp = (np.arange(1, e - s + 2) / (e - s + 1)) ** 1.5
            values[i, VIB, s : e + 1] += ramp * rng.uniform(5.0, 8.0) * sig[VIB]
            values[i, TEMP, s : e + 1] += ramp * rng.uniform(2.0, 3.5) * sig[TEMP]
            record(i, kind, s, e, (METRICS[VIB], METRICS[TEMP]))
        elif kind == "overheating":
            s, e = place(_samples(rng, 12, 48, step_s, 2))
            ramp = np.arange(1, e - s + 2) / (e - s + 1)
            values[i, TEMP, s : e + 1] += ramp * rng.uniform(5.0, 8.0) * sig[TEMP]
            record(i, kind, s, e, (METRICS[TEMP],))
        elif kind == "power_spike":
            n_spikes = int(rng.integers(2, 5))
            spike = _samples(rng, 10 / 60, 1.0, step_s, 1)
            episode = min(avail, max(int(round(36 * 3600 / step_s)), n_spikes * (spike + 2)))
            n_spikes = max(1, min(n_spikes, episode // (spike + 1)))
            spike = min(spike, episode)
            seg = episode // n_spikes
            ep_start, _ = place(episode)
            dv = rng.uniform(5.0, 9.0) * sig[VOLT]
            dc = rng.uniform(4.0, 7.0) * sig[CUR]
            for j in range(n_spikes):
                room = max(1, seg - spike)  # keeps >= 1 quiet sample before the next segment
                s = ep_start + j * seg + int(rng.integers(0, room))
                e = min(s + spike - 1, t_len - 1)
                values[i, VOLT, s : e + 1] += dv
                values[i, CUR, s : e + 1] += dc
                record(i, kind, s, e, (METRICS[VOLT], METRICS[CUR]))
        elif kind == "stuck_sensor":
            m = int(rng.integers(0, len(METRICS)))
            s, e = place(_samples(rng, 6, 36, step_s, 3))
            values[i, m, s : e + 1] = values[i, m, s - 1]
            record(i, kind, s, e, (METRICS[m],))
        else:  # level_shift
            s, e = place(_samples(rng, 24, 72, step_s, 1))
            sign = 1.0 if rng.random() < 0.5 else -1.0
            values[i, CUR, s : e + 1] += sign * rng.uniform(4.0, 6.0) * sig[CUR]
            record(i, kind, s, e, (METRICS[CUR],))

    out.sort(key=lambda f: (f.entity_idx, f.start_idx))
    return tuple(out)


def generate_fleet(
    landing_dir: Path,
    *,
    entities: int = 200,
    days: int = 35,
    freq: str = "1h",
    start: str = "2026-09-07",
    seed: int = 7,
    labels_path: Path | None = None,
    entities_path: Path | None = None,
) -> FleetSummary:
    """Simulate a pump fleet and write it like a nightly industrial feed.

    Parameters
    ----------
    landing_dir : Path
        Receives ``<YYYY-MM-DD>/<site>.csv`` (one wide CSV per site per day,
        header ``entity_id,timestamp,bearing_temp_c,vibration_mm_s,voltage_v,
        current_a``, ISO ``Z`` timestamps, values with 3 decimals).  Files are
        written atomically (temp file + rename); existing files of the same
        name are overwritten, other files are left alone.
    entities, days, freq, start, seed
        See :func:`simulate_fleet`.  Output is byte-identical for identical
        arguments.
    labels_path : Path, optional
        ``entity_id,start,end,metrics``; default ``landing_dir.parent /
        "labels.csv"``.  ``faults.csv`` (with ``fault_kind``) is written
        beside it.
    entities_path : Path, optional
        ``entity_id,site,model,tags``; default ``landing_dir.parent /
        "entities.csv"``.

    Returns
    -------
    FleetSummary
    """
    fleet = simulate_fleet(entities=entities, days=days, freq=freq, start=start, seed=seed)
    return write_fleet(fleet, landing_dir, labels_path=labels_path, entities_path=entities_path)


def main(argv: list[str] | None = None) -> int:
    """``python -m anomaly_assets.demo.fleet LANDING_DIR [--entities N ...]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("landing_dir", type=Path)
    ap.add_argument("--entities", type=int, default=200)
    ap.add_argument("--days", type=int, default=35)
    ap.add_argument("--freq", default="1h")
    ap.add_argument("--start", default="2026-09-07")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    t = time.perf_counter()
    s = generate_fleet(a.landing_dir, entities=a.entities, days=a.days, freq=a.freq, start=a.start, seed=a.seed)
    print(
        f"{s.entities} entities / {s.sites} sites, {s.periods} periods ({s.freq}), {s.csv_rows} csv rows, "
        f"{s.files} files, faults {dict(s.faults_by_kind)} in {time.perf_counter() - t:.2f}s -> {s.landing_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
