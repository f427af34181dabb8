-- Per-entity health summary over all scored history: one row per entity that
-- appears in scoring.anomaly_scores, ranked so that health_rank = 1 is the
-- least healthy entity of the fleet. Rebuilt whole from the per-day tables
-- (marts.entity_day_health, marts.entity_day_families), so a night reads one
-- row per entity and day, not every score; the percentiles read the scores of
-- the last 7 days only.
--
-- "Scored" points are rows whose severity is not 'cold_start'; cold-start rows
-- (NULL anomaly_score, not enough history yet) are counted separately and never
-- enter percentiles, anomaly counts or events. "Flagged" = is_anomaly on a
-- scored point.
--
-- Columns:
--   entity_id: entity identifier.
--   first_ts: earliest timestamp of the entity (any row, cold-start included).
--   last_ts: latest timestamp of the entity (any row, cold-start included).
--   points_scored: number of scored (non cold-start) points.
--   cold_start_points: number of cold-start points (severity 'cold_start').
--   anomalies: number of flagged points.
--   events: number of anomaly events, i.e. runs of consecutive flagged points;
--     a new event starts at a flagged point whose immediately preceding scored
--     point of the same entity is not flagged (or does not exist).
--   warning_points: scored points with severity 'warning'.
--   critical_points: scored points with severity 'critical'.
--   worst_severity: worst severity seen (critical > warning > normal > cold_start).
--   score_p50: median anomaly_score of the scored points of the last 7 days
--     before the warehouse's newest score (interpolated; NULL if none).
--   score_p95: 95th percentile anomaly_score of those points (interpolated).
--   score_p99: 99th percentile anomaly_score of those points (interpolated).
--   max_score: maximum anomaly_score of the scored points.
--   dominant_family: metric family with the largest summed contribution over the
--     entity's flagged points (scoring.explanations); ties go to the family name
--     that sorts first; NULL if the entity has no explained flagged point.
--   last_anomaly_ts: timestamp of the latest flagged point (NULL if none).
--   last_anomaly_why: the `why` text of the latest flagged point (NULL if none).
--   health_rank: 1 = least healthy; ordered by critical_points desc, anomalies
--     desc, max_score desc (NULL last), entity_id.
with scored_days as (
    select
        entity_id,
        events,
        -- a run of flags that goes on over midnight is one event, counted on its first day
        first_flagged and coalesce(lag(last_flagged) over (partition by entity_id order by day), false)
            as continued
    from marts.entity_day_health
    where points_scored > 0
),

events as (
    select entity_id, sum(events) - count(*) filter (where continued) as events
    from scored_days
    group by entity_id
),

family_contribution as (
    select entity_id, family, sum(contribution) as contribution
    from marts.entity_day_families
    group by entity_id, family
),

dominant as (
    select entity_id, family as dominant_family
    from family_contribution
    qualify row_number() over (
        partition by entity_id order by contribution desc, family
    ) = 1
),

recent as (
    select
        entity_id,
        quantile_cont(anomaly_score, [0.50, 0.95, 0.99]) as p
    from scoring.anomaly_scores
    where severity <> 'cold_start'
        and ts >= (select max(ts) from scoring.anomaly_scores) - interval 7 days
    group by entity_id
),

per_entity as (
    select
        entity_id,
        min(first_ts) as first_ts,
        max(last_ts) as last_ts,
        sum(points_scored) as points_scored,
        sum(cold_start_points) as cold_start_points,
        sum(anomalies) as anomalies,
        sum(warning_points) as warning_points,
        sum(critical_points) as critical_points,
        max(worst_severity_level) as worst_severity_level,
        max(max_score) as max_score,
        max(last_anomaly_ts) as last_anomaly_ts,
        arg_max(last_anomaly_why, last_anomaly_ts) as last_anomaly_why
    from marts.entity_day_health
    group by entity_id
)

select
    pe.entity_id,
    pe.first_ts,
    pe.last_ts,
    cast(pe.points_scored as bigint) as points_scored,
    cast(pe.cold_start_points as bigint) as cold_start_points,
    cast(pe.anomalies as bigint) as anomalies,
    cast(coalesce(ev.events, 0) as bigint) as events,
    cast(pe.warning_points as bigint) as warning_points,
    cast(pe.critical_points as bigint) as critical_points,
    case pe.worst_severity_level
        when 3 then 'critical'
        when 2 then 'warning'
        when 1 then 'normal'
        else 'cold_start'
    end as worst_severity,
    r.p[1] as score_p50,
    r.p[2] as score_p95,
    r.p[3] as score_p99,
    pe.max_score,
    d.dominant_family,
    pe.last_anomaly_ts,
    pe.last_anomaly_why,
    row_number() over (
        order by
            pe.critical_points desc,
            pe.anomalies desc,
            pe.max_score desc nulls last,
            pe.entity_id
    ) as health_rank
from per_entity as pe
left join events as ev on ev.entity_id = pe.entity_id
left join dominant as d on d.entity_id = pe.entity_id
left join recent as r on r.entity_id = pe.entity_id
order by health_rank
