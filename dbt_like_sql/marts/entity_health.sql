-- Per-entity health summary over all scored history: one row per entity that
-- appears in scoring.anomaly_scores, ranked so that health_rank = 1 is the
-- least healthy entity of the fleet. Full rebuild (unpartitioned).
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
--   score_p50: median anomaly_score of the scored points (interpolated).
--   score_p95: 95th percentile anomaly_score of the scored points (interpolated).
--   score_p99: 99th percentile anomaly_score of the scored points (interpolated).
--   max_score: maximum anomaly_score of the scored points.
--   dominant_family: metric family with the largest summed contribution over the
--     entity's flagged points (scoring.explanations); ties go to the family name
--     that sorts first; NULL if the entity has no explained flagged point.
--   last_anomaly_ts: timestamp of the latest flagged point (NULL if none).
--   last_anomaly_why: the `why` text of the latest flagged point (NULL if none).
--   health_rank: 1 = least healthy; ordered by critical_points desc, anomalies
--     desc, max_score desc (NULL last), entity_id.
with points as (
    select
        entity_id,
        ts,
        anomaly_score,
        severity,
        why,
        severity = 'cold_start' as is_cold_start,
        coalesce(is_anomaly, false) and severity <> 'cold_start' as is_flagged
    from scoring.anomaly_scores
),

scored as (
    select
        entity_id,
        ts,
        is_flagged,
        -- flag of the immediately preceding *scored* point of the same entity
        lag(is_flagged) over (partition by entity_id order by ts) as prev_flagged
    from points
    where not is_cold_start
),

events as (
    select entity_id, count(*) as events
    from scored
    where is_flagged and not coalesce(prev_flagged, false)
    group by entity_id
),

family_contribution as (
    select e.entity_id, e.family, sum(e.contribution) as contribution
    from scoring.explanations as e
    inner join points as p
        on p.entity_id = e.entity_id and p.ts = e.ts and p.is_flagged
    group by e.entity_id, e.family
),

dominant as (
    select entity_id, family as dominant_family
    from family_contribution
    qualify row_number() over (
        partition by entity_id order by contribution desc, family
    ) = 1
),

per_entity as (
    select
        entity_id,
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
        quantile_cont(anomaly_score, 0.50) filter (where not is_cold_start) as score_p50,
        quantile_cont(anomaly_score, 0.95) filter (where not is_cold_start) as score_p95,
        quantile_cont(anomaly_score, 0.99) filter (where not is_cold_start) as score_p99,
        max(anomaly_score) filter (where not is_cold_start) as max_score,
        max(ts) filter (where is_flagged) as last_anomaly_ts,
        arg_max(why, ts) filter (where is_flagged) as last_anomaly_why
    from points
    group by entity_id
)

select
    pe.entity_id,
    pe.first_ts,
    pe.last_ts,
    pe.points_scored,
    pe.cold_start_points,
    pe.anomalies,
    coalesce(ev.events, 0) as events,
    pe.warning_points,
    pe.critical_points,
    case pe.worst_severity_level
        when 3 then 'critical'
        when 2 then 'warning'
        when 1 then 'normal'
        else 'cold_start'
    end as worst_severity,
    pe.score_p50,
    pe.score_p95,
    pe.score_p99,
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
order by health_rank
