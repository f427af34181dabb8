"""Posting JSON to webhooks (Slack-compatible), with retries; the URL is a secret and never logged.

Used by the run-failure sensor and the alert-delivery sensor. URLs come only from environment
variables; messages name the variable, never the URL (a Slack webhook URL is a credential).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request


class WebhookError(RuntimeError):
    """A webhook could not be delivered after every retry."""


def webhook_url(env_var: str, environ=None) -> str | None:
    """The URL in ``env_var``, or None when it is unset or empty."""
    url = (environ if environ is not None else os.environ).get(env_var, "").strip()
    return url or None


def post_json(url: str, payload: dict, *, name: str = "webhook", retries: int = 3,
              backoff_s: float = 0.5, timeout_s: float = 5.0) -> int:
    """POST ``payload`` as JSON; retry on connection errors and 5xx/429 with exponential backoff.

    Returns the HTTP status. Raises :class:`WebhookError` naming ``name`` (e.g. the env variable),
    never the URL, when every attempt failed or the server answered 4xx (not retried: resending a
    request the server rejected cannot succeed).
    """
    body = json.dumps(payload, default=str).encode()
    last = "no attempt made"
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if e.code < 500 and e.code != 429:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            last = type(e).__name__ if not getattr(e, "reason", None) else f"{type(e).__name__}: {type(e.reason).__name__}"
        if attempt < retries:
            time.sleep(backoff_s * 2**attempt)
    raise WebhookError(f"{name}: delivery failed after {attempt + 1} attempt(s) ({last})")
