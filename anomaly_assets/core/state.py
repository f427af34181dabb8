"""The models of a fleet, carried from day to day: which series has which model, and when to refit.

A :class:`FleetState` holds the models (``core/model.py``) of the series it has seen, as blocks
(one per batch that was refitted or carried together) with an index from entity to its row. It
is the state a nightly run starts from and leaves behind (``to_table`` / ``from_table``), and the
state a range run carries in memory from one day to the next: the same numbers either way.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from anomaly_assets.core import model as md


class FleetState:
    """Per-entity models. ``version`` names the detector parameters and code that fitted them."""

    def __init__(self, version: str = ""):
        self.version = version
        self._blocks: dict[int, tuple[tuple[str, ...], md.Model]] = {}
        self._live: dict[int, int] = {}
        self._where: dict[str, tuple[int, int]] = {}
        self._slots: dict[str, int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._where)

    def entities(self) -> list[str]:
        return list(self._where)

    def slots(self, names, refit_days: int) -> np.ndarray:
        """Each entity's slot in the refit cycle: a stable hash of its name (not Python's ``hash``)."""
        out = np.empty(len(names), np.int64)
        for k, n in enumerate(names):
            s = self._slots.get(n)
            if s is None:
                s = self._slots[n] = zlib.crc32(str(n).encode())
            out[k] = s % max(refit_days, 1)
        return out

    def refit_reasons(self, names, day_s: int, refit_days: int, first_s, metrics_today) -> np.ndarray:
        """Why each of ``names`` is refitted on the day starting at ``day_s`` (a code of
        ``core.model.REASONS``; 0: it scores the day with the model it has).

        No model, or a reason of :func:`core.model.refit_reasons`; a metric today that the model
        does not know ("new"); and, refitted daily, a model fitted before another first point than
        the entity's first today ("cadence": its reference ends elsewhere, e.g. an earlier point
        landed after the day's first micro-batch). ``first_s`` (n,) is each entity's first point
        today in epoch seconds, ``metrics_today`` (n,) the set of metrics it has points of today.
        """
        names = np.asarray(names, dtype=object)
        out = np.full(len(names), md.REASONS.index("new"), np.int8)
        at = np.flatnonzero(self.known(names))
        for pos, model in (self.gather(names[at]) if len(at) else []):
            idx = at[pos]
            r = md.refit_reasons(model, len(idx), day_s, self.slots(names[idx], refit_days), refit_days)
            if refit_days <= 1:
                moved = model.fitted_at != np.asarray(first_s, np.int64)[idx]
                r = np.where((r == 0) & moved, md.REASONS.index("cadence"), r).astype(np.int8)
            out[idx] = r
        for i in np.flatnonzero(out == 0):
            if not set(metrics_today[i]) <= set(self.metrics_of(names[i])):
                out[i] = md.REASONS.index("new")
        return out

    def known(self, names) -> np.ndarray:
        """Which entities have a model."""
        return np.array([str(n) in self._where for n in names], bool)

    def metrics_of(self, name) -> tuple[str, ...]:
        """The metrics of an entity's model."""
        return self._blocks[self._where[str(name)][0]][0]

    def gather(self, names) -> list[tuple[np.ndarray, md.Model]]:
        """The models of ``names`` (all present), as groups that stack: (positions in ``names``,
        their models stacked in that order). Entities refitted at different times can differ in
        shape (a young one without the PCA statistic), so they are scored apart."""
        where = [self._where[str(n)] for n in names]
        blocks = np.array([w[0] for w in where], np.int64)
        rows = np.array([w[1] for w in where], np.int64)
        groups: dict[tuple, list] = {}
        for b in np.unique(blocks):
            sel = np.flatnonzero(blocks == b)
            _, model = self._blocks[int(b)]
            whole = len(sel) == len(model.scale) and (rows[sel] == np.arange(len(sel))).all()
            groups.setdefault(md.compatible_key(model), []).append((sel, model if whole else model.take(rows[sel])))
        out = []
        for parts in groups.values():
            pos = np.concatenate([p for p, _ in parts])
            stacked = md.concat([m for _, m in parts])
            order = np.argsort(pos, kind="stable")
            out.append((pos[order], stacked if (order == np.arange(len(order))).all() else stacked.take(order)))
        return out

    def put(self, names, metrics, model: md.Model) -> None:
        """Record ``model`` (E = len(names)) as the current model of ``names``."""
        b = self._next
        self._next += 1
        self._blocks[b] = (tuple(map(str, metrics)), model)
        self._live[b] = 0
        for k, n in enumerate(names):
            old = self._where.get(str(n))
            if old is not None:
                self._release(old[0])
            self._where[str(n)] = (b, k)
            self._live[b] += 1
        if not self._live[b]:
            self._release(b, 0)

    def _release(self, b: int, by: int = 1) -> None:
        self._live[b] -= by
        if self._live[b] <= 0:
            del self._blocks[b], self._live[b]

    def to_table(self) -> pa.Table:
        """Every entity's model, one row each (``core/model.py``'s columns)."""
        parts = []
        by_block: dict[int, list] = {}
        for name, (b, r) in self._where.items():
            by_block.setdefault(b, []).append((r, name))
        for b, members in by_block.items():
            metrics, model = self._blocks[b]
            if not model.storable:
                continue
            members.sort()
            rows = np.array([r for r, _ in members])
            sub = model if len(rows) == len(model.scale) and (rows == np.arange(len(rows))).all() else model.take(rows)
            parts.append(md.to_table(sub, [n for _, n in members], metrics))
        return pa.concat_tables(parts) if parts else pa.table({"entity_id": pa.array([], pa.string())})

    @classmethod
    def from_table(cls, table: pa.Table, version: str = "") -> "FleetState":
        state = cls(version)
        if "metrics" in table.column_names:
            for names, metrics, model in md.from_table(table):
                state.put(names, metrics, model)
        return state
