-- Per UTC day, entity and metric family: the summed contribution of the family to the entity's
-- flagged points that day (scoring.explanations), for `marts.entity_health`'s dominant family.
--
-- incremental: day
-- A run of partitions rebuilds only their days' rows (sources read from $since to $until); a run
-- without a partition rebuilds the table.
--
-- Columns:
--   day: UTC calendar day (DATE).
--   entity_id: entity identifier.
--   family: metric family (temperature, vibration, voltage, ...).
--   contribution: summed share of the deviation over the day's flagged points.
select
    cast(timezone('UTC', e.ts) as date) as day,
    e.entity_id,
    e.family,
    sum(e.contribution) as contribution
from scoring.explanations as e
inner join scoring.anomaly_scores as p
    on p.entity_id = e.entity_id and p.ts = e.ts
    and p.is_anomaly and p.severity <> 'cold_start'
where e.ts >= $since and e.ts < $until and p.ts >= $since and p.ts < $until
group by 1, 2, 3
order by 1, 2, 3
