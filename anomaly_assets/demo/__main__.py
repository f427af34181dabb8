"""``python -m anomaly_assets.demo --kind K --out DIR [--seed N] [sizes]``: write a demo kind's files."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from anomaly_assets.demo.kinds import DEFAULT_SEED, KINDS, generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anomaly_assets.demo", description=__doc__)
    ap.add_argument("--kind", choices=KINDS, default="industrial")
    ap.add_argument("--out", type=Path, required=True, help="folder for landing/ and the truth files")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--entities", type=int, help="pumps, facilities, or store-SKUs (retail: 25 SKUs a store)")
    ap.add_argument("--days", type=int)
    ap.add_argument("--start", help="first day, YYYY-MM-DD")
    ap.add_argument("--freq", help="industrial only: sampling interval (1min .. 1D)")
    ap.add_argument("--stores", type=int, help="retail only")
    ap.add_argument("--skus", type=int, help="retail only: SKUs per store")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        s = generate(a.kind, a.out, seed=a.seed, entities=a.entities, days=a.days, start=a.start, freq=a.freq,
                     stores=a.stores, skus=a.skus)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{s.describe()} in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
