-- What to count first, per store: the SKUs a ghost_stock alert says have stock on the books and
-- no sales, most money at risk first. A view, so a resolution (the count was done) shows at once.
--
-- materialized: view
--
-- Columns:
--   store: the entity's site (a store for store-SKU entities; NULL if not in marts.entities).
--   count_order: 1 = count this first at this store (most value at risk).
--   entity_id: the store-SKU.
--   units_on_hand: what the system says is on hand (unchanged while nothing sold).
--   units_not_sold: units expected to sell over the alert's window that did not.
--   value_at_risk: money at stake over the alert (lost sales at the entity's price).
--   alert_id: the alert (resolve it with --outcome "counted: 38 units missing").
--   status: open or acknowledged.
--   opened_at: first day with no sales and stock on the books.
--   last_seen_at: latest such day.
--   why: the alert's why.
select
    e.site as store,
    row_number() over (
        partition by e.site order by a.value_at_risk desc nulls last, a.opened_at, a.alert_id
    ) as count_order,
    a.entity_id,
    try_cast(json_extract_string(a.evidence, '$.stock_level') as double) as units_on_hand,
    try_cast(json_extract_string(a.evidence, '$.expected_total') as double)
        - try_cast(json_extract_string(a.evidence, '$.actual_total') as double) as units_not_sold,
    a.value_at_risk,
    a.alert_id,
    a.status,
    a.opened_at,
    a.last_seen_at,
    a.why
from alerts.alerts as a
left join marts.entities as e on e.entity_id = a.entity_id
where a.fault_kind = 'ghost_stock' and a.status in ('open', 'acknowledged')
order by store, count_order
