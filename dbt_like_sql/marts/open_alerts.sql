-- The alerts that need someone now: open or acknowledged, worst first, with the entity's
-- site from marts.entities. A view, so an acknowledgement or a resolution shows at once.
--
-- materialized: view
--
-- Columns:
--   alert_id: alert identifier (an id prefix of 6+ characters works in `anomaly-assets alerts ...`).
--   severity: info, warning or critical (the worst seen).
--   status: open or acknowledged.
--   team: whose job it is.
--   entity_id: entity identifier.
--   site: the entity's site or peer group (NULL if the entity is not in marts.entities).
--   rule: the rule that fired.
--   fault_kind: the diagnosis, when a rule gives one.
--   title: short headline.
--   why: what deviates, by how much, since when, what to do.
--   confidence: 0-1, rule precision from feedback x strength of the evidence.
--   opened_at: first hit (data time).
--   last_seen_at: latest hit (data time).
--   hits: rule hits folded into the alert.
select
    a.alert_id,
    a.severity,
    a.status,
    a.team,
    a.entity_id,
    e.site,
    a.rule,
    a.fault_kind,
    a.title,
    a.why,
    a.confidence,
    a.opened_at,
    a.last_seen_at,
    a.hits
from alerts.alerts as a
left join marts.entities as e on e.entity_id = a.entity_id
where a.status in ('open', 'acknowledged')
order by
    case a.severity when 'critical' then 0 when 'warning' then 1 else 2 end,
    a.confidence desc,
    a.last_seen_at desc,
    a.alert_id
