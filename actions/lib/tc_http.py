"""HTTP plumbing for the ThreatConnect client: session, TLS, retries, answers, scrubbing.

Connection failures before a byte is sent, and read failures of GETs, are
retried by urllib3's ``Retry`` mounted on the session's adapter (capped
backoff; ``connect_retry``). POST read failures are not: the server may have
acted. Retrying on HTTP statuses is the client's own loop
(``ThreatConnectClient``), because each attempt must be signed afresh and the
decision needs the body (``is_tc_refusal``) and the ``Retry-After`` header
(``retry_after_seconds``).
"""
import logging
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping, Optional, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from lib.config import secret_values
from lib.tc_auth import auth_from_settings
from lib.tls_warning import warn_unverified

LOG = logging.getLogger(__name__)

USER_AGENT = "stackstorm-assemblyline-threatconnect"
MAX_MESSAGE_CHARS = 500


class _ConnectRetry(Retry):
    """urllib3 retry for failures before a response exists, with a short backoff cap.

    The cap keeps even 20 retries well inside the 5-minute life of the HMAC
    signature urllib3 re-sends unchanged. urllib3 1.26 reads the cap from the
    class attribute, 2.x from the ``backoff_max`` argument (set in ``connect_retry``).
    """

    DEFAULT_BACKOFF_MAX = 10


def connect_retry(retries: int, backoff_factor: float = 0.5) -> Retry:
    """Retry connection errors (any method) and read errors (GET only), never statuses."""
    kwargs = dict(total=retries, connect=retries, read=retries, status=0, other=0,
                  redirect=False, allowed_methods=frozenset({"GET", "HEAD"}),
                  status_forcelist=None, backoff_factor=backoff_factor,
                  respect_retry_after_header=False, raise_on_status=False)
    try:
        return _ConnectRetry(backoff_max=_ConnectRetry.DEFAULT_BACKOFF_MAX, **kwargs)
    except TypeError:  # urllib3 1.26: no backoff_max argument
        return _ConnectRetry(**kwargs)


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
    adapter = HTTPAdapter(max_retries=connect_retry(int(settings.get("retries", 4))))
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
