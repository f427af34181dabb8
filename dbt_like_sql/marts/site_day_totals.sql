-- Per UTC day, site and metric: the day's total against what the detector expected, and the
-- site's flagged points. The part of `marts.business_kpis` that reads every point, kept as a
-- table so that a night reads one day, not the history; `marts.business_kpis` adds the alerts.
--
-- incremental: day
-- A run of partitions rebuilds only their days' rows (sources read from $since to $until); a run
-- without a partition rebuilds the table. A site is the one an entity had when its day was built:
-- after moving entities between sites in the register, materialize this model alone (no
-- partition) to restate older days.
--
-- Columns:
--   day: UTC calendar day (DATE).
--   site: the entities' site or region (marts.entities; the id's prefix when unregistered).
--   metric: the metric (total is meaningful for counts and money; mean for ratios and readings).
--   entities: entities of the site reporting the metric that day.
--   total: sum of the day's values over those entities.
--   expected: sum of the values the detector expected.
--   mean: mean of the day's values (ratios: the average rate).
--   anomalies: flagged points of the site's entities that day (all metrics).
with points as (
    select
        d.entity_id,
        d.metric,
        cast(timezone('UTC', d.ts) as date) as day,
        d.value,
        d.expected
    from features.decomposition as d
    where d.ts >= $since and d.ts < $until
),

sites as (
    select entity_id, site from marts.entities
),

totals as (
    select
        p.day,
        coalesce(s.site, regexp_replace(p.entity_id, '[-_.\s]*\d+$', '')) as site,
        p.metric,
        count(distinct p.entity_id) as entities,
        sum(p.value) as total,
        sum(p.expected) as expected,
        avg(p.value) as mean
    from points as p
    left join sites as s on s.entity_id = p.entity_id
    group by 1, 2, 3
),

flags as (
    select
        cast(timezone('UTC', x.ts) as date) as day,
        coalesce(s.site, regexp_replace(x.entity_id, '[-_.\s]*\d+$', '')) as site,
        count(*) as anomalies
    from scoring.anomaly_scores as x
    left join sites as s on s.entity_id = x.entity_id
    where x.is_anomaly and x.severity <> 'cold_start' and x.ts >= $since and x.ts < $until
    group by 1, 2
)

select
    t.day,
    t.site,
    t.metric,
    t.entities,
    t.total,
    t.expected,
    t.mean,
    coalesce(f.anomalies, 0) as anomalies
from totals as t
left join flags as f on f.day = t.day and f.site = t.site
order by t.day, t.site, t.metric
