"""The pump fleet as landing files: one wide CSV per site per day, written fast (numbers
formatted as fixed-point bytes, days in parallel) and atomically, with the labels, faults and
entity register beside them."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

import numpy as np

from anomaly_assets.demo.fleet_data import CSV_HEADER, FAULT_KINDS, METRICS, FleetData, FleetSummary

_HEADER_BYTES = CSV_HEADER.encode()
_COMMA, _NL, _DOT, _MINUS, _ZERO = (ord(c) for c in ",\n.-0")


def _fixed3(x: np.ndarray) -> np.ndarray:
    """Format floats like ``"%.3f"`` into a ``(len, width)`` uint8 matrix.

    Unused leading bytes are NUL (removed later), so a row reads e.g.
    ``b"\\0\\0\\055.120"``.  Vectorised: no per-value Python call.
    Negative zero prints as ``0.000``.
    """
    if not np.isfinite(x).all():
        raise ValueError("cannot format non-finite values")
    milli = np.rint(x * 1000.0).astype(np.int64)
    neg = milli < 0
    ip, fp = np.divmod(np.abs(milli), 1000)
    width = max(1, len(str(int(ip.max())))) if ip.size else 1
    p10 = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)  # most significant first
    out = np.zeros((x.size, width + 5), dtype=np.uint8)
    out[:, 0] = np.where(neg, _MINUS, 0)
    show = ip[:, None] >= p10
    show[:, -1] = True  # always at least one integer digit
    out[:, 1 : width + 1] = np.where(show, (ip[:, None] // p10) % 10 + _ZERO, 0)
    out[:, width + 1] = _DOT
    out[:, width + 2] = fp // 100 + _ZERO
    out[:, width + 3] = fp // 10 % 10 + _ZERO
    out[:, width + 4] = fp % 10 + _ZERO
    return out


def _str_matrix(strings: np.ndarray) -> np.ndarray:
    """ASCII strings -> NUL-padded ``(len, width)`` uint8 matrix."""
    b = np.asarray(strings).astype(np.bytes_)
    return b.view(np.uint8).reshape(b.size, b.dtype.itemsize)


def _csv_lines(
    ent: np.ndarray, ts: np.ndarray, ent_idx: np.ndarray, ts_idx: np.ndarray, block: np.ndarray
) -> tuple[bytes, np.ndarray]:
    """Render CSV data lines; return the bytes and each row's start offset (+ end).

    ``ent`` / ``ts`` are byte matrices (see :func:`_str_matrix`), the rows are
    ``ent[ent_idx[r]], ts[ts_idx[r]], block[r, 0], ..., block[r, -1]``.
    """
    fields = [ent[ent_idx], ts[ts_idx]] + [_fixed3(block[:, j]) for j in range(block.shape[1])]
    rows = block.shape[0]
    width = sum(f.shape[1] for f in fields) + len(fields)
    mat = np.zeros((rows, width), dtype=np.uint8)
    pos = 0
    for k, f in enumerate(fields):
        mat[:, pos : pos + f.shape[1]] = f
        pos += f.shape[1]
        mat[:, pos] = _NL if k == len(fields) - 1 else _COMMA
        pos += 1
    keep = mat != 0
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    return mat[keep].tobytes(), offsets


def _write_atomic(path: Path, data: bytes | memoryview) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(_HEADER_BYTES)
        fh.write(data)
    os.replace(tmp, path)


def _write_day(
    landing_dir: Path,
    fleet: FleetData,
    day: int,
    ppd: int,
    ent: np.ndarray,
    ts: np.ndarray,
    site_bounds: list[tuple[str, int, int]],
) -> int:
    """Format one day of the whole fleet once, then cut it per site."""
    n = fleet.values.shape[0]
    sl = slice(day * ppd, (day + 1) * ppd)
    block = fleet.values[:, :, sl].transpose(0, 2, 1).reshape(n * ppd, len(METRICS))
    data, row_start = _csv_lines(
        ent, ts, np.repeat(np.arange(n), ppd), np.tile(np.arange(sl.start, sl.stop), n), block
    )
    buf = memoryview(data)
    folder = landing_dir / fleet.timestamps[sl.start].strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    for site, a, b in site_bounds:
        _write_atomic(folder / f"{site}.csv", buf[row_start[a * ppd] : row_start[b * ppd]])
    return len(site_bounds)


def write_fleet(
    fleet: FleetData,
    landing_dir: Path,
    *,
    labels_path: Path | None = None,
    entities_path: Path | None = None,
    workers: int | None = None,
) -> FleetSummary:
    """Write an in-memory fleet to the landing layout; see :func:`generate_fleet`."""
    landing_dir = Path(landing_dir)
    labels_path = Path(labels_path) if labels_path is not None else landing_dir.parent / "labels.csv"
    entities_path = Path(entities_path) if entities_path is not None else landing_dir.parent / "entities.csv"
    faults_path = labels_path.parent / "faults.csv"
    landing_dir.mkdir(parents=True, exist_ok=True)

    n, _, t_len = fleet.values.shape
    ppd = fleet.periods_per_day
    n_days = t_len // ppd
    # contiguous entity ranges per site (entities are numbered site by site)
    change = np.flatnonzero(fleet.sites[1:] != fleet.sites[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    site_bounds = [(str(fleet.sites[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]

    ent = _str_matrix(fleet.entity_ids)
    ts = _str_matrix(np.asarray(fleet.timestamps.strftime("%Y-%m-%dT%H:%M:%SZ")))
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        files = sum(
            pool.map(
                lambda d: _write_day(landing_dir, fleet, d, ppd, ent, ts, site_bounds),
                range(n_days),
            )
        )

    for p in (labels_path, faults_path, entities_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    fleet.labels_frame().to_csv(labels_path, index=False, lineterminator="\n")
    fleet.faults_frame().to_csv(faults_path, index=False, lineterminator="\n")
    fleet.entities_frame().to_csv(entities_path, index=False, lineterminator="\n")

    counts = Counter(f.fault_kind for f in fleet.faults)
    return FleetSummary(
        entities=n,
        sites=len(site_bounds),
        metrics=METRICS,
        freq=fleet.freq,
        periods=t_len,
        rows=n * len(METRICS) * t_len,
        csv_rows=n * t_len,
        files=files,
        faulty_entities=len({f.entity_idx for f in fleet.faults}),
        faults_by_kind=MappingProxyType({k: counts.get(k, 0) for k in FAULT_KINDS}),
        first_timestamp=fleet.timestamps[0],
        last_timestamp=fleet.timestamps[-1],
        landing_dir=landing_dir,
        labels_path=labels_path,
        faults_path=faults_path,
        entities_path=entities_path,
        seed=fleet.seed,
    )
