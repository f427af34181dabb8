"""Seeded demo fleets with labeled faults, written like the feeds that would drop them.

Three kinds (``docs/demo.md``): ``industrial`` (an hourly pump fleet, :mod:`.fleet`), ``storage``
(self-storage facilities, daily) and ``retail`` (store x SKU, daily). :func:`generate` writes one::

    python -m anomaly_assets.demo --kind storage --out data/storage [--seed 7] [--entities 40]
"""

from anomaly_assets.demo.kinds import DEFAULT_SEED, KINDS, SIZES, generate, simulate

__all__ = ["DEFAULT_SEED", "KINDS", "SIZES", "generate", "simulate"]
