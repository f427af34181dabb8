"""Posting JSON to webhooks (Slack-compatible), with retries; the URL is a secret and never shown.

Used by the run-failure sensor and the alert-delivery sensor. URLs come only from environment
variables (:data:`SECRET_PREFIXES`); they are checked when the definitions load
(:func:`check_webhook_env`), and every message names the variable, never the URL: a Slack
webhook URL is a credential. Errors raised while posting are rebuilt from the variable's name
and the error's type, with no chained exception, because the standard library's messages quote
the URL (``unknown url type: 'hooks.example/T000/SECRET'``) and Dagster stores whole exception
chains in the instance (run logs, sensor ticks, daemon heartbeats). :func:`redact` removes the
secrets from any other text that may hold them.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

# Environment variables whose values are webhook URLs (and so secrets): these names, or these
# names followed by '_<TEAM>'.
SECRET_PREFIXES = ("ANOMALY_FAILURE_WEBHOOK_URL", "ANOMALY_ALERT_WEBHOOK_URL")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")


class WebhookError(RuntimeError):
    """A webhook could not be delivered after every retry."""


class WebhookConfigError(ValueError):
    """A webhook variable holds something that is not a usable URL; names the variable only."""


def secret_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The set webhook variables: name -> value."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items()
            if v.strip() and any(k == p or k.startswith(p + "_") for p in SECRET_PREFIXES)}


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every webhook secret replaced by its variable's name (``<ANOMALY_..._URL>``).

    A whole URL is replaced, and so is any part of it long enough to identify it (its path, a
    path segment of 8+ characters, a user:password): messages quote fragments too. Credentials
    written before a host in any URL (``https://user:pw@host``) are replaced as well.
    """
    if not text:
        return text
    parts: list[tuple[str, str]] = []
    for name, value in secret_variables(environ).items():
        value = value.strip()
        parts.append((value, name))
        split = urllib.parse.urlsplit(value) if "://" in value else None
        pieces = [split.path, split.query, split.netloc.rpartition("@")[0]] if split else [value]
        pieces += [seg for p in list(pieces) for seg in re.split(r"[/?&=:@\s]+", p)]
        parts += [(p, name) for p in pieces if len(p) >= 8]
    for secret, name in sorted(parts, key=lambda p: -len(p[0])):  # longest first: whole URL, then pieces
        text = text.replace(secret, f"<{name}>")
    return _USERINFO.sub(r"\1<credentials>@", text)


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be posted to, in words that do not repeat it; None when it can."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "it contains a space or a control character"
    split = urllib.parse.urlsplit(url)
    if split.scheme.lower() not in ("http", "https"):
        return "it does not start with http:// or https://"
    if not split.netloc or not split.hostname:
        return "it has no host after the scheme"
    if "@" in split.netloc:
        return "it has credentials before the host (user:password@), which are not supported: put the token in the path"
    try:
        split.port
    except ValueError:
        return "its port is not a number between 0 and 65535"
    return None


def webhook_url(env_var: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The URL in ``env_var``, or None when it is unset or empty.

    Raises
    ------
    WebhookConfigError
        When it is set but not a usable http(s) URL; the message names the variable, never the value.
    """
    url = (environ if environ is not None else os.environ).get(env_var, "").strip()
    if not url:
        return None
    problem = _url_problem(url)
    if problem:
        raise WebhookConfigError(f"{env_var} is not a usable webhook URL: {problem} (the value is a secret and is not shown)")
    return url


def check_webhook_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """Check every set webhook variable (when the definitions load); return their names.

    Raises
    ------
    WebhookConfigError
        Naming each variable that is not a usable URL and why, never a value.
    """
    problems, names = [], []
    for name in sorted(secret_variables(environ)):
        try:
            webhook_url(name, environ)
            names.append(name)
        except WebhookConfigError as e:
            problems.append(str(e))
    if problems:
        raise WebhookConfigError("; ".join(problems))
    return names


def post_json(url: str, payload: dict, *, name: str = "webhook", retries: int = 3,
              backoff_s: float = 0.5, timeout_s: float = 5.0) -> int:
    """POST ``payload`` as JSON; retry on connection errors and 5xx/429 with exponential backoff.

    Returns the HTTP status. Raises :class:`WebhookError` naming ``name`` (e.g. the env variable),
    never the URL, when every attempt failed or the server answered 4xx (not retried: resending a
    request the server rejected cannot succeed), or when the URL cannot be used at all. The error
    carries no chained exception (their messages quote the URL).
    """
    problem = _url_problem(url)
    if problem:
        raise WebhookError(f"{name}: delivery failed, not a usable URL: {problem} (the value is not shown)")
    body = json.dumps(payload, default=str).encode()
    last = "no attempt made"
    for attempt in range(retries + 1):
        retry = True
        try:
            req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            retry = e.code >= 500 or e.code == 429
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", None)
            last = f"{type(e).__name__}: {type(reason).__name__}" if reason else type(e).__name__
        except Exception as e:  # noqa: BLE001 - anything else (a bad URL): its type only, its text may quote the URL
            last = type(e).__name__
            retry = False
        if not retry:
            break
        if attempt < retries:
            time.sleep(backoff_s * 2**attempt)
    raise WebhookError(f"{name}: delivery failed after {attempt + 1} attempt(s) ({last})")
