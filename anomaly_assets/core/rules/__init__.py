"""Alert rules: from scores, explanations and the decomposition to alerts people can act on.

Pure pandas/numpy: frames in, frames out; nothing here reads or writes anything.

Two steps:

1. :func:`find_hits` evaluates every rule at every timestamp of ``[start, end)`` and returns one
   *hit* per rule, entity and timestamp where the rule's condition holds (earlier rows given in the
   inputs only fill the rules' windows):

   - ``burst``: at a flagged point, the entity has at least ``count`` flagged points in
     ``[ts - within, ts]`` (both ends inclusive). measure = that count.
   - ``dominant_family``: at a flagged point, the rule's families carry at least ``min_share`` of
     the deviation (each at least ``min_each``) and the largest of their metrics' |actual -
     expected| reaches the materiality floor. measure = the share.
   - ``sustained_deviation``: ``periods`` consecutive observations of one metric at least
     ``floor`` (metric units) and ``min_z`` (σ) above / below / away from expected; with
     ``condition: stuck``, ``periods`` identical values (within ``tolerance``) of a metric that
     changed at most steps before the run. measure = the run length (observations).
   - ``fleet_outlier``: the entity's ``residual_z`` departs from its peer group's (same site, or
     same tag) at the same timestamp: robust z = (rz - median) / (1.4826 MAD) over the group,
     at least ``z`` for ``periods`` consecutive observations, with at least ``min_peers`` peers
     and a material residual. measure = |robust z|.

2. :func:`fold_alerts` turns hits into alerts, one per rule and entity at a time (dedup): a hit
   within ``resolve_after`` of the alert's last hit continues it; within ``resolve_after +
   cooldown`` it reopens it (flapping does not page again); later, a new alert opens. An alert
   whose last hit is more than ``resolve_after`` before the data clock is resolved. ``alert_id``
   = hash(rule, entity, opened_at), so re-running the same data gives the same ids. What people
   did (acknowledge, resolve) is given as ``human`` and is never undone: a resolved alert stays
   resolved and absorbs hits up to its last_seen_at; later hits open a new alert. An alert with
   fewer hits than its rule's ``min_hits`` is ``pending`` (kept, not shown or sent) and ``expired``
   if it goes quiet so.

Confidence = p_rule x (0.5 + 0.5 x strength): p_rule is the rule's precision from feedback,
shrunk to its prior (``(tp + 5 prior) / (tp + fp + 5)``); strength averages how far the peak hit
cleared the rule's threshold (0 at the threshold, 1 at twice it) and how much support the alert
has (``1 - exp(-hits / 3)``).

Modules, in the order the data flows: ``inputs`` (what the rules read), ``conditions`` (one
function per generic rule type), ``business`` (rules on money and stock), ``peers``, ``hits`` (every
rule's hits and the guards across rules), ``folding`` (hits to alerts), ``evidence`` and
``describe`` (the words), ``fault_routing`` (did known faults reach the right team).
"""

from anomaly_assets.core.rules.business import business_gap_hits, readings_needed  # noqa: F401
from anomaly_assets.core.rules.conditions import (  # noqa: F401
    burst_hits, dominant_family_hits, fleet_outlier_hits, sustained_hits,
)
from anomaly_assets.core.rules.describe import alert_rows, describe  # noqa: F401
from anomaly_assets.core.rules.evidence import EvidenceBuilder  # noqa: F401
from anomaly_assets.core.rules.fault_routing import fault_routing  # noqa: F401
from anomaly_assets.core.rules.folding import (  # noqa: F401
    alert_id, apply_clock, confidence, fold_alerts, hit_severity, route, rule_precision, team_for_fault_kind,
)
from anomaly_assets.core.rules.hits import find_hits  # noqa: F401
from anomaly_assets.core.rules.inputs import ALERT_COLUMNS, HIT_COLUMNS, MAD_FLOOR, RuleInputs, entity_info  # noqa: F401
from anomaly_assets.core.rules.peers import peer_groups, peer_stats  # noqa: F401
