-- How each entity is doing now: its last 24 hours and last 7 days of scores, up to the
-- latest scored point of the fleet (data time, so a backfill of old data reads the same as
-- a live night), with its open alerts. One row per entity with a scored point in those 7
-- days; a view, so it is always as current as the scores.
--
-- materialized: view
--
-- Columns:
--   entity_id: entity identifier.
--   as_of: the latest scored timestamp of the fleet; both windows end there.
--   points_24h: scored (non cold-start) points in the 24 hours up to as_of.
--   flagged_24h: flagged points in those 24 hours.
--   critical_24h: critical points in those 24 hours.
--   max_score_24h: highest anomaly_score in those 24 hours (NULL if none scored).
--   points_7d: scored points in the 7 days up to as_of.
--   flagged_7d: flagged points in those 7 days.
--   critical_7d: critical points in those 7 days.
--   flagged_share_7d: flagged_7d / points_7d.
--   last_anomaly_ts: latest flagged point in the 7 days (NULL if none).
--   last_anomaly_why: the `why` of that point.
--   open_alerts: alerts of the entity that are open or acknowledged.
--   rank_now: 1 = least healthy now; by critical_24h, flagged_24h, max_score_24h,
--     critical_7d, flagged_7d (all descending), then entity_id.
with as_of as (
    select max(ts) as as_of
    from scoring.anomaly_scores
    where severity <> 'cold_start'
),

recent as (
    select
        s.entity_id,
        s.ts,
        s.anomaly_score,
        s.severity,
        s.why,
        coalesce(s.is_anomaly, false) as is_flagged,
        s.ts > a.as_of - interval 24 hours as in_24h,
        a.as_of
    from scoring.anomaly_scores as s, as_of as a
    where s.severity <> 'cold_start' and s.ts > a.as_of - interval 7 days and s.ts <= a.as_of
),

per_entity as (
    select
        entity_id,
        any_value(as_of) as as_of,
        count(*) filter (where in_24h) as points_24h,
        count(*) filter (where in_24h and is_flagged) as flagged_24h,
        count(*) filter (where in_24h and severity = 'critical') as critical_24h,
        max(anomaly_score) filter (where in_24h) as max_score_24h,
        count(*) as points_7d,
        count(*) filter (where is_flagged) as flagged_7d,
        count(*) filter (where severity = 'critical') as critical_7d,
        max(ts) filter (where is_flagged) as last_anomaly_ts,
        arg_max(why, ts) filter (where is_flagged) as last_anomaly_why
    from recent
    group by entity_id
),

alerting as (
    select entity_id, count(*) as open_alerts
    from alerts.alerts
    where status in ('open', 'acknowledged')
    group by entity_id
)

select
    p.entity_id,
    p.as_of,
    p.points_24h,
    p.flagged_24h,
    p.critical_24h,
    p.max_score_24h,
    p.points_7d,
    p.flagged_7d,
    p.critical_7d,
    p.flagged_7d / nullif(p.points_7d, 0) as flagged_share_7d,
    p.last_anomaly_ts,
    p.last_anomaly_why,
    coalesce(a.open_alerts, 0) as open_alerts,
    row_number() over (
        order by p.critical_24h desc, p.flagged_24h desc, p.max_score_24h desc nulls last,
            p.critical_7d desc, p.flagged_7d desc, p.entity_id
    ) as rank_now
from per_entity as p
left join alerting as a on a.entity_id = p.entity_id
order by rank_now
