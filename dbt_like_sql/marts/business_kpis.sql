-- The executive's page: per UTC day, site and metric, the total and what was expected, with the
-- alerts open that day at the site, the money they put at risk, and how right alerts have been
-- (feedback) and what they recovered, up to that day. Export it with
-- `anomaly-assets export marts.business_kpis --format csv`.
--
-- incremental: day
-- A micro-batch rebuilds today's rows only (sources read from $since on); every other run
-- rebuilds the table, so feedback given today on an older alert reaches its days at night.
--
-- Columns:
--   day: UTC calendar day (DATE).
--   site: the entities' site or region (marts.entities; the id's prefix when unregistered).
--   metric: the metric (total is meaningful for counts and money; mean for ratios and readings).
--   entities: entities of the site reporting the metric that day.
--   total: sum of the day's values over those entities.
--   expected: sum of the values the detector expected.
--   vs_expected: (total - expected) / expected; NULL when nothing was expected.
--   mean: mean of the day's values (ratios: the average rate).
--   anomalies: flagged points of the site's entities that day (all metrics).
--   alerts_open: alerts (not pending or expired) open at some time that day at the site.
--   money_at_risk: value at risk of those alerts (business rules; 0 when none says).
--   alerts_with_feedback: alerts of the site opened up to that day with a verdict.
--   feedback_precision: true / (true + false) positives among them; NULL without feedback.
--   value_recovered: money people reported recovered on the site's alerts opened up to that day.
with points as (
    select
        d.entity_id,
        d.metric,
        cast(timezone('UTC', d.ts) as date) as day,
        d.value,
        d.expected
    from features.decomposition as d
    where d.ts >= $since
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
    where x.is_anomaly and x.severity <> 'cold_start' and x.ts >= $since
    group by 1, 2
),

verdicts as (
    select alert_id, verdict
    from alerts.alert_events
    where action = 'feedback'
    qualify row_number() over (partition by alert_id order by "at" desc) = 1
),

recovered as (
    select alert_id, value_recovered
    from alerts.alert_events
    where value_recovered is not null
    qualify row_number() over (partition by alert_id order by "at" desc) = 1
),

shown as (
    select
        a.alert_id,
        coalesce(s.site, regexp_replace(a.entity_id, '[-_.\s]*\d+$', '')) as site,
        cast(timezone('UTC', a.opened_at) as date) as first_day,
        cast(timezone('UTC', coalesce(a.resolved_at, a.last_seen_at)) as date) as last_day,
        a.status,
        coalesce(a.value_at_risk, 0) as value_at_risk,
        v.verdict,
        r.value_recovered
    from alerts.alerts as a
    left join sites as s on s.entity_id = a.entity_id
    left join verdicts as v on v.alert_id = a.alert_id
    left join recovered as r on r.alert_id = a.alert_id
    where a.status not in ('pending', 'expired')
),

days as (
    select distinct day, site from totals
),

open_alerts as (
    select
        d.day,
        d.site,
        count(*) as alerts_open,
        sum(sh.value_at_risk) as money_at_risk
    from days as d
    join shown as sh
        on sh.site = d.site
        and sh.first_day <= d.day
        and (sh.last_day >= d.day or sh.status in ('open', 'acknowledged'))
    group by 1, 2
),

outcomes as (
    select
        d.day,
        d.site,
        count(sh.verdict) as alerts_with_feedback,
        count(*) filter (where sh.verdict = 'true_positive') as tp,
        count(*) filter (where sh.verdict = 'false_positive') as fp,
        sum(sh.value_recovered) as value_recovered
    from days as d
    join shown as sh on sh.site = d.site and sh.first_day <= d.day
    group by 1, 2
)

select
    t.day,
    t.site,
    t.metric,
    t.entities,
    t.total,
    t.expected,
    case when t.expected <> 0 then (t.total - t.expected) / abs(t.expected) end as vs_expected,
    t.mean,
    coalesce(f.anomalies, 0) as anomalies,
    coalesce(o.alerts_open, 0) as alerts_open,
    coalesce(o.money_at_risk, 0) as money_at_risk,
    coalesce(c.alerts_with_feedback, 0) as alerts_with_feedback,
    case when c.tp + c.fp > 0 then c.tp / (c.tp + c.fp) end as feedback_precision,
    c.value_recovered
from totals as t
left join flags as f on f.day = t.day and f.site = t.site
left join open_alerts as o on o.day = t.day and o.site = t.site
left join outcomes as c on c.day = t.day and c.site = t.site
order by t.day, t.site, t.metric
