"""Detection: features.decomposition, ml.model_versions, scoring.anomaly_scores and
scoring.explanations, written by one step.

Each day is scored from the days before it, and what a day stores (every point's out-of-sample
residual and whether it was left out of later references) is part of the next day's input, so
the four tables are computed together, a chunk of entities at a time, days in order
(``core/fleet.py``). A nightly run reads what earlier runs stored; a backfill carries it from day
to day in memory: the same numbers either way.

Today's partition is scored many times while its files land (micro-batches). Refitted daily, a
series' model for the day depends only on the days before it, so the first run of the day keeps
the models it fitted (``models/state/<day>-opened_<version>.parquet``) and later runs of the day
score with them, reading only the day's rows, for as long as no earlier day has been run again.
So does the nightly run that closes the day: a night after micro-batches refits only the series
they did not fit. That run also fits the next day's models, before each series' predicted first
point, so that today's micro-batches after the night refit only what moved (``core/fleet.py``).
"""


import dataclasses
import datetime as dt
import json
from typing import Literal, Optional

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.calendars import holidays_in, others_in
from anomaly_assets.core.detector import DAY_S, DetectorParams
from anomaly_assets.core.fleet import CODE_VERSION, days_in, detect_days
from anomaly_assets.core.selection import Selections, day_ends
from anomaly_assets.core.state import FleetState
from anomaly_assets.defs.alerts import AlertRulebook
from anomaly_assets.defs.metadata import ChunkedWrite, column_schema, markdown_preview, table_metadata, time_window
from anomaly_assets.defs.partitions import CHUNK_ROWS, WRITER_POOL, daily_partitions, open_day_start
from anomaly_assets.defs.resources import MetricCatalog, ModelStore
from anomaly_assets.defs.workers import MIN_PART_ROWS, map_chunks, worker_count, workers_for

# Longest history read for a series with few recent points (daily data, newcomers).
LONG_HISTORY_DAYS = 800

_DEFAULTS = DetectorParams()


class DetectorConfig(dg.Config):
    """The detector's settings, editable in the Launchpad (see docs/detection.md)."""

    detector: Literal["robust", "iforest", "ecod", "hbos"] = _DEFAULTS.detector
    reference_days: float = _DEFAULTS.reference_days
    reference_points: int = _DEFAULTS.reference_points
    min_points: int = _DEFAULTS.min_points
    components: list[str] = list(_DEFAULTS.components)
    seasonality_gain: float = _DEFAULTS.seasonality_gain
    transform: Literal["auto", "none"] = _DEFAULTS.transform
    accept_days: float = _DEFAULTS.accept_days
    refit_days: int = _DEFAULTS.refit_days  # >1: carry each series' model between refits (docs/detection.md)
    select_days: int = _DEFAULTS.select_days  # a series keeps its calendar components this long (docs/detection.md)
    carry_level: float = _DEFAULTS.carry_level  # with refit_days > 1: how far a day moves the carried level
    recurrent_runs: int = _DEFAULTS.recurrent_runs  # >0: what is left out this often is normal (docs/detection.md)
    probation_days: float = _DEFAULTS.probation_days  # a new series' first days: flags need far stronger evidence
    tail_quantile: float = _DEFAULTS.tail_quantile
    smoothing_alphas: list[float] = list(_DEFAULTS.smoothing_alphas)
    warning_p: float = _DEFAULTS.warning_p
    critical_p: float = _DEFAULTS.critical_p
    statistics: Optional[list[str]] = None  # evidence statistics of the robust detector (default: all)

    def params(self) -> DetectorParams:
        kw = self.model_dump()
        kw["components"] = tuple(kw["components"])
        kw["smoothing_alphas"] = tuple(kw["smoothing_alphas"])
        stats = kw.pop("statistics")
        if stats:
            kw["statistics"] = tuple(stats)
        return DetectorParams(**kw)


_KEYS = {t: dg.AssetKey([t.schema, t.name]) for t in (wh.DECOMPOSITION, wh.MODEL_VERSIONS, wh.ANOMALY_SCORES,
                                                      wh.EXPLANATIONS)}


def _spec(table: wh.Table, deps, description: str | None = None, kinds=("duckdb", "python")) -> dg.AssetSpec:
    return dg.AssetSpec(_KEYS[table], deps=deps, description=description or table.doc, kinds=set(kinds),
                        group_name="detection", metadata={"dagster/column_schema": column_schema(table)})


@dg.multi_asset(
    specs=[
        _spec(wh.DECOMPOSITION, [["raw", "observations"]]),
        _spec(wh.MODEL_VERSIONS, [["raw", "observations"]],
              wh.MODEL_VERSIONS.doc + " One row per day: what the day's refits learnt, kept as Parquet."),
        _spec(wh.ANOMALY_SCORES, [["raw", "observations"]]),
        _spec(wh.EXPLANATIONS, [["raw", "observations"]]),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WRITER_POOL,
    name="detection",
)
def detection(context: dg.AssetExecutionContext, config: DetectorConfig, duckdb: DuckDBResource, models: ModelStore,
              catalog: MetricCatalog, alert_rules: AlertRulebook):
    """Baseline, band, calibrated score and explanation of every observation of the run's days."""
    start, end = time_window(context)
    params = config.params()
    days = days_in(start, end)
    fam = catalog.load()
    recent_start = start - pd.Timedelta(days=params.reference_days)
    short_start = start - pd.Timedelta(days=params.reference_days + 1)
    long_start = start - pd.Timedelta(days=LONG_HISTORY_DAYS)
    dec, scores, tops = ChunkedWrite(), ChunkedWrite(), []
    score_parts, expl_parts = [], []
    day_models = {}
    # the models carried from the day before (kept only when they are refitted less than daily)
    version = params.version(CODE_VERSION)
    carried = models.load_state(str((start - pd.Timedelta(days=1)).date()), version) if params.refit_days > 1 else None
    states, day_only, opened_parts, next_parts, sel_parts = [], [0], [], [], []
    # with select_days > 1: each entity's calendar components as the day before left them (core/selection.py)
    choose = params.select_days > 1
    selected = models.load_state(f"{(start - pd.Timedelta(days=1)).date()}-selected", version) if choose else None
    with duckdb.get_connection() as con:
        wh.ensure_tables(con)
        # refitted daily, a day's models as its first run fitted them (a micro-batch of it): its
        # later micro-batches score with them, and so does the run that closes the day
        single = params.refit_days == 1 and len(days) == 1
        intraday = single and days == [open_day_start()]
        # the run that closes yesterday fits today's models too, so today's micro-batches carry them
        prefit = params.refit_days == 1 and days[-1] + pd.Timedelta(days=1) == open_day_start()
        history_mark = _history_mark(con, long_start, start) if single else ""
        opened = _opened(models, start, version, history_mark) if single else None
        # chunks cut on the run's own rows, sized for the rows a chunk reads: its reference window
        # too (a night reads ~29 days of rows per day scored). At most an eighth of CHUNK_ROWS: a
        # scored row's outputs weigh more than a read row (a backfill's chunks of 1/2 peaked 4.4 GB)
        read = min(1 / 8, len(days) / (len(days) + params.reference_days))
        chunks = wh.entity_chunks(con, wh.OBSERVATIONS, start, end, int(CHUNK_ROWS * read), worker_count(),
                                  int(MIN_PART_ROWS * read))
        # known events back to the long window: holidays and the other events (promotions, peaks,
        # closures) for the detector's references, and the run's own days for the why of a flag
        known = alert_rules.events([str(e) for c in chunks for e in c], long_start, end)
        holidays = holidays_in(known) if known is not None else {}
        others = others_in(known) if known is not None else {}
        events = _events_text(known, start, end)
        metrics = wh.distinct_metrics(con, wh.OBSERVATIONS, long_start, end)
        reader = con.cursor()  # reads while `con` runs the INSERT that pulls the chunks (below)

        def history(entities):
            return wh.read_history_chunk(reader, entities, metrics, start, end, short_start, long_start,
                                         recent_start, params.reference_points)

        def reads():  # a chunk of entities at a time, read when a worker is about to need it
            for entities in chunks:
                state = _state_of(carried, entities, version)
                todays = _state_of(opened, entities, version)
                lean_by = None if prefit else state or todays  # fitting tomorrow's reads every history
                rows, lean = _rows_needed(history, reader, entities, metrics, lean_by, days, params) if lean_by else \
                    (history(entities), 0)
                day_only[0] += lean
                pick = lambda by: {str(e): by[str(e)] for e in entities if str(e) in by}  # noqa: E731
                yield (rows, days, params, fam.families, fam.units, pick(holidays), state, todays, intraday, prefit,
                       pick(others), Selections.from_table(_rows_of(selected, entities), params.select_days)
                       if choose else None)

        def decomposition_rows():  # scored in worker processes, written here as they come back
            for out in map_chunks(detect_days, reads(), len(chunks)):
                rows = out.decomposition.reindex(columns=wh.DECOMPOSITION.column_names)
                dec.add(rows, cold_start_rows=int(rows["expected"].isna().sum()) if len(rows) else 0)
                s = _say_known_events(out.scores, events)
                flagged = s[s["is_anomaly"]]
                scores.add(s, flagged=len(flagged), critical=int((s["severity"] == "critical").sum()),
                           cold_start_points=int((s["severity"] == "cold_start").sum()))
                tops.append(flagged.sort_values("anomaly_score", ascending=False).drop_duplicates("entity_id").head(10))
                score_parts.append(s)
                expl_parts.append(out.explanations)
                for day, m in out.models.items():
                    day_models.setdefault(day, []).append(m)
                if params.refit_days > 1:
                    states.append(out.state.to_table())
                if out.opened is not None:
                    opened_parts.append(out.opened.to_table())
                if out.next_opened is not None:
                    next_parts.append(out.next_opened.to_table())
                if out.selections is not None:
                    sel_parts.append(out.selections.changes_table())
                yield rows

        with wh.transaction(con), reader:
            wh.replace_time_slice_streamed(con, wh.DECOMPOSITION, decomposition_rows(), start, end)
            wh.replace_time_slice(con, wh.ANOMALY_SCORES, score_parts, start, end)
            wh.replace_time_slice(con, wh.EXPLANATIONS, expl_parts, start, end)
            versions = _model_rows(day_models, days, params, models, keep_earlier=opened is not None)
            if params.refit_days > 1:
                models.save_state(_carried_on(carried, states), str(days[-1].date()), version)
            if intraday:
                _keep_opened(models, start, version, _carried_on(opened, opened_parts), history_mark)
            wh.replace_keyed(con, wh.MODEL_VERSIONS, versions, "day", [str(d.date()) for d in days])
            if choose:  # the selections at each day's end: a rerun of any of the days starts where this run was
                ends = day_ends(selected, sel_parts, [d.value // 10**9 // DAY_S for d in days], params.select_days)
                for day, (_, table) in zip(days, ends):
                    models.save_state(table, f"{day.date()}-selected", version)
            if prefit:  # marked with the history as it stands once this run's days are written
                today = days[-1] + pd.Timedelta(days=1)
                _keep_opened(models, today, version, _carried_on(None, next_parts),
                             _history_mark(con, today - pd.Timedelta(days=LONG_HISTORY_DAYS), today))
    expl = ChunkedWrite()
    for e in expl_parts:
        expl.add(e)
    top = pd.concat(tops, ignore_index=True) if tops else pd.DataFrame()
    if len(top):
        top = top.sort_values("anomaly_score", ascending=False).drop_duplicates("entity_id").head(10)
    yield dg.MaterializeResult(asset_key=_KEYS[wh.DECOMPOSITION], metadata={
        **dec.metadata(wh.DECOMPOSITION, start, end, context),
        "cold_start_rows": dec.counts.get("cold_start_rows", 0),
        "chunks": len(chunks), "workers": workers_for(len(chunks)),
        "entities_read_for_the_day_only": day_only[0],  # they carried their model (or the day's, today)
        # refitted with the calendar components they kept (core/selection.py), per day summed
        "refits_with_a_kept_selection": sum(m.kept_selection for ms in day_models.values() for m in ms),
    })
    yield dg.MaterializeResult(asset_key=_KEYS[wh.MODEL_VERSIONS], metadata={
        **table_metadata(wh.MODEL_VERSIONS, versions, start, end),
        "entities_modelled": int(versions["entities"].sum()) if len(versions) else 0,
        "cold_start_entities": int(versions["cold_start_entities"].sum()) if len(versions) else 0,
        "params": dg.MetadataValue.json(json.loads(json.dumps(dataclasses.asdict(params), default=list))),
    })
    yield dg.MaterializeResult(asset_key=_KEYS[wh.ANOMALY_SCORES], metadata={
        **scores.metadata(wh.ANOMALY_SCORES, start, end, context),
        "flagged": scores.counts.get("flagged", 0),
        "critical": scores.counts.get("critical", 0),
        "cold_start_points": scores.counts.get("cold_start_points", 0),
        "top_anomalies": markdown_preview(top[["entity_id", "ts", "anomaly_score", "severity", "why"]] if len(top) else top),
    })
    yield dg.MaterializeResult(asset_key=_KEYS[wh.EXPLANATIONS],
                               metadata=expl.metadata(wh.EXPLANATIONS, start, end, context))


def _events_text(known: pd.DataFrame | None, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series | None:
    """(entity_id, day) -> "name (kind), ..." of the known events in [start, end), or None."""
    if known is None:
        return None
    ev = known[(known["day"] >= start) & (known["day"] < end)]
    if ev.empty:
        return None
    text = ev["name"].where(ev["name"].str.len() > 0, ev["kind"]) + " (" + ev["kind"].str.replace("_", " ") + ")"
    return ev.assign(text=text).groupby(["entity_id", "day"])["text"].agg(", ".join)


def _say_known_events(scores: pd.DataFrame, events) -> pd.DataFrame:
    """A flagged point on a known event day says so in its why: the detector expects an event's
    usual effect (``core/events.py``), so such a point is off even for an event day, and an
    operator should not have to look the event up."""
    if events is None or not len(scores) or not scores["is_anomaly"].any():
        return scores
    flagged = scores.index[scores["is_anomaly"].to_numpy()]
    keys = pd.MultiIndex.from_arrays([scores.loc[flagged, "entity_id"].astype(str),
                                      scores.loc[flagged, "ts"].dt.floor("D")])
    said = events.reindex(keys).to_numpy()
    hit = pd.notna(said)
    if not hit.any():
        return scores
    scores = scores.copy()
    rows = flagged[hit]
    scores.loc[rows, "why"] = scores.loc[rows, "why"].astype(str) + "; on a known event: " + said[hit].astype(str)
    return scores


def _model_rows(day_models: dict, days: list[pd.Timestamp], params: DetectorParams, store: ModelStore,
                keep_earlier: bool = False) -> pd.DataFrame:
    """One ml.model_versions row per day; the day's per-series parameters saved as Parquet (with
    ``keep_earlier``, those an earlier run of the day saved for series not refitted now)."""
    from anomaly_assets.core.fleet import model_version

    records = []
    for day in days:
        parts = day_models.get(day, [])
        version = model_version(params, day)
        params_frame = pd.concat([m.series_params() for m in parts], ignore_index=True) if parts else pd.DataFrame()
        earlier = store.artifact(str(day.date()), version)
        if keep_earlier and earlier.exists():
            old = pd.read_parquet(earlier)
            if len(params_frame):
                old = old[~old["entity_id"].isin(params_frame["entity_id"])]
            params_frame = pd.concat([params_frame, old], ignore_index=True) if len(params_frame) else old
        path = store.save(params_frame, str(day.date()), version)
        starts = [m.train_start for m in parts if m.train_start is not None]
        records.append({
            "model_version": version, "day": day.date(), "model": f"robust-calendar/{params.detector}",
            "train_start": min(starts) if starts else day, "train_end": day,
            "entities": sum(m.entities for m in parts), "cold_start_entities": sum(m.cold_start_entities for m in parts),
            "training_rows": sum(m.reference_points for m in parts),
            "params": json.dumps({**json.loads(json.dumps(dataclasses.asdict(params), default=list)), "code": CODE_VERSION}),
            "artifact_path": str(path), "trained_at": dt.datetime.now(dt.timezone.utc),
            "refits": json.dumps(_sum_counts(m.refits for m in parts)), "carried": sum(m.carried for m in parts),
        })
    return pd.DataFrame(records, columns=wh.MODEL_VERSIONS.column_names)


def _sum_counts(counts) -> dict:
    total: dict = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def _history_mark(con, since: pd.Timestamp, day: pd.Timestamp) -> str:
    """When the days before ``day`` were last scored: a day's models fitted on another history
    (an earlier day run again since) are not used."""
    last = con.execute(f"SELECT max(trained_at) FROM {wh.MODEL_VERSIONS.qualified} WHERE day >= ? AND day < ?",
                       [since.date(), day.date()]).fetchone()[0]
    return "" if last is None else str(last)


def _opened(models: ModelStore, day: pd.Timestamp, version: str, mark: str):
    """The models an earlier run fitted for ``day``, if fitted on the same history."""
    table = models.load_state(f"{day.date()}-opened", version)
    if table is None or (table.schema.metadata or {}).get(b"history", b"").decode() != mark:
        return None
    return table


def _keep_opened(models: ModelStore, day: pd.Timestamp, version: str, table, mark: str) -> None:
    """Keep the day's models for its next micro-batch; those of earlier days are of no more use."""
    models.save_state(table.replace_schema_metadata({"history": mark}), f"{day.date()}-opened", version)
    for old in models.state_path("", version).parent.glob("*-opened_*.parquet"):
        if old.name < f"{day.date()}-opened":
            old.unlink(missing_ok=True)


def _state_of(carried, entities, version: str) -> FleetState | None:
    """The carried models of a chunk's entities (None: refit them all)."""
    return None if carried is None else FleetState.from_table(_rows_of(carried, entities), version)


def _rows_of(table, entities):
    """The rows of a per-entity table (models, selections) for a chunk's entities; None stays None."""
    if table is None:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    return table.filter(pc.is_in(table["entity_id"], value_set=pa.array([str(e) for e in entities], pa.string())))


def _rows_needed(history, reader, entities: list, metrics: list, state: FleetState, days: list,
                 params) -> tuple[pd.DataFrame, int]:
    """A night's rows for a chunk: the history of the entities refitted tonight, and only the
    day's rows of those that carry their model (what makes a night cost the new data); and how
    many entities were read for the day only."""
    if len(days) != 1:  # a range: later days' refits need the history of every entity
        return history(entities), 0
    day = days[0]
    known = [e for e, k in zip(entities, state.known(entities)) if k]
    if not known:
        return history(entities), 0
    # the day's rows tell which models carry (core.fleet decides the same from the same rows)
    today = wh.read_history_chunk(reader, known, metrics, day, day + pd.Timedelta(days=1), day, day, day, 0)
    by = today.groupby("entity_id", observed=True)
    first = {str(e): pd.Timestamp(t).value // 10**9 for e, t in by["ts"].min().items()}
    seen = {str(e): set(m.astype(str)) for e, m in by["metric"]}
    present = [e for e in known if str(e) in first]
    reasons = state.refit_reasons(present, int(day.value // 10**9), params.refit_days,
                                  [first[str(e)] for e in present], [seen[str(e)] for e in present])
    lean = {str(e) for e, r in zip(present, reasons) if r == 0}
    if not lean:
        return history(entities), 0
    today = today[today["entity_id"].astype(str).isin(lean)]
    full = [e for e in entities if str(e) not in lean]
    if not full:
        return today, len(lean)
    return pd.concat([history(full), today], ignore_index=True), len(lean)


def _carried_on(carried, states: list):
    """The state after the run: this run's models, and the earlier ones of entities it did not see."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [t for t in states if t.num_rows]
    if carried is not None and carried.num_rows:
        seen = pa.chunked_array([t["entity_id"] for t in parts], pa.string()).combine_chunks()  # the names only
        parts.append(carried.filter(pc.invert(pc.is_in(carried["entity_id"], value_set=seen))))
    if not parts:
        return pa.table({"entity_id": pa.array([], pa.string())})
    # a table written before a column was added joins with nulls there (core/model.py reads them as zeros)
    return pa.concat_tables(parts, promote_options="default")
