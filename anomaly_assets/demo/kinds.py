"""One entry point for every demo kind: :func:`generate` writes a kind's files, :func:`simulate`
returns a business kind in memory (with its fault-free values) for tests and evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

from anomaly_assets.demo import industrial, retail, storage
from anomaly_assets.demo.dataset import DemoData, DemoSummary, write_demo

__all__ = ["DEFAULT_SEED", "KINDS", "SIZES", "generate", "simulate"]

KINDS: tuple[str, ...] = ("industrial", "storage", "retail")
DEFAULT_SEED = 7
# the size arguments each kind takes (every one optional, with the kind's default)
SIZES: dict[str, tuple[str, ...]] = {
    "industrial": ("entities", "days", "freq", "start"),
    "storage": ("entities", "days", "start"),
    "retail": ("entities", "stores", "skus", "days", "start"),
}


def _check(kind: str, size: dict) -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown demo kind {kind!r} (expected one of {', '.join(KINDS)})")
    size = {k: v for k, v in size.items() if v is not None}
    extra = sorted(set(size) - set(SIZES[kind]))
    if extra:
        raise ValueError(f"demo kind {kind!r} takes no {', '.join(extra)} (its sizes: {', '.join(SIZES[kind])})")
    if kind == "retail" and "entities" in size:
        # N store-SKU entities: 25 SKUs a store (fewer if N is smaller), as many stores as fit
        n = int(size.pop("entities"))
        if n < 1:
            raise ValueError(f"entities must be >= 1, got {n}")
        skus = size.setdefault("skus", min(retail.DEFAULT_SKUS, n))
        size.setdefault("stores", max(1, n // skus))
    return size


def simulate(kind: str, *, seed: int = DEFAULT_SEED, **size) -> DemoData:
    """A business kind (``storage`` or ``retail``) in memory, with and without faults.

    Parameters
    ----------
    kind : str
        ``"storage"`` or ``"retail"``.
    seed : int
    **size
        The kind's sizes (``SIZES[kind]``); ``None`` means the default.

    Returns
    -------
    DemoData
    """
    size = _check(kind, size)
    if kind == "storage":
        return storage.simulate(seed=seed, **size)
    if kind == "retail":
        return retail.simulate(seed=seed, **size)
    raise ValueError("the industrial kind is simulated by anomaly_assets.demo.fleet.simulate_fleet")


def generate(kind: str, out_dir: Path, *, seed: int = DEFAULT_SEED, **size) -> DemoSummary:
    """Generate a demo kind and write all its files under ``out_dir``.

    ``out_dir/landing`` is replaced; ``labels.csv``, ``faults.csv``, ``entities.csv``,
    ``splits.csv`` and (business kinds) ``calendar.csv`` are written beside it. The bytes are
    a pure function of the arguments.

    Parameters
    ----------
    kind : str
        One of ``KINDS``: ``industrial`` (hourly pump fleet), ``storage`` (self-storage
        facilities, daily, ~2 years), ``retail`` (store x SKU, daily, ~1 year).
    out_dir : Path
    seed : int
    **size
        The kind's sizes (``SIZES[kind]``), e.g. ``entities=8, days=200``; ``None`` means the
        default. For retail, ``entities`` is the number of store-SKUs (25 SKUs a store).

    Returns
    -------
    DemoSummary
    """
    size = _check(kind, size)
    if kind == "industrial":
        return industrial.generate(out_dir, seed=seed, **size)
    data = simulate(kind, seed=seed, **size)
    landing = Path(out_dir) / "landing"
    if landing.exists():
        shutil.rmtree(landing)
    landing.mkdir(parents=True)
    return write_demo(data, Path(out_dir))
