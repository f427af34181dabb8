"""Each series' choice of calendar components, kept for a week once made on a full reference.

A refit chooses which calendar effects a series keeps (``core/baseline.py``'s greedy forward
selection by held-out error) before it fits them. The choice is the costliest part of a refit, so
with ``select_days`` above 1 (an option; the default 1 chooses at every refit) a series keeps a
choice for up to that many days while its level, effects, scale, tails and calibration are still
refitted every day:

- a selection is kept only if it was made on a **full reference**: at least 90 % of
  ``min(reference_days, max_reference_points x interval)``. A young series selects at every
  refit, as its history grows into its cycles;
- a series selects anew on **its day of the cycle** (a stable hash of its name, as
  ``refit_days`` spreads carried refits, ``core/state.py``), so a fleet that started together
  spreads its selections over the week; and at the latest ``select_days`` days after the last;
- a metric the kept selection does not know makes its entity select anew.

The rule depends only on the day and the series' past, so a nightly run that starts from the
selections the night before left (``to_table`` / ``from_table``) makes the same choices as one
backfill over the same days; a backfill's changes give the selections at each of its days' ends
(:func:`day_ends`), from which a rerun of any of them starts.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from anomaly_assets.core import calendar

DAY_S = 86_400
_FULL = 0.9  # the share of the longest reference that counts as full


class Selections:
    """The kept selections of a fleet's entities: entity -> (metrics, kept (n_comp, m), day made).

    Parameters
    ----------
    days : int
        How many days a selection is kept (``DetectorParams.select_days``); 1: none is.
    """

    def __init__(self, days: int = 7):
        self.days = int(days)
        self._kept: dict[str, tuple[tuple[str, ...], np.ndarray, int]] = {}
        self.changes: list[tuple[str, tuple]] = []  # (entity, (metrics, kept or None: dropped, day)), in order

    def __len__(self) -> int:
        return len(self._kept)

    def due(self, name: str, day: int) -> bool:
        """Whether ``name`` selects anew on ``day`` (days since epoch)."""
        got = self._kept.get(str(name))
        if got is None or self.days <= 1:
            return True
        made = got[2]
        if not 0 <= day - made < self.days:
            return True
        return day != made and (day + zlib.crc32(str(name).encode())) % self.days == 0

    def prior(self, names, metrics, day: int) -> tuple[np.ndarray, np.ndarray]:
        """The kept selections of a batch for ``day``.

        Parameters
        ----------
        names : sequence of str
            The batch's entities (E).
        metrics : sequence of str
            The batch's metrics (m), in its column order.
        day : int
            The refit's day (days since epoch of its first scored point).

        Returns
        -------
        kept : ndarray of bool, shape (n_comp, E, m)
        given : ndarray of bool, shape (E,)
            The entities that keep their selection (``kept`` holds it); the others select.
        """
        metrics = [str(x) for x in metrics]
        kept = np.zeros((len(calendar.COMPONENTS), len(names), len(metrics)), bool)
        given = np.zeros(len(names), bool)
        for i, n in enumerate(names):
            if self.due(n, day):
                continue
            known, k, _ = self._kept[str(n)]
            if not set(metrics) <= set(known):
                continue
            kept[:, i, :] = k[:, [known.index(x) for x in metrics]]
            given[i] = True
        return kept, given

    def record(self, names, metrics, kept: np.ndarray, given: np.ndarray, full: np.ndarray, day: int) -> None:
        """Keep the selections a batch's refit made on ``day``.

        ``kept`` (n_comp, E, m) as the refit used it; ``given`` (E,) the entities that kept an
        earlier one (it stays, with its day); ``full`` (E,) whether each entity's reference was
        full. A selection made on a short reference is not kept, and none is then.
        """
        metrics = tuple(str(x) for x in metrics)
        for i, n in enumerate(names):
            if given[i]:
                continue
            if full[i]:
                self._kept[str(n)] = entry = (metrics, kept[:, i, :].copy(), int(day))
                self.changes.append((str(n), entry))
            elif self._kept.pop(str(n), None) is not None:
                self.changes.append((str(n), (metrics, None, int(day))))

    def to_table(self) -> pa.Table:
        """One row per entity: ``entity_id``, ``metrics``, ``kept`` (the components' names per
        metric, ``|``-joined) and ``day``."""
        return _table(list(self._kept.items()))

    def changes_table(self) -> pa.Table:
        """The selections kept and dropped since this object was made, in order: ``to_table``'s
        columns, ``kept`` null where one was dropped (on ``day``)."""
        return _table(self.changes)

    @classmethod
    def from_table(cls, table: pa.Table | None, days: int) -> "Selections":
        """The selections of ``to_table`` (None or an empty table: none)."""
        out = cls(days)
        if table is None or "kept" not in table.column_names:
            return out
        index = {c: k for k, c in enumerate(calendar.COMPONENTS)}
        for n, metrics, kept, day in zip(*(table[c].to_pylist() for c in ("entity_id", "metrics", "kept", "day"))):
            out._kept[str(n)] = (tuple(metrics), _parsed(n, kept, index), int(day))
        return out

    def apply(self, changes: pa.Table) -> None:
        """Apply the rows of ``changes_table`` in order."""
        index = {c: k for k, c in enumerate(calendar.COMPONENTS)}
        for n, metrics, kept, day in zip(*(changes[c].to_pylist() for c in ("entity_id", "metrics", "kept", "day"))):
            if kept is None:
                self._kept.pop(str(n), None)
            else:
                self._kept[str(n)] = (tuple(metrics), _parsed(n, kept, index), int(day))


def _table(rows: list[tuple[str, tuple]]) -> pa.Table:
    comps = np.array(calendar.COMPONENTS)
    return pa.table({
        "entity_id": pa.array([n for n, _ in rows], pa.string()),
        "metrics": pa.array([list(e[0]) for _, e in rows], pa.list_(pa.string())),
        "kept": pa.array([None if e[1] is None else ["|".join(comps[e[1][:, j]]) for j in range(e[1].shape[1])]
                          for _, e in rows], pa.list_(pa.string())),
        "day": pa.array([e[2] for _, e in rows], pa.int32()),
    })


def _parsed(name, kept: list[str], index: dict) -> np.ndarray:
    k = np.zeros((len(calendar.COMPONENTS), len(kept)), bool)
    for j, names in enumerate(kept):
        for c in filter(None, names.split("|")):
            if c not in index:
                raise ValueError(f"kept selection of {name!r}: unknown calendar component {c!r}")
            k[index[c], j] = True
    return k


def day_ends(start: pa.Table | None, changes: list[pa.Table], days: list[int], select_days: int):
    """The selections at the end of each of ``days`` (ascending), from those at the start and a
    run's changes: ``(day, table)`` with the changes made on or before it, the last day with all
    of them (the next day's, fitted ahead, included). A rerun of any one of those days starts
    from the day before's table and makes the run's choices again."""
    state = Selections.from_table(start, select_days)
    parts = [c for c in changes if c.num_rows]
    rows = pa.concat_tables(parts) if parts else _table([])
    # each entity's changes are in day order: a stable sort by day keeps it
    order = np.argsort(rows["day"].to_numpy(), kind="stable")
    rows = rows.take(order)
    made = rows["day"].to_numpy()
    done = 0
    for i, d in enumerate(days):
        upto = len(made) if i == len(days) - 1 else int(np.searchsorted(made, d, "right"))
        state.apply(rows.slice(done, upto - done))
        done = upto
        yield d, state.to_table()


def full_reference(seen: np.ndarray, interval: float, reference_days: float, max_points: int) -> np.ndarray:
    """Whether each reference span ``seen`` (seconds) is full: near the longest it gets."""
    longest = min(reference_days * DAY_S, max_points * interval)
    return np.asarray(seen, float) >= _FULL * longest


def record(selections: "Selections", names, metrics, scored, day: int, reference_days: float,
           max_points: int) -> None:
    """Keep what a batch's refit selected (``scored``: :class:`core.detector.Scored`), when it
    refitted once, before its first new point."""
    if scored.kept_given is None or not scored.refits:
        return
    r = scored.refits[-1]
    full = full_reference(r.seen, r.baseline.interval, reference_days, max_points)
    selections.record(names, metrics, r.baseline.kept, scored.kept_given, full, day)
