"""HTTP plumbing for the ThreatConnect client: session, TLS, retries, answers, scrubbing.

Every retry is the client's own loop (``ThreatConnectClient``), never
urllib3's, because each attempt must be signed afresh (an HMAC Timestamp is
valid 5 minutes, and a replay carries the old one): connection failures before
a byte is sent and read failures of GETs (``retryable_connection_error``,
``connection_backoff``), and HTTP statuses, whose decision needs the body
(``is_tc_refusal``) and the ``Retry-After`` header (``retry_after_seconds``).
POST read failures are not retried: the server may have acted.
"""
import logging
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping, Optional, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
import urllib3

from lib.config import secret_values
from lib.tc_auth import auth_from_settings
from lib.tls_warning import warn_unverified

LOG = logging.getLogger(__name__)

USER_AGENT = "stackstorm-assemblyline-threatconnect"
MAX_MESSAGE_CHARS = 500


CONNECT_BACKOFF_MAX = 10.0


def retryable_connection_error(exc: requests.RequestException, method: str) -> bool:
    """May this failure be retried (signed afresh)? Any method when nothing reached the
    server (connection refused, connect timeout); GET/HEAD for read failures too (the server
    may have acted on a POST: it is never replayed). TLS failures are not retried."""
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(exc, requests.exceptions.ConnectTimeout) or _nothing_sent(exc):
        return True
    return method.upper() in ("GET", "HEAD") and isinstance(
        exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))


def _nothing_sent(exc: requests.RequestException) -> bool:
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def connection_backoff(attempt: int, factor: float = 0.5) -> float:
    """Seconds before connection retry ``attempt`` (0-based): 0.5, 1, 2 ... capped at 10."""
    return min(CONNECT_BACKOFF_MAX, factor * (2 ** attempt))


def tls_verify(settings: Mapping[str, Any]) -> Union[bool, str]:
    """``requests``' ``verify``: on by default, the CA bundle path when one is set."""
    if not settings.get("verify_tls", True):
        return False
    return settings.get("ca_bundle") or True


def build_session(settings: Mapping[str, Any],
                  clock: Callable[[], float] = time.time) -> requests.Session:
    """A session with TC auth, TLS settings, proxies and connection retries."""
    session = requests.Session()
    session.auth = auth_from_settings(settings, clock=clock)
    session.verify = tls_verify(settings)
    session.proxies.update(settings.get("proxies") or {})
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    adapter = HTTPAdapter(max_retries=0)  # retries are the client's loop: each attempt signed afresh
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if session.verify is False:
        warn_unverified(LOG, "ThreatConnect", "threatconnect", settings.get("api_url") or "")
    return session


def retry_after_seconds(value: Optional[str], now: Callable[[], float] = time.time
                        ) -> Optional[float]:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now())


def is_json(response: requests.Response) -> bool:
    return "json" in response.headers.get("Content-Type", "").lower()


def is_tc_refusal(response: requests.Response) -> bool:
    """TC's plain-text 503 (batch API disabled, unlicensed): configuration, not a hiccup.

    Proxies' busy pages are HTML and API failures JSON; those stay retryable.
    """
    content_type = response.headers.get("Content-Type", "").lower()
    return (response.status_code == 503 and bool(response.content.strip())
            and "json" not in content_type and "html" not in content_type)


def response_message(response: requests.Response) -> str:
    """TC's own words for a failed response.

    Batch 401/503 answers are plain text and v2/v3 failures are JSON, so the
    Content-Type decides how the body is read. HTML (proxies) is not quoted.
    """
    if is_json(response):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping):
            for key in ("message", "description", "error", "errorMessage"):
                if isinstance(body.get(key), str) and body[key].strip():
                    return body[key].strip()[:MAX_MESSAGE_CHARS]
    content_type = response.headers.get("Content-Type", "").lower()
    text = response.text.strip() if response.content else ""
    if text and "html" not in content_type:
        return text[:MAX_MESSAGE_CHARS]
    return response.reason or "HTTP {}".format(response.status_code)


def exception_reason(exc: requests.RequestException, timeout: float) -> str:
    """A short cause of a transport failure, without urllib3's object dumps."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out after {:g} s".format(timeout)
    if isinstance(exc, requests.exceptions.ReadTimeout) or "Read timed out" in str(exc):
        return "no answer within {:g} s".format(timeout)  # (urllib3 wraps retried ones)
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (check threatconnect.verify_tls / ca_bundle)"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy error (check threatconnect.proxies)"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if found:
        return found.group(1).strip()
    return type(exc).__name__


class Scrubber:
    """Replaces secret values in text that may reach a message or a log."""

    def __init__(self, settings: Mapping[str, Any]):
        values = secret_values({"threatconnect": settings})  # the schema's secret: true keys
        for proxy in (settings.get("proxies") or {}).values():
            parts = urlsplit(proxy) if isinstance(proxy, str) else None
            if parts is not None:
                values.extend([parts.username, parts.password])
        # Very short values would mangle ordinary text; real credentials are long.
        self._secrets = sorted({v for v in values if isinstance(v, str) and len(v) >= 4},
                               key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text
