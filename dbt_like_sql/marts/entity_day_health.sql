-- Per UTC day and entity: what `marts.entity_health` sums over an entity's history, kept as a
-- table so that a night reads one day of scores, not all of them.
--
-- incremental: day
-- A run of partitions rebuilds only their days' rows (scores read from $since to $until); a run
-- without a partition rebuilds the table.
--
-- "Scored" points are rows whose severity is not 'cold_start'; "flagged" = is_anomaly on a
-- scored point.
--
-- Columns:
--   day: UTC calendar day (DATE).
--   entity_id: entity identifier.
--   first_ts: the entity's earliest timestamp that day (any row, cold-start included).
--   last_ts: its latest timestamp that day.
--   points_scored: scored (non cold-start) points.
--   cold_start_points: cold-start points.
--   anomalies: flagged points.
--   events: flagged points whose preceding scored point that day is not flagged (the day's
--     first scored point counts when flagged); entity_health joins runs across midnight.
--   first_flagged: whether the day's first scored point is flagged (NULL: none scored).
--   last_flagged: whether the day's last scored point is flagged (NULL: none scored).
--   warning_points: scored points with severity 'warning'.
--   critical_points: scored points with severity 'critical'.
--   worst_severity_level: 3 critical, 2 warning, 1 normal, 0 cold_start.
--   max_score: maximum anomaly_score of the scored points.
--   last_anomaly_ts: the latest flagged point that day (NULL if none).
--   last_anomaly_why: its why.
with points as (
    select
        entity_id,
        cast(timezone('UTC', ts) as date) as day,
        ts,
        anomaly_score,
        severity,
        why,
        severity = 'cold_start' as is_cold_start,
        coalesce(is_anomaly, false) and severity <> 'cold_start' as is_flagged
    from scoring.anomaly_scores
    where ts >= $since and ts < $until
),

scored as (
    select
        entity_id,
        day,
        ts,
        is_flagged,
        lag(is_flagged) over (partition by entity_id, day order by ts) as prev_flagged
    from points
    where not is_cold_start
),

runs as (
    select
        entity_id,
        day,
        count(*) filter (where is_flagged and not coalesce(prev_flagged, false)) as events,
        arg_min(is_flagged, ts) as first_flagged,
        arg_max(is_flagged, ts) as last_flagged
    from scored
    group by entity_id, day
),

per_day as (
    select
        entity_id,
        day,
        min(ts) as first_ts,
        max(ts) as last_ts,
        count(*) filter (where not is_cold_start) as points_scored,
        count(*) filter (where is_cold_start) as cold_start_points,
        count(*) filter (where is_flagged) as anomalies,
        count(*) filter (where not is_cold_start and severity = 'warning') as warning_points,
        count(*) filter (where not is_cold_start and severity = 'critical') as critical_points,
        max(case severity
            when 'critical' then 3
            when 'warning' then 2
            when 'normal' then 1
            else 0
        end) as worst_severity_level,
        max(anomaly_score) filter (where not is_cold_start) as max_score,
        max(ts) filter (where is_flagged) as last_anomaly_ts,
        arg_max(why, ts) filter (where is_flagged) as last_anomaly_why
    from points
    group by entity_id, day
)

select
    d.day,
    d.entity_id,
    d.first_ts,
    d.last_ts,
    d.points_scored,
    d.cold_start_points,
    d.anomalies,
    coalesce(r.events, 0) as events,
    r.first_flagged,
    r.last_flagged,
    d.warning_points,
    d.critical_points,
    d.worst_severity_level,
    d.max_score,
    d.last_anomaly_ts,
    d.last_anomaly_why
from per_day as d
left join runs as r on r.entity_id = d.entity_id and r.day = d.day
order by d.day, d.entity_id
