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
    -- per entity first: the site of each entity is then looked up once, not once per point
    select
        d.entity_id,
        d.metric,
        cast(timezone('UTC', d.ts) as date) as day,
        sum(d.value) as total,
        count(d.value) as n_values,
        sum(d.expected) as expected
    from features.decomposition as d
    where d.ts >= $since and d.ts < $until
    group by 1, 2, 3
),

flagged as (
    select
        x.entity_id,
        cast(timezone('UTC', x.ts) as date) as day,
        count(*) as anomalies
    from scoring.anomaly_scores as x
    where x.is_anomaly and x.severity <> 'cold_start' and x.ts >= $since and x.ts < $until
    group by 1, 2
),

sites as (
    select
        e.entity_id,
        coalesce(s.site, regexp_replace(e.entity_id, '[-_.\s]*\d+$', '')) as site
    from (select distinct entity_id from points union select distinct entity_id from flagged) as e
    left join marts.entities as s on s.entity_id = e.entity_id
),

totals as (
    select
        p.day,
        s.site,
        p.metric,
        count(*) as entities,
        sum(p.total) as total,
        sum(p.expected) as expected,
        sum(p.total) / nullif(sum(p.n_values), 0) as mean
    from points as p
    join sites as s on s.entity_id = p.entity_id
    group by 1, 2, 3
),

flags as (
    select f.day, s.site, sum(f.anomalies) as anomalies
    from flagged as f
    join sites as s on s.entity_id = f.entity_id
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
    cast(coalesce(f.anomalies, 0) as bigint) as anomalies
from totals as t
left join flags as f on f.day = t.day and f.site = t.site
order by t.day, t.site, t.metric
