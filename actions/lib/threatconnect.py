"""ThreatConnect v2 Batch API client: one method per call the pack makes.

Why a small client of our own instead of tcex: tcex needs Python >= 3.11, pulls
dozens of pinned packages and installs signal handlers that ``sys.exit``; the
pack needs four endpoints. Wire-format truth: ``threatconnect.md`` (reference).
Authentication is ``lib.tc_auth``, the session and connection retries
``lib.tc_http``, batch bodies ``lib.tc_batch_bodies``, and sending any number
of items as jobs ``lib.tc_submit``.

HTTP 429/5xx and connection failures are retried by this client's own loop
(``_send``), not by urllib3,
because each attempt must be signed afresh (an HMAC Timestamp is valid 5
minutes), because the decision needs the body (TC's plain-text 503 "batch job
api is not available" is a configuration answer and is never retried) and
because it differs per call:

* GET status / errors / types: 429, 500, 502, 503, 504.
* POST create batch: the same. A create retried after a 5xx may leave an empty
  job in ``Created`` state from the first attempt (it holds no data and never
  runs): each such retry is said in ``warnings``, so no job is left unreported.
* POST upload and createAndUpload: 429 only (the server refused before doing
  anything). After a 5xx the job may be queued already; replaying would
  duplicate ``Append`` attributes, so the error is reported instead.

``Retry-After`` (seconds or HTTP date) is honoured; a wait longer than
``max_retry_after`` is not attempted (the error is reported instead).
"""
import gzip as gzip_module
import json
import logging
import time
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

import requests

from lib.config import apply_defaults, load_schema
from lib.errors import InputError, ThreatConnectError
from lib.tc_auth import HmacAuth
from lib.tc_batch_config import validate_batch_config
from lib.tc_http import (Scrubber, build_session, connection_backoff, exception_reason, is_tc_refusal,
                         response_message, retry_after_seconds, retryable_connection_error, tls_verify)

LOG = logging.getLogger(__name__)

_RETRY_IDEMPOTENT = frozenset({429, 500, 502, 503, 504})
ERRORS_ATTEMPTS = 5  # reads of a just-completed job's error file while TC answers 404
_RETRY_CREATE = _RETRY_IDEMPOTENT
_RETRY_NO_REPLAY = frozenset({429})


class ThreatConnectClient:
    """The Batch API calls the pack makes, configured from ``config["threatconnect"]``.

    ``sleep``, ``monotonic`` and the delays are injectable so tests run fast; ``sleep``,
    ``retries`` and the backoff settings are public because ``lib.tc_submit`` uses them too.
    """

    def __init__(self, settings: Mapping[str, Any], session: Optional[requests.Session] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 errors_retry_delay: float = 5.0, poll_initial: float = 1.0,
                 poll_max: float = 30.0, backoff_factor: float = 0.5,
                 backoff_max: float = 30.0, max_retry_after: float = 120.0):
        schema = load_schema()["properties"]["threatconnect"]
        self.settings = apply_defaults(dict(settings), schema)
        self.api_url = self.settings["api_url"].rstrip("/")
        self.owner = self.settings["owner"]
        self.session = session if session is not None else build_session(self.settings)
        self.verify = tls_verify(self.settings)
        self.proxies = dict(self.settings.get("proxies") or {})
        self.timeout = float(self.settings["timeout"])
        self.retries = int(self.settings["retries"])
        self.max_items = int(self.settings["batch_max_items"])
        self.max_bytes = int(self.settings["batch_max_bytes"])
        self.gzip = bool(self.settings["batch_gzip"])
        self.poll_timeout = float(self.settings["poll_timeout"])
        self.sleep = sleep
        self.monotonic = monotonic
        self.errors_retry_delay = errors_retry_delay
        self.warnings: List[str] = []  # what a caller must report (a create that may have left a job)
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._scrub = Scrubber(self.settings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> "ThreatConnectClient":
        """Build from the whole validated pack config."""
        return cls(config["threatconnect"], **kwargs)

    def __repr__(self) -> str:
        return "ThreatConnectClient(api_url={!r}, owner={!r}, auth={!r})".format(
            self.api_url, self.owner, self.session.auth)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "ThreatConnectClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- HTTP core

    def _send(self, method: str, path: str, retry_on: FrozenSet[int],
              retried: Optional[List[int]] = None, **kwargs: Any) -> requests.Response:
        """One call with the status retry loop; returns the final response.

        Every attempt goes through ``session.request`` again, so HMAC signs it
        with a fresh Timestamp.
        """
        attempt, resigned, connection_attempt = 0, False, 0
        while True:
            started = self.monotonic()
            try:
                response = self.session.request(
                    method, self.api_url + path, timeout=self.timeout, verify=self.verify,
                    proxies=self.proxies, allow_redirects=False, **kwargs)
            except requests.RequestException as exc:
                LOG.debug("ThreatConnect %s %s failed: %s", method, path, type(exc).__name__)
                if connection_attempt < self.retries and retryable_connection_error(exc, method):
                    delay = connection_backoff(connection_attempt)
                    connection_attempt += 1
                    LOG.warning("ThreatConnect %s %s: %s; retry %d of %d in %.1f s", method, path,
                                type(exc).__name__, connection_attempt, self.retries, delay)
                    self.sleep(delay)
                    continue
                raise ThreatConnectError(self._scrub("{} {}: cannot reach ThreatConnect: {}".format(
                    method, path, exception_reason(exc, self.timeout))), None) from None
            LOG.debug("ThreatConnect %s %s -> HTTP %s (%.2f s)", method, path,
                      response.status_code, self.monotonic() - started)
            if (response.status_code == 401 and not resigned
                    and isinstance(self.session.auth, HmacAuth)
                    and "timestamp" in response.text.lower()):
                resigned = True  # a stale signature (slow connect retries): sign again once
                continue
            delay = self._retry_delay(response, retry_on, attempt)
            if delay is None:
                return response
            attempt += 1
            if retried is not None:
                retried.append(response.status_code)
            LOG.warning("ThreatConnect %s %s answered HTTP %s; retry %d of %d in %.1f s",
                        method, path, response.status_code, attempt, self.retries, delay)
            response.close()
            self.sleep(delay)

    def _retry_delay(self, response: requests.Response, retry_on: FrozenSet[int],
                     attempt: int) -> Optional[float]:
        """Seconds to wait before retrying, or None when the answer is final."""
        status = response.status_code
        if status not in retry_on or attempt >= self.retries:
            return None
        if is_tc_refusal(response):
            return None
        asked = retry_after_seconds(response.headers.get("Retry-After"))
        if asked is not None:
            return asked if asked <= self.max_retry_after else None
        return min(self.backoff_max, self.backoff_factor * (2 ** attempt))

    def _fail(self, response: requests.Response, what: str) -> ThreatConnectError:
        message = response_message(response)
        if 300 <= response.status_code < 400:
            message = "unexpected redirect to {} (check threatconnect.api_url)".format(
                response.headers.get("Location", "?"))
        return ThreatConnectError(self._scrub("{}: {}".format(what, message)),
                                  response.status_code)

    def _json(self, response: requests.Response, what: str) -> Any:
        """Parse a successful JSON body; anything else is an error, not a crash."""
        try:
            return response.json()
        except ValueError:
            raise ThreatConnectError("{}: answer is not JSON ({})".format(
                what, response.headers.get("Content-Type", "no content type")),
                response.status_code) from None

    # ------------------------------------------------------------------ calls

    def batch_config(self, action: str = "Create",
                     overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The validated BatchConfig from the pack settings, with ``overrides`` on top."""
        config = {
            "version": "V2",
            "owner": self.owner,
            "action": action,
            "haltOnError": bool(self.settings["halt_on_error"]),
            "attributeWriteType": self.settings["attribute_write_type"],
            "tagWriteType": self.settings["tag_write_type"],
            "securityLabelWriteType": self.settings["security_label_write_type"],
        }
        config.update(overrides or {})
        return validate_batch_config(config)

    def create_batch(self, config: Mapping[str, Any]) -> int:
        """POST /v2/batch: create a job and return its batch id."""
        body = json.dumps(validate_batch_config(config), separators=(",", ":")).encode("utf-8")
        retried: List[int] = []
        response = self._send("POST", "/v2/batch", _RETRY_CREATE, retried=retried, data=body,
                              headers={"Content-Type": "application/json; charset=utf-8"})
        if response.status_code not in (200, 201):
            raise self._fail(response, "create batch job")
        payload = self._json(response, "create batch job")
        batch_id = _dig(payload, "data", "batchId")
        if _dig(payload, "status") != "Success" or not _is_id(batch_id):
            raise ThreatConnectError("create batch job: answer has no batch id",
                                     response.status_code)
        ambiguous = [status for status in retried if status >= 500]
        if ambiguous:
            self.warnings.append(
                "creating batch {} took {} attempts after HTTP {}: ThreatConnect may hold {} empty "
                "job(s) in Created state from the earlier attempts (no data, never run)".format(
                    batch_id, len(retried) + 1, ", ".join(map(str, ambiguous)), len(ambiguous)))
        return int(batch_id)

    def upload(self, batch_id: int, body: bytes, gzip: Optional[bool] = None) -> Dict[str, Any]:
        """POST /v2/batch/{id}: upload the job's body (raw JSON, octet-stream).

        ``gzip=None`` follows ``batch_gzip``. The byte limit applies to the
        uncompressed body (TC's counting is unverified; this is the safe side).
        """
        batch_id = _checked_id(batch_id)
        self._check_size(body)
        data, headers = body, {"Content-Type": "application/octet-stream"}
        if self.gzip if gzip is None else gzip:
            data = gzip_module.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        response = self._send("POST", "/v2/batch/{}".format(batch_id), _RETRY_NO_REPLAY,
                              data=data, headers=headers)
        if not 200 <= response.status_code < 300:
            raise self._fail(response, "upload batch {}".format(batch_id))
        payload = self._json(response, "upload batch {}".format(batch_id))
        return payload if isinstance(payload, dict) else {}

    def create_and_upload(self, config: Mapping[str, Any], body: bytes,
                          include_additional: bool = True) -> Dict[str, Any]:
        """POST /v2/batch/createAndUpload (multipart ``config`` + ``content``).

        Undocumented REST call used by the SDKs; returns ``data.batchStatus``.
        ``submit`` uses the documented two-step calls instead.
        """
        config_body = json.dumps(validate_batch_config(config), separators=(",", ":"))
        self._check_size(body)
        files = {"config": ("config", config_body.encode("utf-8"), "application/json"),
                 "content": ("content", body, "application/octet-stream")}
        params = {"includeAdditional": "true"} if include_additional else None
        response = self._send("POST", "/v2/batch/createAndUpload", _RETRY_NO_REPLAY,
                              params=params, files=files)
        if not 200 <= response.status_code < 300:
            raise self._fail(response, "create and upload batch")
        return self._batch_status(response, "create and upload batch")

    def status(self, batch_id: int, include_additional: bool = True) -> Dict[str, Any]:
        """GET /v2/batch/{id}: the job's ``data.batchStatus`` object."""
        batch_id = _checked_id(batch_id)
        params = {"includeAdditional": "true"} if include_additional else None
        response = self._send("GET", "/v2/batch/{}".format(batch_id), _RETRY_IDEMPOTENT,
                              params=params)
        if response.status_code != 200:
            raise self._fail(response, "status of batch {}".format(batch_id))
        return self._batch_status(response, "status of batch {}".format(batch_id))

    def _batch_status(self, response: requests.Response, what: str) -> Dict[str, Any]:
        status = _dig(self._json(response, what), "data", "batchStatus")
        if not isinstance(status, dict) or not isinstance(status.get("status"), str):
            raise ThreatConnectError("{}: answer has no data.batchStatus".format(what),
                                     response.status_code)
        return status

    def errors(self, batch_id: int, just_completed: bool = False) -> List[Dict[str, Any]]:
        """GET /v2/batch/{id}/errors: the error file (a gzip JSON array); 404 means none.

        TC may answer 404 for a while after a job completes; with
        ``just_completed`` a 404 is retried ``ERRORS_ATTEMPTS - 1`` times after
        ``errors_retry_delay``, doubling (5 + 10 + 20 + 40 s by default).
        """
        batch_id = _checked_id(batch_id)
        path = "/v2/batch/{}/errors".format(batch_id)
        for attempt in range(ERRORS_ATTEMPTS):
            response = self._send("GET", path, _RETRY_IDEMPOTENT)
            if response.status_code == 404:
                if just_completed and attempt < ERRORS_ATTEMPTS - 1:
                    self.sleep(self.errors_retry_delay * 2 ** attempt)
                    continue
                return []
            if response.status_code != 200:
                raise self._fail(response, "errors of batch {}".format(batch_id))
            return _parse_error_file(response.content, batch_id, response.status_code)
        return []

    def indicator_types(self) -> List[Dict[str, Any]]:
        """GET /v2/types/indicatorTypes: a cheap authenticated call (connection test)."""
        response = self._send("GET", "/v2/types/indicatorTypes", _RETRY_IDEMPOTENT)
        if response.status_code != 200:
            raise self._fail(response, "indicator types")
        types = _dig(self._json(response, "indicator types"), "data", "indicatorType")
        if not isinstance(types, list):
            raise ThreatConnectError("indicator types: answer has no data.indicatorType",
                                     response.status_code)
        return types

    def owners(self) -> List[str]:
        """GET /v2/owners: the names of the owners this API user can access (check_config)."""
        response = self._send("GET", "/v2/owners", _RETRY_IDEMPOTENT)
        if response.status_code != 200:
            raise self._fail(response, "owners")
        owners = _dig(self._json(response, "owners"), "data", "owner")
        if not isinstance(owners, list):
            raise ThreatConnectError("owners: answer has no data.owner", response.status_code)
        return [o["name"] for o in owners if isinstance(o, dict) and isinstance(o.get("name"), str)]

    def wait(self, batch_id: int, timeout: Optional[float] = None
             ) -> Tuple[Dict[str, Any], bool]:
        """Poll until ``Completed`` (TC's only end state) or the deadline.

        Polls at once (small jobs finish in a second), then after 1, 2, 4 ... s
        capped at ``poll_max``. Returns the last status and whether it completed.
        """
        deadline = self.monotonic() + (self.poll_timeout if timeout is None else timeout)
        delay = self.poll_initial
        while True:
            status = self.status(batch_id)
            if status["status"] == "Completed":
                return status, True
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                return status, False
            self.sleep(min(delay, remaining))
            delay = min(delay * 2, self.poll_max)

    def _check_size(self, body: bytes) -> None:
        if not isinstance(body, bytes):
            raise InputError("batch body must be bytes")
        if len(body) > self.max_bytes:
            raise InputError("batch body is {} bytes, more than threatconnect.batch_max_bytes "
                             "({})".format(len(body), self.max_bytes))


# ------------------------------------------------------------ small helpers

def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _checked_id(batch_id: Any) -> int:
    if not _is_id(batch_id):
        raise InputError("batch id must be a positive integer")
    return batch_id


def _parse_error_file(content: bytes, batch_id: int, status: int) -> List[Dict[str, Any]]:
    """The error file's JSON array, whatever the content type said.

    ``requests`` inflates it when Content-Encoding says gzip; gzip bytes sent
    without that header are inflated here.
    """
    try:
        if content[:2] == b"\x1f\x8b":
            content = gzip_module.decompress(content)
        entries = json.loads(content.decode("utf-8")) if content.strip() else []
    except (OSError, EOFError, ValueError):
        raise ThreatConnectError("errors of batch {}: error file is not gzip/JSON".format(
            batch_id), status) from None
    if not isinstance(entries, list):
        raise ThreatConnectError("errors of batch {}: error file is not a JSON array".format(
            batch_id), status)
    return [e if isinstance(e, dict) else {"errorReason": str(e)} for e in entries]
