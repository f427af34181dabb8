-- The executive's page: per UTC day, site and metric, the total and what was expected, with the
-- alerts open that day at the site, the money they put at risk, and how right alerts have been
-- (feedback) and what they recovered, up to that day. Export it with
-- `anomaly-assets export marts.business_kpis --format csv`.
--
-- materialized: view
-- A view over marts.site_day_totals (the part that reads every point, built a day at a time):
-- the alert columns are read when it is queried, so feedback given today on an old alert reaches
-- the days it counts in at once, at a cost that grows with the alerts and site-days, not the points.
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
with sites as (
    select entity_id, site from marts.entities
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
        coalesce(s.site, regexp_replace(a.entity_id, '[-_.\s]*\d+$', '')) as site,
        cast(timezone('UTC', a.opened_at) as date) as first_day,
        cast(timezone('UTC', coalesce(a.resolved_at, a.last_seen_at)) as date) as last_day,
        a.status in ('open', 'acknowledged') as still_open,
        coalesce(a.value_at_risk, 0) as value_at_risk,
        v.verdict,
        r.value_recovered
    from alerts.alerts as a
    left join sites as s on s.entity_id = a.entity_id
    left join verdicts as v on v.alert_id = a.alert_id
    left join recovered as r on r.alert_id = a.alert_id
    where a.status not in ('pending', 'expired')
),

-- An alert counts from its first day on, and is open from then until its last day (or still):
-- running sums of these changes over each site's days give the columns, one pass over the alerts.
changes as (
    select
        site,
        first_day as day,
        1 as opened,
        value_at_risk as risk,
        cast(verdict is not null as integer) as with_feedback,
        cast(verdict = 'true_positive' as integer) as tp,
        cast(verdict = 'false_positive' as integer) as fp,
        value_recovered
    from shown
    union all
    -- an alert resolved (wall time) before the data time it opened at was open on no day
    select site, greatest(last_day + 1, first_day), -1, -value_at_risk, 0, 0, 0, null
    from shown
    where not still_open
),

timeline as (
    select distinct day, site, 0 as opened, 0.0 as risk, 0 as with_feedback, 0 as tp,
        0 as fp, cast(null as double) as value_recovered, true as is_day
    from marts.site_day_totals
    union all
    select day, site, opened, risk, with_feedback, tp, fp, value_recovered, false from changes
),

running as (
    select
        day,
        site,
        is_day,
        sum(opened) over upto as alerts_open,
        sum(risk) over upto as money_at_risk,
        sum(with_feedback) over upto as alerts_with_feedback,
        sum(tp) over upto as tp,
        sum(fp) over upto as fp,
        sum(value_recovered) over upto as value_recovered
    from timeline
    window upto as (partition by site order by day range between unbounded preceding and current row)
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
    t.anomalies,
    cast(r.alerts_open as bigint) as alerts_open,
    -- with no alert open, exactly 0 (not what adding and taking away the same money leaves)
    case when r.alerts_open = 0 then 0.0 else r.money_at_risk end as money_at_risk,
    cast(r.alerts_with_feedback as bigint) as alerts_with_feedback,
    case when r.tp + r.fp > 0 then r.tp / (r.tp + r.fp) end as feedback_precision,
    r.value_recovered
from marts.site_day_totals as t
join running as r on r.day = t.day and r.site = t.site and r.is_day
order by t.day, t.site, t.metric
