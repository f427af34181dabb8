-- Fleet-wide daily health: one row per UTC calendar day that has any row in
-- scoring.anomaly_scores, over all scored history.
--
-- incremental: day
-- A run of partitions rebuilds only their days' rows (scores read from $since to
-- $until); a run without a partition rebuilds the table.
--
-- "Scored" points are rows whose severity is not 'cold_start' (cold-start rows
-- have a NULL anomaly_score and are left out of every count below);
-- "flagged" = is_anomaly on a scored point. Days are UTC regardless of the
-- session time zone.
--
-- Columns:
--   day: UTC calendar day of the points (DATE).
--   entities_scored: distinct entities with at least one scored point that day.
--   points_scored: number of scored points that day.
--   anomalies: number of flagged points that day.
--   entities_with_anomalies: distinct entities with at least one flagged point.
--   warning_points: scored points with severity 'warning'.
--   critical_points: scored points with severity 'critical'.
--   anomaly_rate: anomalies / points_scored (NULL when nothing was scored).
--   top_entities: up to 5 entities with the most flagged points that day, most
--     first (ties by entity_id), formatted like 'pump-0007 (12), pump-0031 (4)';
--     NULL when the day has no flagged point.
with points as (
    select
        entity_id,
        cast(timezone('UTC', ts) as date) as day,
        severity,
        severity <> 'cold_start' as is_scored,
        coalesce(is_anomaly, false) and severity <> 'cold_start' as is_flagged
    from scoring.anomaly_scores
    where ts >= $since and ts < $until
),

daily as (
    select
        day,
        count(distinct entity_id) filter (where is_scored) as entities_scored,
        count(*) filter (where is_scored) as points_scored,
        count(*) filter (where is_flagged) as anomalies,
        count(distinct entity_id) filter (where is_flagged) as entities_with_anomalies,
        count(*) filter (where is_scored and severity = 'warning') as warning_points,
        count(*) filter (where is_scored and severity = 'critical') as critical_points
    from points
    group by day
),

entity_day as (
    select
        day,
        entity_id,
        count(*) as flagged,
        row_number() over (partition by day order by count(*) desc, entity_id) as flag_rank
    from points
    where is_flagged
    group by day, entity_id
),

top_per_day as (
    select
        day,
        string_agg(
            entity_id || ' (' || flagged || ')', ', ' order by flag_rank
        ) as top_entities
    from entity_day
    where flag_rank <= 5
    group by day
)

select
    d.day,
    d.entities_scored,
    d.points_scored,
    d.anomalies,
    d.entities_with_anomalies,
    d.warning_points,
    d.critical_points,
    d.anomalies / nullif(d.points_scored, 0) as anomaly_rate,
    t.top_entities
from daily as d
left join top_per_day as t on t.day = d.day
order by d.day
