"""Running the chain without a person: freshness, the nightly schedule, the landing sensor, alerts.

* **Freshness** (:func:`freshness_policy`): every asset should have materialized within
  ``ANOMALY_FRESHNESS_WARN_HOURS`` (26 h: the nightly run is 2 h late) and at the latest within
  ``ANOMALY_FRESHNESS_FAIL_HOURS`` (36 h: a night was missed and the working day has no fresh
  scores). Applied once, to every asset, in ``definitions.py``; the UI shows late feeds as
  warned / failed (the instance's freshness daemon evaluates it, on by default in Dagster 1.13).
  A time-window policy looks at the newest materialization of any partition: it says "the chain
  has not run", not "yesterday is missing" (a backfill of old days also counts as fresh).
* **Nightly schedule** (:func:`build_nightly_schedule`): at ``ANOMALY_SCHEDULE_CRON`` (default
  ``0 2 * * *``) in ``ANOMALY_SCHEDULE_TZ`` (default UTC) it runs the whole chain for the last
  complete UTC day: partitions are UTC days, the time zone only says when to run.
* **Landing sensor** (:func:`build_landing_sensor`): watches the landing folder; every new or
  changed file (path, size, mtime_ns) requests one run of the chain for the days it covers,
  exactly once per file version (see the function).
* **Failure alerts** (:func:`build_alert_sensors`): a failed run, or a successful run with failed
  asset checks, is logged and posted to ``ANOMALY_FAILURE_WEBHOOK_URL`` when set (Slack-compatible
  ``{"text": ...}``; the URL is a secret: no log line or error names it).

Every knob comes from the environment, read once when the definitions load
(:func:`load_automation_settings`), and is checked with an error that names the variable.
"""

import datetime as dt
import hashlib
import json
import os
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._utils.schedules import is_valid_cron_string

from anomaly_assets.defs.partitions import open_day
from anomaly_assets.defs.resources import LandingFolder
from anomaly_assets.landing import LandingError, discover, observation_days
from anomaly_assets.settings import load_settings
from anomaly_assets.webhooks import check_webhook_env, post_json, redact, webhook_url

FAILURE_WEBHOOK_ENV = "ANOMALY_FAILURE_WEBHOOK_URL"
TRIGGER_TAG = "anomaly/trigger"


# ------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class AutomationSettings:
    """When and how often the chain runs itself; see the module docstring for each knob."""

    schedule_cron: str = "0 2 * * *"
    schedule_tz: str = "UTC"
    sensor_interval_s: int = 30
    landing_settle_s: int = 30
    freshness_warn_h: float = 26.0
    freshness_fail_h: float = 36.0
    ui_url: str | None = None
    partition_start: str = "2013-01-01"


def load_automation_settings(env: dict[str, str] | None = None) -> AutomationSettings:
    """Automation settings from the environment; a bad value raises naming the variable."""
    env = dict(os.environ if env is None else env)
    d = AutomationSettings(partition_start=load_settings(env).partition_start)

    def number(name: str, default, cast, minimum):
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = cast(raw)
        except ValueError:
            value = None
        if value is None or value < minimum:
            kind = "an integer" if cast is int else "a number"
            raise ValueError(f"{name}={raw!r} is not valid: expected {kind} >= {minimum}")
        return value

    cron = env.get("ANOMALY_SCHEDULE_CRON", "").strip() or d.schedule_cron
    if not is_valid_cron_string(cron):
        raise ValueError(f"ANOMALY_SCHEDULE_CRON={cron!r} is not a cron string: expected e.g. '0 2 * * *'")
    tz = env.get("ANOMALY_SCHEDULE_TZ", "").strip() or d.schedule_tz
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"ANOMALY_SCHEDULE_TZ={tz!r} is not a time zone: expected an IANA name such as 'Europe/Berlin'") from None
    warn = number("ANOMALY_FRESHNESS_WARN_HOURS", d.freshness_warn_h, float, 1 / 60)
    fail = number("ANOMALY_FRESHNESS_FAIL_HOURS", d.freshness_fail_h, float, 1 / 60)
    if warn >= fail:
        raise ValueError(f"ANOMALY_FRESHNESS_WARN_HOURS={warn:g} must be less than ANOMALY_FRESHNESS_FAIL_HOURS={fail:g}")
    check_webhook_env(env)  # a malformed webhook URL fails the load, naming the variable, never the value
    return AutomationSettings(
        schedule_cron=cron,
        schedule_tz=tz,
        sensor_interval_s=number("ANOMALY_SENSOR_INTERVAL_SECONDS", d.sensor_interval_s, int, 1),
        landing_settle_s=number("ANOMALY_LANDING_SETTLE_SECONDS", d.landing_settle_s, int, 0),
        freshness_warn_h=warn,
        freshness_fail_h=fail,
        ui_url=(env.get("ANOMALY_UI_URL", "").strip().rstrip("/") or None),
        partition_start=d.partition_start,
    )


# ------------------------------------------------------------------------------------ freshness


def freshness_policy(s: AutomationSettings) -> dg.FreshnessPolicy:
    """Fresh = materialized within the fail window; warn after the warn window."""
    return dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=s.freshness_fail_h), warn_window=dt.timedelta(hours=s.freshness_warn_h)
    )


def with_freshness(assets: list, s: AutomationSettings) -> list:
    """The same assets, every spec carrying the freshness policy (for ``Definitions(assets=...)``)."""
    policy = freshness_policy(s)
    return list(dg.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=policy), assets))


def with_owners(assets: list, owners: dict[str, list[str]]) -> list:
    """The same assets, each spec owned by its group's owners (configs/owners.yaml)."""
    return list(dg.map_asset_specs(
        lambda spec: spec.replace_attributes(owners=owners.get(spec.group_name or "", spec.owners or [])), assets))


# ------------------------------------------------------------------------------------ partitions


def last_complete_day(now: dt.datetime) -> str:
    """The last UTC day that has ended at ``now`` (what the nightly run completes)."""
    return str(now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1))


def _day_ranges(days: list[str]) -> list[tuple[str, str]]:
    """Sorted days -> runs of consecutive days as (first, last)."""
    out: list[tuple[str, str]] = []
    for day in days:
        if out and dt.date.fromisoformat(day) - dt.date.fromisoformat(out[-1][1]) == dt.timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def _run_request(first: str, last: str, run_key: str, trigger: str, job_name: str | None = None,
                 **tags) -> dg.RunRequest:
    tags = {TRIGGER_TAG: trigger, **{k: str(v) for k, v in tags.items()}}
    if first == last:
        return dg.RunRequest(run_key=run_key, partition_key=first, tags=tags, job_name=job_name)
    # a range is one run: every asset has BackfillPolicy.single_run()
    return dg.RunRequest(run_key=run_key, job_name=job_name, tags={
        **tags, "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})


# ------------------------------------------------------------------------------------ schedule


def build_nightly_schedule(job, s: AutomationSettings) -> dg.ScheduleDefinition:
    """Early each morning, the whole chain for the day that just ended (UTC)."""

    @dg.schedule(
        name="nightly",
        job=job,
        cron_schedule=s.schedule_cron,
        execution_timezone=s.schedule_tz,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"At '{s.schedule_cron}' ({s.schedule_tz}): the whole chain for the last complete UTC day.",
    )
    def nightly(context: dg.ScheduleEvaluationContext):
        day = last_complete_day(context.scheduled_execution_time)
        if day < s.partition_start:
            return dg.SkipReason(f"{day} is before the first partition {s.partition_start} (ANOMALY_PARTITION_START)")
        return _run_request(day, day, f"nightly:{day}", "nightly")

    return nightly


# ------------------------------------------------------------------------------------ landing sensor


@dataclass
class LandingCursor:
    """What the landing sensor has already acted on, stored as JSON in the sensor's cursor.

    ``files``: relative path -> [size, mtime_ns] of the last version acted on. ``waiting``: day ->
    file versions holding rows for a day that was not a partition yet (today's data): requested
    once the day has ended.
    """

    files: dict[str, list[int]] = field(default_factory=dict)
    waiting: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | None) -> "LandingCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(files=data.get("files", {}), waiting=data.get("waiting", {}))

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "waiting": self.waiting}, sort_keys=True, separators=(",", ":"))


@dataclass
class LandingPlan:
    """One tick of the landing sensor: the runs to request, the next cursor, and what was seen."""

    runs: list[tuple[str, str, list[str]]]  # (first day, last day, file versions)
    cursor: LandingCursor
    notes: list[str]


def plan_landing_runs(root: Path, skip: set[Path], cursor: LandingCursor, now: dt.datetime,
                      partition_start: str, settle_s: float = 0,
                      ingested: Callable[[list[str]], dict[str, float]] | None = None) -> LandingPlan:
    """Which days to run for the files that are new or changed since ``cursor``.

    A file version is ``path@size@mtime_ns``. Its days come from its timestamps
    (:func:`anomaly_assets.landing.observation_days`, which does not parse values). A file that is
    unusable (bad shape, not UTF-8, ...) or holds no parseable timestamp covers no day; it is run
    with the newest partition, so that the ingest reads it, records it in ``raw.rejected_files``
    and the ingest checks report it (nothing else would ever look at it). Today's rows are run at
    once, as a micro-batch of today's open partition (each point is scored from the days before
    it and the points before it that day, so its score does not change when the nightly run
    completes the day). Days after today wait in the cursor until they begin; days before the
    first partition cannot be run and are only noted. Files modified less than ``settle_s`` seconds ago are left
    for a later tick (a file still being written would be read half).

    ``ingested(days)`` gives, for the days already ingested, when the run that last ingested each
    started (epoch seconds): a file version older than that run was read by it (e.g. by a shell
    backfill), so those days are not run again for it. Rows for a day that days already ingested
    follow (late, or a corrected file) make one run from that day through today: every later
    day's references included the day, so each is scored again from the one before it.
    """
    latest = open_day(now)
    notes: list[str] = []
    found = discover(root)
    files = [f for f in found.files if f.resolve() not in skip]
    seen: dict[str, list[int]] = {}
    by_day: dict[str, set[str]] = {d: set(v) for d, v in cursor.waiting.items()}
    settling = 0
    new: list[tuple[str, str, int, list[str]]] = []  # (rel, tag, mtime_ns, days) of readable new versions
    for r in found.refused:  # never read: the ingest records it, and its check blocks until it is fixed
        try:
            st = os.lstat(r.path)
        except FileNotFoundError:
            continue
        seen[r.source_file] = version = [st.st_size, st.st_mtime_ns]
        if cursor.files.get(r.source_file) != version:
            notes.append(f"{r.source_file}: refused ({r.reason.split(':')[0]}), run with the newest partition {latest} "
                         "so the ingest records it")
            by_day.setdefault(latest, set()).add(f"{r.source_file}@{st.st_size}@{st.st_mtime_ns}")
    for f in files:
        rel = f.relative_to(root).as_posix()
        try:
            st = f.stat()
        except FileNotFoundError:
            continue  # removed since it was listed
        version = [st.st_size, st.st_mtime_ns]
        if cursor.files.get(rel) == version:
            seen[rel] = version
            continue
        if settle_s > 0 and now.timestamp() - st.st_mtime < settle_s:
            settling += 1
            if rel in cursor.files:
                seen[rel] = cursor.files[rel]  # keep the old version until the new one settles
            continue
        seen[rel] = version
        tag = f"{rel}@{st.st_size}@{st.st_mtime_ns}"
        fd = observation_days(f, root=root)
        if fd.file_error or not fd.days:
            notes.append(f"{rel}: {'unusable' if fd.file_error else 'no parseable timestamp'}, "
                         f"run with the newest partition {latest} so the ingest records it")
            by_day.setdefault(latest, set()).add(tag)
            continue
        early = [d for d in fd.days if d < partition_start]
        if early:
            notes.append(f"{rel}: {len(early)} day(s) before the first partition {partition_start} "
                         f"cannot be run here: `anomaly-assets backfill --from {early[0]}` extends the "
                         f"partitions to them (then reload the code location)")
        new.append((rel, tag, st.st_mtime_ns, [d for d in fd.days if d >= partition_start]))
    done = ingested(sorted({d for *_, days in new for d in days})) if ingested and new else {}
    already = 0
    for rel, tag, mtime_ns, days in new:
        todo = [d for d in days if done.get(d, -1.0) * 1e9 < mtime_ns]
        already += not todo and bool(days)
        for d in todo:
            by_day.setdefault(d, set()).add(tag)
    if already:
        notes.append(f"{already} new file version(s) already ingested by an earlier run (e.g. a shell backfill)")
    if settling:
        notes.append(f"{settling} file(s) modified less than {settle_s:g} s ago: next tick")
    waiting = {d: sorted(v) for d, v in by_day.items() if d > latest}
    ready = sorted(d for d in by_day if d <= latest)
    cursor_out = LandingCursor(files=seen, waiting=waiting)
    later = _days_after(ready[0], latest) if ready and ingested else []
    if later and ingested(later):
        # late or corrected rows: the days after them were scored from references that lacked
        # them, so every day from the earliest one through today is rescored, in order (one run)
        notes.append(f"late or changed rows for {ready[0]}, which days already scored follow: "
                     f"rescoring {ready[0]}..{latest}")
        return LandingPlan([(ready[0], latest, sorted(set().union(*by_day.values()) - {t for d in waiting
                                                                                        for t in by_day[d]}))],
                           cursor_out, notes)
    runs = []
    for first, last in _day_ranges(ready):
        versions = sorted(set().union(*(by_day[d] for d in ready if first <= d <= last)))
        runs.append((first, last, versions))
    return LandingPlan(runs, cursor_out, notes)


def _days_after(first: str, last: str) -> list[str]:
    """The days after ``first`` up to ``last`` (ISO dates)."""
    a, b = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [str(a + dt.timedelta(days=k)) for k in range(1, (b - a).days + 1)]


def ingested_days(instance: dg.DagsterInstance, days: list[str]) -> dict[str, float]:
    """For each of ``days`` that raw/observations was materialized for: when the run that did it
    last started (epoch seconds). Read from the Dagster instance, which the shell's backfills
    share with ``dagster dev``, so the landing sensor does not redo what a backfill ingested."""
    key = dg.AssetKey(["raw", "observations"])
    latest: dict[str, str] = {}  # day -> run_id of its newest materialization
    for i in range(0, len(days), 500):
        want = set(days[i:i + 500])
        cursor = None
        while want - set(latest):
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=sorted(want)), limit=1000, cursor=cursor)
            for r in page.records:  # newest first
                latest.setdefault(r.partition_key, r.run_id)
            if not page.has_more:
                break
            cursor = page.cursor
    if not latest:
        return {}
    runs = {r.dagster_run.run_id: r for r in instance.get_run_records(dg.RunsFilter(run_ids=sorted(set(latest.values()))))}
    out = {}
    for day, run_id in latest.items():
        r = runs.get(run_id)
        if r is not None:
            out[day] = r.start_time or r.create_timestamp.timestamp()
    return out


def landing_run_key(first: str, last: str, versions: list[str]) -> str:
    """Deterministic in (days, file versions): Dagster launches a run key once per sensor."""
    digest = hashlib.sha1("\n".join(versions).encode()).hexdigest()[:16]
    days = first if first == last else f"{first}..{last}"
    return f"landing:{days}:{digest}"


def build_landing_sensor(job, s: AutomationSettings, intraday=None) -> dg.SensorDefinition:
    """Runs the chain for the days that new or changed landing files cover (see :func:`plan_landing_runs`).

    Exactly once per file version: the cursor remembers the versions acted on, and the run key is
    derived from the days and the file versions, so a re-evaluated tick (or a lost cursor) cannot
    launch the same work twice. Sidecars (labels, splits) are not telemetry and are ignored. A run
    of today's open partition alone is a micro-batch: it goes to ``intraday`` when given (the chain
    without the steps that wait for the day to close), any range with a closed day to ``job``.
    """
    jobs = [job] + ([intraday] if intraday is not None else [])

    @dg.sensor(
        name="landing_files",
        jobs=jobs,
        minimum_interval_seconds=s.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New or changed landing files -> the whole chain for the days they cover (today's at once).",
    )
    def landing_files(context: dg.SensorEvaluationContext, landing: LandingFolder):
        try:
            instance = context.instance
        except dg.DagsterInvariantViolationError:  # evaluated without an instance (a test): nothing ingested
            instance = None
        now = dt.datetime.now(dt.timezone.utc)
        try:
            plan = plan_landing_runs(landing.root, landing.sidecars(), LandingCursor.from_json(context.cursor),
                                     now, s.partition_start, s.landing_settle_s,
                                     ingested=lambda days: ingested_days(instance, days) if instance else {})
        except LandingError as e:  # the folder is missing: say so on every tick, do not fail
            return dg.SkipReason(str(e))
        for note in plan.notes:
            context.log.info(note)
        today = open_day(now)
        requests = [
            _run_request(first, last, landing_run_key(first, last, versions), "landing",
                         job_name=(intraday if intraday is not None and first == last == today else job).name,
                         **{"anomaly/files": len(versions)})
            for first, last, versions in plan.runs
        ]
        for (first, last, versions), r in zip(plan.runs, requests):
            context.log.info(f"{first}..{last}: {len(versions)} new or changed file(s), e.g. {versions[0]} -> {r.run_key}")
        skip = None if requests else ("; ".join(plan.notes) or "no new or changed landing files")
        return dg.SensorResult(run_requests=requests, cursor=plan.cursor.to_json(), skip_reason=skip)

    return landing_files


# ------------------------------------------------------------------------------------ alerts


def _root_cause(error) -> str:
    """The innermost error of a Dagster error chain, as 'Type: first line'."""
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return "unknown error"
    first = (error.message or "").strip().splitlines()
    text = first[0] if first else ""
    head, _, rest = text.partition(": ")
    if error.cls_name and head.endswith(error.cls_name):  # 'dagster._core.errors.X: ...' -> 'X: ...'
        text = f"{error.cls_name}: {rest}"
    elif error.cls_name:
        text = f"{error.cls_name}: {text}"
    return text[:300]


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Every asset check of the run that did not pass, once, as 'asset:check [days] (SEVERITY): why'.

    A range run records a check once per day (defs/check_reporting.py): its failed days are listed
    as ranges, with the reason given for the last of them.
    """
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    failed: dict[tuple[str, str], list] = {}
    for r in records:
        ev = r.event_log_entry.dagster_event.asset_check_evaluation_data
        if not ev.passed:
            failed.setdefault((ev.asset_key.to_user_string(), ev.check_name), []).append(ev)
    out = []
    for (asset, name), evs in failed.items():
        days = sorted({ev.partition for ev in evs if ev.partition})
        where = f" [{', '.join(a if a == b else f'{a}..{b}' for a, b in _day_ranges(days))}]" if days else ""
        ev = evs[-1]
        why = f": {ev.description[:200]}" if ev.description else ""
        out.append(f"{asset}:{name}{where} ({ev.severity.value}){why}")
    return out


def run_partitions(run) -> str:
    """The run's partition or range, as tagged."""
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        return start if start == end else f"{start}..{end}"
    return "unpartitioned"


def alert_text(run, headline: str, steps: list[str], checks: list[str], ui_url: str | None) -> str:
    lines = [f"{headline}: job `{run.job_name}`, run `{run.run_id}`, partition {run_partitions(run)}"]
    if trigger := run.tags.get(TRIGGER_TAG) or run.tags.get("dagster/schedule_name") or run.tags.get("dagster/sensor_name"):
        lines[0] += f", triggered by {trigger}"
    lines += [f"• failed step {s}" for s in steps[:10]]
    lines += [f"• failed check {c}" for c in checks[:10]]
    if len(steps) + len(checks) > 20:
        lines.append(f"• ... {len(steps) + len(checks) - 20} more")
    if ui_url:
        lines.append(f"{ui_url}/runs/{run.run_id}")
    return redact("\n".join(lines))  # a step's error may quote a secret; the alert goes to a chat


def deliver(context, text: str, retries: int = 3) -> None:
    """Log the alert, and post it when the webhook is configured (never logging the URL)."""
    context.log.error(text)
    url = webhook_url(FAILURE_WEBHOOK_ENV)
    if url is None:
        context.log.info(f"{FAILURE_WEBHOOK_ENV} is not set: alert logged only")
        return
    status = post_json(url, {"text": text}, name=FAILURE_WEBHOOK_ENV, retries=retries)  # raises naming the variable
    context.log.info(f"alert posted to {FAILURE_WEBHOOK_ENV} (HTTP {status})")


def build_alert_sensors(s: AutomationSettings) -> list[dg.SensorDefinition]:
    """A failed run, and a successful run with failed asset checks, each alert once.

    Both watch every code location's runs (``monitor_all_code_locations``) so that runs started
    from the shell (``anomaly-assets backfill``, which has no code location) alert too. A blocking
    check that fails fails its run, so it is reported by ``run_failure_alerts``; checks that do
    not block are reported by ``failed_check_alerts`` on runs that succeeded: no alert twice.
    """

    @dg.run_failure_sensor(
        name="run_failure_alerts",
        monitor_all_code_locations=True,
        minimum_interval_seconds=s.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Failed runs -> log and {FAILURE_WEBHOOK_ENV} (when set).",
    )
    def run_failure_alerts(context: dg.RunFailureSensorContext):
        steps = [f"{e.step_key}: {_root_cause(e.event_specific_data.error)}" for e in context.get_step_failure_events()]
        if not steps and context.failure_event.message:
            steps = [context.failure_event.message.splitlines()[0][:300]]
        checks = failed_checks(context.instance, context.dagster_run.run_id)
        deliver(context, alert_text(context.dagster_run, ":red_circle: run failed", steps, checks, s.ui_url))

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="failed_check_alerts",
        monitor_all_code_locations=True,
        minimum_interval_seconds=s.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Successful runs with failed asset checks -> log and {FAILURE_WEBHOOK_ENV} (when set).",
    )
    def failed_check_alerts(context: dg.RunStatusSensorContext):
        checks = failed_checks(context.instance, context.dagster_run.run_id)
        # returns nothing: a run status sensor that returns a value stops the tick after that run
        if checks:
            deliver(context, alert_text(context.dagster_run, ":warning: asset checks failed", [], checks, s.ui_url))

    return [run_failure_alerts, failed_check_alerts]


def build_dead_run_sensor() -> dg.SensorDefinition:
    """Free what killed runs hold (``recovery.release_dead_runs``) and remove the temp copies they left
    (``analyst_copy.remove_leftovers``), once a minute.

    The default run launcher cannot tell Dagster's run monitoring that a run's process died, so
    under ``dagster dev`` a killed run would keep its ``duckdb_writer`` slot and block every
    later run; the shell backfill does the same release before each run.
    """

    @dg.sensor(name="dead_run_release", minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Marks failed the runs whose processes are gone and frees their pool slots.")
    def dead_run_release(context: dg.SensorEvaluationContext):
        from anomaly_assets.analyst_copy import remove_leftovers
        from anomaly_assets.recovery import release_dead_runs

        released = release_dead_runs(context.instance)
        for run_id in released:
            context.log.warning(f"run {run_id} died without ending: marked failed, duckdb_writer slot freed")
        for path in remove_leftovers(load_settings().analyst_copy):
            context.log.warning(f"removed {path.name}, a copy a killed run left half-written")
        return dg.SkipReason(f"released {len(released)} dead run(s)" if released else "no dead runs")

    return dead_run_release


def build_automation(job, s: AutomationSettings | None = None, intraday=None) -> tuple[list, list]:
    """(schedules, sensors) for ``job`` (the whole chain) and ``intraday`` (today's micro-batches)."""
    s = s or load_automation_settings()
    return [build_nightly_schedule(job, s)], [build_landing_sensor(job, s, intraday), *build_alert_sensors(s),
                                              build_dead_run_sensor()]
