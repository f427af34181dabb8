"""What people and the delivery sensor do to alerts, recorded in alerts.alert_events.

- ``ack`` / ``resolve`` / ``feedback`` (``anomaly-assets alerts ...``): one event, and the alert's
  status, in one transaction. The alerts asset reads the events on every run, so a re-run never
  undoes what a person did.
- Delivery: new alerts, and alerts whose severity rose since they were last sent, are posted to
  the team's webhook (``ANOMALY_ALERT_WEBHOOK_URL_<TEAM>``, else ``ANOMALY_ALERT_WEBHOOK_URL``) as
  Slack-compatible JSON. Each success is recorded as a ``delivered`` event right after the post, in
  DuckDB, so another tick or a restarted process does not send it again. URLs come only from the
  environment and are never logged or stored: events name the variable.

Connections are short: one per read, one per write; a busy warehouse (another process writing) is
retried for a few seconds, then reported.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import re
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from anomaly_assets import warehouse as wh
from anomaly_assets.alert_config import SEVERITY_RANK
from anomaly_assets.webhooks import WebhookError, post_json, webhook_url

WEBHOOK_ENV = "ANOMALY_ALERT_WEBHOOK_URL"
VERDICTS = ("true_positive", "false_positive")
HUMAN_ACTIONS = ("ack", "resolve", "feedback")


class AlertActionError(ValueError):
    """An action on an alert cannot be done; the message says why and what would work."""


@contextmanager
def connect(path: str | Path, *, read_only: bool = False, wait_s: float = 10.0):
    """A short DuckDB connection, retried while another process holds the write lock."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield con
    finally:
        con.close()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _has_tables(con) -> bool:
    return con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'alerts'").fetchone()[0] >= 2


def events(con) -> pd.DataFrame:
    if not _has_tables(con):
        return pd.DataFrame(columns=wh.ALERT_EVENTS.column_names)
    return con.execute("SELECT * FROM alerts.alert_events ORDER BY \"at\"").df()


def human_states(ev: pd.DataFrame) -> dict[str, str]:
    """alert_id -> 'resolved' | 'acknowledged' | 'feedback' from people's events (resolve wins)."""
    state = ev["action"].map({"resolve": "resolved", "ack": "acknowledged", "feedback": "feedback"})
    mine = state.notna().to_numpy()
    if not mine.any():
        return {}
    people = pd.DataFrame({"alert_id": ev["alert_id"].to_numpy()[mine], "state": state.to_numpy()[mine]})
    people["rank"] = people["state"].map({"feedback": 0, "acknowledged": 1, "resolved": 2})
    best = people.loc[people.groupby("alert_id", sort=False)["rank"].idxmax()]  # alerts in first-event order
    return dict(zip(best["alert_id"], best["state"]))


def latest_verdicts(ev: pd.DataFrame) -> pd.DataFrame:
    """alert_id, verdict: the latest feedback per alert."""
    fb = ev[ev["action"] == "feedback"].sort_values("at")
    return fb.drop_duplicates("alert_id", keep="last")[["alert_id", "verdict"]]


def recovered_values(ev: pd.DataFrame) -> pd.DataFrame:
    """alert_id, value_recovered: the latest amount a person reported per alert (resolve or feedback)."""
    if "value_recovered" not in ev.columns:
        return pd.DataFrame(columns=["alert_id", "value_recovered"])
    r = ev[ev["value_recovered"].notna()].sort_values("at")
    return r.drop_duplicates("alert_id", keep="last")[["alert_id", "value_recovered"]]


def feedback_counts(con) -> dict[str, tuple[int, int]]:
    """rule -> (true positives, false positives) from the latest verdict per alert."""
    ev = events(con)
    if ev.empty:
        return {}
    v = latest_verdicts(ev)
    if v.empty:
        return {}
    rules = con.execute("SELECT alert_id, rule FROM alerts.alerts").df()
    m = v.merge(rules, on="alert_id")
    return {r: (int((g["verdict"] == "true_positive").sum()), int((g["verdict"] == "false_positive").sum()))
            for r, g in m.groupby("rule")}


def find_alert(con, ident: str) -> pd.Series:
    """The alert whose id is ``ident`` or starts with it (at least 6 characters)."""
    if not _has_tables(con):
        raise AlertActionError("no alerts yet: the warehouse has no alerts tables (materialize alerts/alerts first)")
    ident = ident.strip().lower()
    if len(ident) < 6:
        raise AlertActionError(f"alert id '{ident}' is too short: give at least 6 characters of the id")
    rows = con.execute("SELECT * FROM alerts.alerts WHERE alert_id LIKE ? || '%'", [ident]).df()
    if rows.empty:
        raise AlertActionError(f"no alert with id '{ident}' (see `anomaly-assets alerts list`)")
    if len(rows) > 1:
        raise AlertActionError(f"alert id '{ident}' matches {len(rows)} alerts: give more characters")
    return rows.iloc[0]


def act(path: str | Path, ident: str, action: str, *, note: str | None = None, verdict: str | None = None,
        actor: str | None = None, now: dt.datetime | None = None, outcome: str | None = None,
        recovered: float | None = None) -> pd.Series:
    """Acknowledge, resolve or give feedback on an alert; returns the alert row after the action.

    ``outcome`` (what was found: "counted: 38 units missing") and ``recovered`` (money recovered or
    saved thanks to the alert) go with a resolution or feedback; ``evaluation.alert_precision`` and
    ``marts.business_kpis`` sum ``recovered`` per rule.
    """
    if action not in HUMAN_ACTIONS:
        raise AlertActionError(f"unknown action '{action}' (expected one of {', '.join(HUMAN_ACTIONS)})")
    if action == "feedback" and verdict not in VERDICTS:
        raise AlertActionError(f"feedback needs --verdict {' or '.join(VERDICTS)} (got {verdict!r})")
    if (outcome or recovered is not None) and action == "ack":
        raise AlertActionError("--outcome and --recovered go with resolve or feedback (what was found), not ack")
    if recovered is not None and not (isinstance(recovered, (int, float)) and recovered >= 0 and recovered == recovered
                                      and recovered != float("inf")):
        raise AlertActionError(f"--recovered must be an amount of money of 0 or more (found {recovered!r})")
    now = now or _now()
    actor = actor or os.environ.get("ANOMALY_ACTOR") or getpass.getuser()
    with connect(path) as con, wh.transaction(con):
        wh.ensure_tables(con, (wh.ALERTS, wh.ALERT_EVENTS))
        row = find_alert(con, ident)
        status = row["status"]
        if action == "ack":
            if status in ("resolved", "expired"):
                raise AlertActionError(f"alert {row['alert_id']} is resolved: nothing to acknowledge")
            if status == "acknowledged":
                raise AlertActionError(f"alert {row['alert_id']} is already acknowledged")
            row["status"] = "acknowledged"
        elif action == "resolve":
            if status in ("resolved", "expired"):
                raise AlertActionError(f"alert {row['alert_id']} is already resolved (at {row['resolved_at']})")
            row["status"], row["resolved_at"] = "resolved", pd.Timestamp(now)
        event = pd.DataFrame([{"alert_id": row["alert_id"], "at": now, "action": action, "actor": actor,
                               "note": note, "verdict": verdict if action == "feedback" else None,
                               "severity": None, "channel": None, "outcome": outcome,
                               "value_recovered": float(recovered) if recovered is not None else None}])
        wh.append(con, wh.ALERT_EVENTS, event)
        if action != "feedback":
            wh.replace_keyed(con, wh.ALERTS, pd.DataFrame([row]), "alert_id", [row["alert_id"]])
    return row


def list_alerts(path: str | Path, *, status: str = "active", team: str | None = None, limit: int = 50) -> pd.DataFrame:
    """Alerts, worst first (severity, then money at risk, then confidence): status 'active' (open +
    acknowledged), 'open', 'acknowledged', 'resolved' or 'all'."""
    with connect(path, read_only=True) as con:
        if not _has_tables(con):
            return pd.DataFrame(columns=wh.ALERTS.column_names)
        where, params = [], []
        if status == "active":
            where.append("status IN ('open', 'acknowledged')")
        elif status != "all":
            where.append("status = ?")
            params.append(status)
        if team:
            where.append("team = ?")
            params.append(team)
        sql = ("SELECT * FROM alerts.alerts" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,"
                 " value_at_risk DESC NULLS LAST, confidence DESC, last_seen_at DESC LIMIT ?")
        return con.execute(sql, [*params, limit]).df()


# ------------------------------------------------------------------------------------------------
# delivery
# ------------------------------------------------------------------------------------------------
def channel_for(team: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable holding the team's webhook, else the default one, else None."""
    environ = os.environ if environ is None else environ
    specific = f"{WEBHOOK_ENV}_{re.sub(r'[^A-Z0-9]+', '_', team.upper()).strip('_')}"
    for name in (specific, WEBHOOK_ENV):
        if webhook_url(name, environ):
            return name
    return None


def any_webhook_configured(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(k == WEBHOOK_ENV or k.startswith(WEBHOOK_ENV + "_") for k, v in environ.items() if v.strip())


def pending(con) -> pd.DataFrame:
    """Active alerts never delivered, or delivered at a lower severity than they have now."""
    if not _has_tables(con):
        return pd.DataFrame(columns=[*wh.ALERTS.column_names, "sent_severity"])
    return con.execute("""
        WITH sent AS (
            SELECT alert_id, max(CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) AS rank,
                   arg_max(severity, CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) AS sent_severity
            FROM alerts.alert_events WHERE action = 'delivered' GROUP BY alert_id)
        SELECT a.*, s.sent_severity FROM alerts.alerts a LEFT JOIN sent s USING (alert_id)
        WHERE a.status IN ('open', 'acknowledged')
          AND (s.alert_id IS NULL OR CASE a.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END > s.rank)
        ORDER BY a.opened_at, a.alert_id""").df()


def slack_payload(a: Mapping) -> dict:
    """Slack-compatible message (``text`` for any webhook, ``blocks`` for Slack)."""
    escalated = isinstance(a.get("sent_severity"), str)
    icon = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}.get(a["severity"], ":white_circle:")
    head = (f"ESCALATED {a['sent_severity']} -> {a['severity']}: " if escalated else "") + a["title"]
    facts = (f"*team* {a['team']}  ·  *severity* {a['severity']}  ·  *confidence* {a['confidence']:.0%}  ·  "
             f"*since* {pd.Timestamp(a['opened_at']):%Y-%m-%d %H:%M} UTC")
    return {
        "text": f"{icon} {head} [{a['severity']}, {a['team']}] {a['why']}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": facts}},
            {"type": "section", "text": {"type": "mrkdwn", "text": a["why"][:2900]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text":
                f"alert `{a['alert_id']}` · rule {a['rule']} · `anomaly-assets alerts ack {a['alert_id']}`"}]},
        ],
        "alert_id": a["alert_id"], "escalated": escalated,
    }


@dataclass
class DeliveryReport:
    delivered: int = 0
    escalations: int = 0
    failed: int = 0
    unrouted: int = 0
    messages: list[str] | None = None

    def __str__(self) -> str:
        return (f"{self.delivered} delivered ({self.escalations} escalations), {self.failed} failed, "
                f"{self.unrouted} without a webhook")


def deliver(path: str | Path, *, environ: Mapping[str, str] | None = None, limit: int = 25,
            retries: int = 3, backoff_s: float = 0.5, log=None) -> DeliveryReport:
    """Post pending alerts; record each success at once. A channel that fails is skipped for the rest
    of this call (its alerts stay pending and are retried next time)."""
    environ = os.environ if environ is None else environ
    report = DeliveryReport(messages=[])
    with connect(path, read_only=False) as con:
        todo = pending(con)
    broken: set[str] = set()
    for a in todo.head(limit).to_dict("records"):
        channel = channel_for(a["team"], environ)
        if channel is None:
            report.unrouted += 1
            continue
        if channel in broken:
            continue
        payload = slack_payload(a)
        try:
            post_json(webhook_url(channel, environ), payload, name=channel, retries=retries, backoff_s=backoff_s)
        except WebhookError as e:  # names the variable, never the URL
            broken.add(channel)
            report.failed += 1
            report.messages.append(str(e))
            _record(path, a, "delivery_failed", channel, str(e))
            if log:
                log.warning(f"alert {a['alert_id']}: {e}")
            continue
        _record(path, a, "delivered", channel, "escalation" if payload["escalated"] else "new")
        report.delivered += 1
        report.escalations += int(payload["escalated"])
        if log:
            log.info(f"alert {a['alert_id']} ({a['severity']}, {a['team']}) sent via {channel}")
    return report


def _record(path, a: Mapping, action: str, channel: str, note: str) -> None:
    row = pd.DataFrame([{"alert_id": a["alert_id"], "at": _now(), "action": action, "actor": "sensor",
                         "note": note, "verdict": None, "severity": a["severity"], "channel": channel,
                         "outcome": None, "value_recovered": None}])
    with connect(path, wait_s=30.0) as con, wh.transaction(con):
        wh.append(con, wh.ALERT_EVENTS, row)


# ------------------------------------------------------------------------------------------------
# the shell: `anomaly-assets alerts ...` and the summary's alerts section
# ------------------------------------------------------------------------------------------------
def _line(a: Mapping, width: int = 160) -> str:
    why = a["why"] if len(a["why"]) <= width else a["why"][: width - 1] + "…"
    return (f"  {a['alert_id']}  {a['severity']:<8} {a['team']:<15} conf {a['confidence']:.2f}  "
            f"{a['status']:<12} {a['title']}\n      {why}")


def summary_lines(con, limit: int = 8) -> list[str]:
    """The alerts section of `anomaly-assets summary`: counts, then the worst active alerts."""
    if not _has_tables(con):
        return []
    counts = con.execute("SELECT status, count(*) FROM alerts.alerts GROUP BY ALL ORDER BY ALL").fetchall()
    teams = con.execute("SELECT team, count(*) FROM alerts.alerts WHERE status IN ('open', 'acknowledged') GROUP BY ALL "
                        "ORDER BY 2 DESC, 1").fetchall()
    shown = [(s, n) for s, n in counts if s not in ("pending", "expired")]
    quiet = sum(n for s, n in counts if s in ("pending", "expired"))
    lines = ["", "alerts: " + (", ".join(f"{n} {s}" for s, n in shown) or "none")
             + (f" (and {quiet} below their rule's min_hits: pending or expired, never sent)" if quiet else "")]
    if teams:
        lines.append("  active by team: " + ", ".join(f"{t} {n}" for t, n in teams))
    top = con.execute("""SELECT * FROM alerts.alerts WHERE status NOT IN ('pending', 'expired')
                         ORDER BY status = 'resolved',
                           CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
                           value_at_risk DESC NULLS LAST, confidence DESC, last_seen_at DESC LIMIT ?""",
                      [limit]).df()
    lines += [_line(a) for a in top.to_dict("records")]
    if len(top):
        lines.append("  act on one: anomaly-assets alerts ack|resolve ID --note '...';  "
                     "anomaly-assets alerts feedback ID --verdict true_positive|false_positive")
    return lines


def add_cli(sub) -> None:
    """`anomaly-assets alerts list|ack|resolve|feedback` (argparse sub-parsers)."""
    al = sub.add_parser("alerts", help="list alerts; acknowledge, resolve or give feedback on one")
    asub = al.add_subparsers(dest="alerts_cmd", required=True)
    ls = asub.add_parser("list", help="alerts, worst first")
    ls.add_argument("--status", default="active",
                    choices=["active", "open", "acknowledged", "resolved", "pending", "expired", "all"])
    ls.add_argument("--team")
    ls.add_argument("--limit", type=int, default=50)
    for name, text in (("ack", "acknowledge: someone is on it"), ("resolve", "resolve: it is dealt with")):
        x = asub.add_parser(name, help=text)
        x.add_argument("alert_id", help="the id, or its first 6+ characters")
        x.add_argument("--note")
        x.add_argument("--actor", help="who (default: $ANOMALY_ACTOR or the login name)")
        if name == "resolve":
            _outcome_args(x)
    fb = asub.add_parser("feedback", help="was it a real problem? (feeds alert precision and confidence)")
    fb.add_argument("alert_id")
    fb.add_argument("--verdict", required=True, choices=list(VERDICTS))
    fb.add_argument("--note")
    fb.add_argument("--actor")
    _outcome_args(fb)


def _money(text: str) -> float:
    """'1200', '$1,200', '1200.50' -> float; anything else is an argparse error naming the value."""
    import argparse

    try:
        return float(str(text).replace("$", "").replace(",", "").strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount of money like 1200 or $1,200 (found {text!r})") from None


def _outcome_args(p) -> None:
    p.add_argument("--outcome", help="what was found, in words: 'counted: 38 units missing'")
    p.add_argument("--recovered", type=_money, help="money recovered or saved thanks to the alert: 1200 or $1,200")


def run_cli(args, warehouse: Path) -> int:
    import sys

    if not Path(warehouse).exists():
        print(f"no warehouse at {warehouse} (set ANOMALY_WAREHOUSE)", file=sys.stderr)
        return 1
    if args.alerts_cmd == "list":
        df = list_alerts(warehouse, status=args.status, team=args.team, limit=args.limit)
        print(f"{len(df)} alert(s) ({args.status}{', team ' + args.team if args.team else ''})")
        for a in df.to_dict("records"):
            print(_line(a, width=400))
        return 0
    try:
        row = act(warehouse, args.alert_id, args.alerts_cmd, note=args.note, actor=args.actor,
                  verdict=getattr(args, "verdict", None), outcome=getattr(args, "outcome", None),
                  recovered=getattr(args, "recovered", None))
    except AlertActionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done = {"ack": "acknowledged", "resolve": "resolved", "feedback": f"feedback recorded ({getattr(args, 'verdict', '')})"}
    print(f"{row['alert_id']} {done[args.alerts_cmd]}: {row['title']} [{row['team']}, {row['severity']}]")
    return 0


def fault_routing_report(warehouse: Path, faults_csv: Path, rules) -> tuple[str, pd.DataFrame]:
    """How many known faults (the demo's faults.csv) got an alert routed to the right team."""
    from anomaly_assets.core.rules import fault_routing

    with connect(warehouse, read_only=True) as con:
        if not _has_tables(con):
            return "no alerts table", pd.DataFrame()
        alerts = con.execute("SELECT alert_id, entity_id, team, opened_at, last_seen_at FROM alerts.alerts "
                             "WHERE status NOT IN ('pending', 'expired')").df()  # alerts people saw
    inc = fault_routing(alerts, pd.read_csv(faults_csv), rules)
    if inc.empty:
        return "no known faults", inc
    per_kind = inc.groupby("fault_kind").agg(n=("right_team", "size"), right=("right_team", "sum"))
    text = (f"known faults with an alert routed to the right team: {int(inc['right_team'].sum())}/{len(inc)} "
            f"(alerted at all: {int(inc['alerted'].sum())}; first alert to the right team: "
            f"{int((inc['first_alert_team'] == inc['expected_team']).sum())}) — "
            + ", ".join(f"{k} {int(r.right)}/{int(r.n)}" for k, r in per_kind.iterrows()))
    return text, inc
