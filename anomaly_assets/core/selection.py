"""Each series' choice of calendar components, kept for up to ``select_days`` once made on a
settled reference.

A refit chooses which calendar effects a series keeps (``core/baseline.py``'s greedy forward
selection by held-out error) before it fits them. The choice is the costliest part of a refit, so
with ``select_days`` above 1 (an option; the default 1 chooses at every refit) an entity keeps a
choice for up to that many days while its level, effects, scale, tails and calibration are still
refitted every day:

- a choice is kept only if it was made on a **settled reference**: every metric of the entity has
  usable points back to at least 90 % of the longest reference it gets
  (``min(reference span, max_reference_points x interval)``, ``core/reference.py``). A young
  series, or an entity with a young metric, chooses at every refit;
- an entity chooses anew on **its day of the cycle** (a stable hash of its name, salted apart from
  the ``refit_days`` cycle's, so the two coincide only as two independent hashes do), so a fleet
  that started together spreads its choices over the week; and at the latest ``select_days`` days
  after the last;
- a metric the kept choice does not know makes its entity choose anew.

The rule depends only on the day and the series' past, so a nightly run that starts from the
choices the day before left (``to_table`` / ``from_table``) makes the same choices as one
backfill over the same days; a run's changes give the choices at each of its days' ends
(:func:`day_ends`), from which a rerun of any of them starts.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from anomaly_assets.core import calendar

_SETTLED = 0.9  # the share of the longest reference a settled one reaches back


class Selections:
    """The kept choices of a fleet's entities: entity -> (metrics, kept (n_comp, m), day made).

    Parameters
    ----------
    days : int
        How many days a choice is kept (``DetectorParams.select_days``); 1: none is.
    """

    def __init__(self, days: int):
        self.days = int(days)
        self._kept: dict[str, tuple[tuple[str, ...], np.ndarray, int]] = {}
        self.changes: list[tuple[str, tuple]] = []  # (entity, (metrics, kept or None: dropped, day)), in order

    def __len__(self) -> int:
        return len(self._kept)

    def due(self, name: str, day: int) -> bool:
        """Whether entity ``name`` chooses anew on ``day`` (days since epoch)."""
        got = self._kept.get(str(name))
        if got is None or self.days <= 1:
            return True
        made = got[2]
        if not 0 <= day - made < self.days:
            return True
        return day != made and (day + zlib.crc32(b"select:" + str(name).encode())) % self.days == 0

    def prior(self, names, metrics, day: int) -> tuple[np.ndarray, np.ndarray]:
        """The kept choices of a batch for ``day``.

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
            The entities that keep their choice (``kept`` holds it); the others choose.
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

    def record(self, names, metrics, kept: np.ndarray, given: np.ndarray, settled: np.ndarray, day: int,
               fitted: np.ndarray | None = None) -> None:
        """Keep the choices a batch's refit before its first point on ``day`` used.

        Parameters
        ----------
        names, metrics : sequence of str
            The batch's entities (E) and metrics (m).
        kept : ndarray of bool, shape (n_comp, E, m)
            The components the refit used.
        given : ndarray of bool, shape (E,)
            The entities that used a kept choice: it stays, with the day it was made.
        settled : ndarray of bool, shape (E,)
            Whether each entity's reference was settled: only then is a new choice kept (and an
            earlier one forgotten otherwise).
        day : int
            Days since epoch.
        fitted : ndarray of bool, shape (E,), optional
            The entities with a series the refit could fit (default: all). The others made no
            choice and their earlier one stays, as when no series of their batch could be fitted:
            what is kept must not depend on which entities share a batch.
        """
        metrics = tuple(str(x) for x in metrics)
        for i, n in enumerate(names):
            if given[i] or (fitted is not None and not fitted[i]):
                continue
            if settled[i]:
                self._kept[str(n)] = entry = (metrics, kept[:, i, :].copy(), int(day))
                self.changes.append((str(n), entry))
            elif self._kept.pop(str(n), None) is not None:
                self.changes.append((str(n), (metrics, None, int(day))))

    def expire(self, day: int) -> None:
        """Forget the choices no refit on or after ``day`` can keep (made ``select_days`` or more before it)."""
        for n in [n for n, (_, _, made) in self._kept.items() if day - made >= self.days]:
            del self._kept[n]

    def to_table(self) -> pa.Table:
        """One row per entity: ``entity_id``, ``metrics``, ``kept`` (the components' names per
        metric, ``|``-joined) and ``day``."""
        return _table(list(self._kept.items()))

    def changes_table(self) -> pa.Table:
        """The choices kept and dropped since this object was made, in order: ``to_table``'s
        columns, ``kept`` null where one was dropped (on ``day``)."""
        return _table(self.changes)

    @classmethod
    def from_table(cls, table: pa.Table | None, days: int) -> "Selections":
        """The choices of ``to_table`` (None, or a table without them: none)."""
        out = cls(days)
        if table is not None and "kept" in table.column_names:
            out.apply(table)  # not a change: ``changes`` stays empty
        return out

    def apply(self, changes: pa.Table) -> None:
        """Apply the rows of ``changes_table`` (or ``to_table``) in order."""
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
    """The choices at the end of each day of a run, from those it started from and its changes.

    Parameters
    ----------
    start : pyarrow.Table or None
        ``Selections.to_table`` of the day before the run's first.
    changes : list of pyarrow.Table
        ``Selections.changes_table`` of each chunk of entities (each in its own order).
    days : list of int
        The run's days (days since epoch), ascending.
    select_days : int

    Yields
    ------
    day : int
    table : pyarrow.Table
        The choices after the changes made on or before ``day``, without those no later refit can
        keep. A change dated later (the choice of a model fitted ahead for the next day) is left
        to the run that scores with that model: it may never score.
    """
    state = Selections.from_table(start, select_days)
    parts = [c for c in changes if c.num_rows]
    rows = _table([]) if not parts else pa.concat_tables(parts)
    # each entity's changes are in day order (chunks hold other entities): a stable sort keeps it
    rows = rows.take(np.argsort(rows["day"].to_numpy(), kind="stable"))
    made = rows["day"].to_numpy()
    done = 0
    for d in days:
        upto = int(np.searchsorted(made, d, "right"))
        state.apply(rows.slice(done, upto - done))
        state.expire(d + 1)
        done = upto
        yield d, state.to_table()


def settled(usable: np.ndarray, ts_ref: np.ndarray, t0: float, longest: float) -> np.ndarray:
    """Whether each entity's reference is settled: every metric has a usable point back to at
    least 90 % of ``longest`` seconds before ``t0``.

    Parameters
    ----------
    usable : ndarray of bool, shape (E, n, m)
        The reference points a refit uses.
    ts_ref : ndarray of shape (n,)
        Their epoch seconds.
    t0 : float
        The epoch seconds of the first point the refit scores.
    longest : float
        The longest span (seconds) the reference reaches.

    Returns
    -------
    ndarray of bool, shape (E,)
    """
    if usable.shape[1] == 0:
        return np.zeros(usable.shape[0], bool)
    first = usable.argmax(axis=1)  # (E, m): the first usable point (0 where none, caught below)
    back = t0 - np.asarray(ts_ref, float)[first]
    return (usable.any(axis=1) & (back >= _SETTLED * longest)).all(axis=1)


def record(selections: Selections | None, names, metrics, scored, day: int) -> None:
    """Keep the choices of a batch's refit (``scored``: :class:`core.detector.Scored`), when it
    refitted once, before its first new point; nothing without ``selections``."""
    if selections is None or scored.kept_given is None or not scored.refits:
        return
    r = scored.refits[-1]
    selections.record(names, metrics, r.baseline.kept, scored.kept_given, r.settled, day, r.valid.any(axis=1))
