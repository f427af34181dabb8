"""Webhook URLs are secrets: a malformed one is refused when the definitions load, naming the
variable, and no message, log line or exception chain ever carries the value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anomaly_assets.defs.automation import load_automation_settings
from anomaly_assets.webhooks import WebhookConfigError, WebhookError, check_webhook_env, post_json, redact

REPO = Path(__file__).resolve().parents[1]
# the shapes issue 16 found leaking, and a few more
MALFORMED = {
    "hooks.example/T000/SECRET123": "does not start with http:// or https://",
    "https://hooks.example/T000/SEC RET123": "contains a space or a control character",
    "https://user:SECRET123@hooks.example/x": "credentials before the host",
    "https://hooks.example:SECRET123/x": "port is not a number",
    "https:///T000/SECRET123": "has no host",
    "https://hooks.example/T000/SECRET123\x00": "contains a space or a control character",
}


@pytest.mark.parametrize("url", sorted(MALFORMED))
def test_a_malformed_url_fails_the_load_naming_the_variable_never_the_value(url):
    for var in ("ANOMALY_FAILURE_WEBHOOK_URL", "ANOMALY_ALERT_WEBHOOK_URL", "ANOMALY_ALERT_WEBHOOK_URL_MAINTENANCE"):
        with pytest.raises(WebhookConfigError) as info:
            load_automation_settings({var: url})
        message = str(info.value)
        assert message.startswith(f"{var} is not a usable webhook URL: ") and MALFORMED[url] in message
        assert "SECRET" not in message and "hooks.example" not in message


@pytest.mark.parametrize("url", sorted(MALFORMED))
def test_posting_to_a_malformed_url_raises_without_the_url_or_a_chained_error(url):
    with pytest.raises(WebhookError) as info:
        post_json(url, {"text": "x"}, name="ANOMALY_FAILURE_WEBHOOK_URL", retries=0)
    assert "SECRET" not in str(info.value) and info.value.__context__ is None and info.value.__cause__ is None


def test_a_refused_connection_names_the_variable_and_the_error_type_only():
    with pytest.raises(WebhookError) as info:  # a closed port: URLError(ConnectionRefusedError)
        post_json("http://127.0.0.1:9/hooks/SECRET123", {"text": "x"}, name="ANOMALY_ALERT_WEBHOOK_URL",
                  retries=1, backoff_s=0.01)
    assert str(info.value) == ("ANOMALY_ALERT_WEBHOOK_URL: delivery failed after 2 attempt(s) "
                               "(URLError: ConnectionRefusedError)")
    assert info.value.__context__ is None


def test_good_urls_pass_and_redact_removes_secrets_and_their_pieces():
    env = {"ANOMALY_FAILURE_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX",
           "ANOMALY_ALERT_WEBHOOK_URL_OPS": "http://10.0.0.5:8080/hook?token=abcdefgh1234", "OTHER": "x"}
    assert check_webhook_env(env) == ["ANOMALY_ALERT_WEBHOOK_URL_OPS", "ANOMALY_FAILURE_WEBHOOK_URL"]
    text = ("posting to https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX failed; path "
            "'/services/T000/B000/XXXXSECRETXXXX', token abcdefgh1234, and https://bob:pw@example.org/x")
    out = redact(text, env)
    assert "XXXXSECRETXXXX" not in out and "abcdefgh1234" not in out and "bob:pw" not in out
    assert "<ANOMALY_FAILURE_WEBHOOK_URL>" in out and "<ANOMALY_ALERT_WEBHOOK_URL_OPS>" in out
    assert "https://<credentials>@example.org/x" in out


def test_loading_the_definitions_with_a_malformed_url_fails_without_the_value(tmp_path):
    """What `dagster dev` and the daemon do: import the definitions. Before, the load succeeded and the
    value leaked later into daemon.log and the instance's tick and heartbeat records."""
    env = {**os.environ, "ANOMALY_FAILURE_WEBHOOK_URL": "https://user:SECRET123@hooks.example/x",
           "DAGSTER_HOME": str(tmp_path), "ANOMALY_WAREHOUSE": str(tmp_path / "wh.duckdb"),
           "ANOMALY_LANDING_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", "import anomaly_assets.definitions"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ANOMALY_FAILURE_WEBHOOK_URL is not a usable webhook URL: it has credentials before the host" in done.stderr
    assert "SECRET123" not in done.stderr + done.stdout
