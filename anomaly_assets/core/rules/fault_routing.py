"""Did known faults reach the right team? (the demo's and the benchmarks' routing report)."""

from __future__ import annotations

import pandas as pd

from anomaly_assets.alert_config import AlertRules
from anomaly_assets.core.rules.folding import route


def fault_routing(alerts: pd.DataFrame, faults: pd.DataFrame, cfg: AlertRules,
                  slack: pd.Timedelta = pd.Timedelta(hours=6)) -> pd.DataFrame:
    """Per known incident (entity and fault kind; its windows merged): was there an alert, and did
    one reach the team the routing gives that fault kind?

    An alert counts for an incident when it is on the same entity and ``[opened_at, last_seen_at]``
    overlaps ``[start, end + slack]`` (detection lags: evidence accumulates).
    faults : entity_id, fault_kind, start, end.  Returns one row per incident.
    """
    f = faults.assign(start=pd.to_datetime(faults["start"], utc=True), end=pd.to_datetime(faults["end"], utc=True))
    inc = f.groupby(["entity_id", "fault_kind"], as_index=False).agg(start=("start", "min"), end=("end", "max"))
    probe = cfg.rules[0] if cfg.rules else None
    inc["expected_team"] = [route(cfg, probe.model_copy(update={"team": None}), fault_kind=k) if probe
                            else cfg.routing.default_team for k in inc["fault_kind"]]
    a = alerts.assign(opened_at=pd.to_datetime(alerts["opened_at"], utc=True),
                      last_seen_at=pd.to_datetime(alerts["last_seen_at"], utc=True))
    m = inc.merge(a[["entity_id", "alert_id", "team", "opened_at", "last_seen_at"]], on="entity_id", how="left")
    m["overlaps"] = (m["opened_at"] <= m["end"] + slack) & (m["last_seen_at"] >= m["start"])
    m = m[m["overlaps"]].sort_values("opened_at")
    teams = m.groupby(["entity_id", "fault_kind"])["team"].agg(list)
    first = m.groupby(["entity_id", "fault_kind"])["team"].first()
    key = pd.MultiIndex.from_frame(inc[["entity_id", "fault_kind"]])
    inc["teams"] = [teams.get(k, []) for k in key]
    inc["alerted"] = inc["teams"].map(len) > 0
    inc["right_team"] = [e in t for e, t in zip(inc["expected_team"], inc["teams"])]
    inc["first_alert_team"] = [first.get(k) for k in key]
    return inc
