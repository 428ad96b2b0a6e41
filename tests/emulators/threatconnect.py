"""ThreatConnect v2 Batch API emulator (in-process or standalone).

In-process::

    with ThreatConnectEmulator(access_id="ID", secret_key="KEY", token="TOK",
                               owners=["Example Org"]) as emu:
        emu.url                      # "http://127.0.0.1:PORT/api"
        emu.configure(rate_429=0.5)  # knobs, settable at any time (thread-safe)
        emu.indicators("Example Org")  # summary -> record

Standalone (prints one "ready" line with the URL, serves until killed)::

    python -m tests.emulators.threatconnect --port 0 --access-id ID --secret-key KEY \
        --token TOK --owner "Example Org"

Wire behaviour follows ``threatconnect.md``. Where the reference is silent or
UNVERIFIED this emulator chooses, and says so here:

* no ``Authorization`` header: 403 (the reference's "unauthenticated");
  bad signature, unknown access id, skewed Timestamp, bad token: 401; all with
  the v2 failure JSON ``{"status": "Failure", "message": ...}``;
* create with a bad field: 400 v2 failure JSON naming the field;
* upload to a job that is not ``Created``: 400 ``{"status": "Invalid", ...}``;
  a Content-Type other than application/octet-stream: 400;
* upload with more than ``max_items_per_job`` items (indicators + groups):
  400 ``{"status": "Invalid", "description": ...}``;
* invalid JSON upload: accepted (202), the job completes with one error whose
  reason is TC's fatal "Encountered an unexpected Exception while processing
  batch job. ..." and ``unprocessCount`` 0 (the reference: halted jobs report
  unprocessed items "unless the JSON was invalid");
* an indicator whose ``associatedGroups`` xid resolves neither in the job nor
  in the owner is an error and is not saved;
* createAndUpload answers 201 with ``data.batchStatus``; jobs with at most
  ``sync_save_limit`` items (default 0: none) run synchronously;
* ``GET /v2/owners`` lists the emulator's owners as ``data.owner`` entries
  ``{"id", "name", "type": "Organization"}`` (the v2 shape; not in the reference);
* the ``association`` array supports indicator-to-group and
  indicator-to-indicator references by summary/xid.
"""
import argparse
import base64
import collections
import gzip
import hashlib
import hmac
import json
import random
import re
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs

from tests.emulators.al_common import ApiError
from tests.emulators.al_multipart import parse_multipart
from tests.emulators.tc_items import (GROUP_TYPES, INDICATOR_TYPES, ItemError, group_identity,
                                      indicator_identity, normalise_group, normalise_indicator)
from tests.emulators.tc_store import OwnerStore
from tests.emulators.tls import QuietTlsErrors, wrap_listener

Response = Tuple[int, Dict[str, str], bytes]

PERMISSION_DENIED_TEXT = ("Unable to perform the requested operation due to the following "
                          "error(s): You do not have permission to create Indicators; Groups; "
                          "Attributes; Tags; Security Labels;")
BATCH_DISABLED_TEXT = ("Batch job api is not available.  Ensure that batchJobEnabled is true "
                       "and document storage is enabled and configured;")
NOT_FOUND = "The requested resource was not found"
RUNNING_TEXT = "Batch still in Running state"
FATAL_PREFIX = "Encountered an unexpected Exception while processing batch job. "
TIMESTAMP_TEXT = "Timestamp out of acceptable time range"
DROP = 0  # a fail_next "status": close the connection without answering
SIGNATURE_TEXT = "Signature data did not match expected result"

BATCH_ENUMS = {
    "version": ("V1", "V2"),
    "action": ("Create", "Delete"),
    "attributeWriteType": ("Append", "Replace", "Singleton", "Static"),
    "tagWriteType": ("Append", "Replace"),
    "securityLabelWriteType": ("Append", "Replace"),
    "fileMergeMode": ("Distribute", "Merge"),
    "hashCollisionMode": ("FavorExisting", "FavorIncoming", "IgnoreExisting",
                          "IgnoreIncoming", "Split"),
}
BATCH_BOOLEANS = ("haltOnError", "playbookTriggersEnabled")
BATCH_REQUIRED = ("owner", "haltOnError", "action", "attributeWriteType")

KNOB_DEFAULTS = {
    # faults
    "rate_5xx": 0.0,            # share of requests answered with status_5xx
    "status_5xx": 500,
    "rate_429": 0.0,            # share of requests answered 429 with Retry-After
    "retry_after": "1",         # Retry-After value sent with 429s (None: no header)
    "stuck_running": False,     # jobs never leave Running while set
    "stuck_batches": (),        # these batch ids never leave Running while listed
    "error_file_delay": 0,      # /errors answers 404 this many times after completion
    "batch_disabled": False,    # create answers the plain-text 503
    "batch_permission_denied": False,  # create answers the plain-text 401
    "fatal_jobs": False,        # jobs end with TC's fatal reason, every item unprocessed
    # TC's indicator exclusion lists: these summaries fail in a job as one item
    # error each (the reason's wording is the emulator's own; TC's is unverified)
    "excluded_indicators": (),
    # limits
    "max_upload_bytes": 2000000,
    "upload_limit_basis": "uncompressed",  # or "wire" (the bytes as received)
    "max_items_per_job": 25000,
    "sync_save_limit": 0,       # createAndUpload runs jobs this small synchronously
    "timestamp_window": 300,
    # timings: "polls" counts status polls after upload, "clock" uses seconds
    "timing": "polls",
    "queued_polls": 1,
    "running_polls": 1,
    "queued_seconds": 0.0,
    "running_seconds": 0.0,
}

INDICATOR_TYPE_INFO = [
    {"name": name, "custom": "false", "parsable": "true",
     "apiBranch": branch, "apiEntity": entity}
    for name, branch, entity in (
        ("Address", "addresses", "address"), ("EmailAddress", "emailAddresses", "emailAddress"),
        ("File", "files", "file"), ("Host", "hosts", "host"), ("URL", "urls", "url"),
        ("ASN", "asns", "asn"), ("CIDR", "cidrBlocks", "cidrBlock"),
        ("Mutex", "mutexes", "mutex"), ("Registry Key", "registryKeys", "registryKey"),
        ("User Agent", "userAgents", "userAgent"))]


def _json(status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> Response:
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return status, all_headers, json.dumps(body).encode("utf-8")


def _failure(status: int, message: str) -> Response:
    return _json(status, {"status": "Failure", "message": message})


def _invalid(description: str) -> Response:
    return _json(400, {"status": "Invalid", "description": description})


def _text(status: int, text: str) -> Response:
    return status, {"Content-Type": "text/plain"}, text.encode("utf-8")


def hmac_expected(secret_key: str, raw_path: str, method: str, timestamp: str) -> str:
    """The signature TC computes: raw request target (with /api and query), method, Timestamp."""
    message = "{}:{}:{}".format(raw_path, method, timestamp).encode("utf-8")
    return base64.b64encode(hmac.new(secret_key.encode("utf-8"), message,
                                     hashlib.sha256).digest()).decode("ascii")


class Job:
    """One batch job and everything the emulator knows about it."""

    def __init__(self, batch_id: int, config: Dict[str, Any]):
        self.id = batch_id
        self.config = config
        self.owner = config["owner"]
        self.state = "Created"
        self.polls = 0
        self.uploaded_at = 0.0
        self.body = None  # type: Any
        self.invalid_json = None  # type: Optional[str]
        self.items = 0
        self.upload_bytes = 0
        self.gzip = False
        self.counts = {"success": 0, "error": 0, "unprocessed": 0, "successIndicator": 0,
                       "errorIndicator": 0, "successGroup": 0, "errorGroup": 0}
        self.errors = []  # type: List[Dict[str, Any]]
        self.error_fetches = 0

    def batch_status(self, additional: bool) -> Dict[str, Any]:
        status = {"id": self.id, "status": self.state, "errorCount": self.counts["error"],
                  "successCount": self.counts["success"],
                  "unprocessCount": self.counts["unprocessed"]}
        if additional:
            for key in ("successIndicator", "errorIndicator", "successGroup", "errorGroup"):
                status[key + "Count"] = self.counts[key]
        return status

    def snapshot(self) -> Dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "status": self.state,
                "config": dict(self.config), "items": self.items,
                "upload_bytes": self.upload_bytes, "gzip": self.gzip,
                "counts": dict(self.counts), "errors": [dict(e) for e in self.errors]}


class ThreatConnectEmulator:
    """A thread-safe ThreatConnect Batch API on 127.0.0.1 (see the module docstring)."""

    def __init__(self, access_id: Optional[str] = None, secret_key: Optional[str] = None,
                 token: Optional[str] = None, owners: Sequence[str] = ("Example Org",),
                 clock: Callable[[], float] = time.time, host: str = "127.0.0.1",
                 port: int = 0, seed: int = 0, tls: Optional[ssl.SSLContext] = None, **knobs: Any):
        self.access_id = access_id
        self.secret_key = secret_key
        self.token = token
        self.owners = list(owners)
        self.clock = clock
        self.host = host
        self.port = port
        self.tls = tls  # a server SSLContext: serve HTTPS (tests/emulators/tls.py)
        self._lock = threading.RLock()
        self._random = random.Random(seed)
        self._knobs = dict(KNOB_DEFAULTS)
        self.configure(**knobs)
        self._fail_queue = []  # type: List[Dict[str, Any]]
        self._stores = {owner: OwnerStore() for owner in self.owners}
        self._jobs = {}  # type: Dict[int, Job]
        self._next_batch_id = 1001
        self._log = collections.deque(maxlen=100000)  # bounded for long standalone runs
        self._server = None  # type: Optional[ThreadingHTTPServer]
        self._thread = None  # type: Optional[threading.Thread]

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "ThreatConnectEmulator":
        server = _Server((self.host, self.port), _Handler)
        if self.tls is not None:
            wrap_listener(server, self.tls)
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="tc-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self) -> "ThreatConnectEmulator":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return "{}://{}:{}/api".format("https" if self.tls else "http", self.host, self.port)

    # ---------------------------------------------------------------- knobs

    def configure(self, **knobs: Any) -> None:
        """Set knobs (see ``KNOB_DEFAULTS``); unknown names are refused."""
        unknown = set(knobs) - set(KNOB_DEFAULTS)
        if unknown:
            raise ValueError("unknown emulator knobs: {}".format(", ".join(sorted(unknown))))
        with self._lock:
            self._knobs.update(knobs)

    @property
    def knobs(self) -> Dict[str, Any]:
        with self._lock:
            return dict(self._knobs)

    def fail_next(self, status: int, count: int = 1, retry_after: Optional[str] = None,
                  method: Optional[str] = None, path: Optional[str] = None,
                  body: Any = None, content_type: str = "application/json",
                  headers: Optional[Dict[str, str]] = None, after: bool = False) -> None:
        """Answer the next ``count`` matching requests with ``status`` (before auth).

        ``path`` matches as a regular expression searched in the raw path.
        ``body`` (str or bytes) defaults to the v2 failure JSON. ``after=True``
        processes a successful request first and then answers with the fault,
        like a proxy losing the real response (the server did the work).
        ``status=DROP`` closes the connection without an answer.
        """
        with self._lock:
            self._fail_queue.append({"status": status, "count": count, "retry_after": retry_after,
                                     "method": method, "path": path, "body": body,
                                     "content_type": content_type, "headers": headers,
                                     "after": after})

    def clear_faults(self) -> None:
        """Forget every pending ``fail_next``."""
        with self._lock:
            self._fail_queue.clear()

    # ----------------------------------------------------------- inspection

    def indicators(self, owner: Optional[str] = None,
                   kind: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
        with self._lock:
            return self._stores[owner or self.owners[0]].indicators(kind)

    def groups(self, owner: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
        with self._lock:
            return self._stores[owner or self.owners[0]].groups()

    def counts(self, owner: Optional[str] = None) -> Dict[str, int]:
        with self._lock:
            return self._stores[owner or self.owners[0]].counts()

    def jobs(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [job.snapshot() for job in self._jobs.values()]

    def job(self, batch_id: int) -> Dict[str, Any]:
        with self._lock:
            return self._jobs[batch_id].snapshot()

    def request_log(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._log]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------- dispatch

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str],
               body: bytes) -> Response:
        """Answer one request (the HTTP layer calls this; tests may too)."""
        lower = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            entry = {"method": method, "path": raw_path, "bytes": len(body),
                     "content_type": lower.get("content-type"),
                     "content_encoding": lower.get("content-encoding"),
                     "auth": _auth_scheme(lower.get("authorization")),
                     "timestamp": lower.get("timestamp"), "time": self.clock(),
                     "signature_ok": self._signature_ok(method, raw_path, lower)}
            self._log.append(entry)
            response = (self._fault(method, raw_path)
                        or self._authenticate(method, raw_path, lower)
                        or self._route(method, raw_path, lower, body))
            if DROP < response[0] < 400:
                response = self._fault(method, raw_path, after=True) or response
            entry["status"] = response[0]
            return response

    def _fault(self, method: str, raw_path: str, after: bool = False) -> Optional[Response]:
        for fault in self._fail_queue:
            if (fault["after"] == after
                    and (fault["method"] is None or fault["method"] == method)
                    and (fault["path"] is None or re.search(fault["path"], raw_path))):
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self._fail_queue.remove(fault)
                status, headers, payload = self._fault_response(
                    fault["status"], fault["retry_after"], fault["body"], fault["content_type"])
                headers.update(fault["headers"] or {})
                return status, headers, payload
        if after:
            return None
        knobs = self._knobs
        if knobs["rate_429"] and self._random.random() < knobs["rate_429"]:
            return self._fault_response(429, knobs["retry_after"], None, "application/json")
        if knobs["rate_5xx"] and self._random.random() < knobs["rate_5xx"]:
            return self._fault_response(knobs["status_5xx"], None, None, "application/json")
        return None

    @staticmethod
    def _fault_response(status: int, retry_after: Optional[str], body: Any,
                        content_type: str) -> Response:
        if body is None:
            body = json.dumps({"status": "Failure",
                               "message": "Injected fault (HTTP {})".format(status)})
        headers = {"Content-Type": content_type}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return status, headers, body if isinstance(body, bytes) else body.encode("utf-8")

    def _signature_ok(self, method: str, raw_path: str, headers: Mapping[str, str]) -> Optional[bool]:
        """For the request log: whether an HMAC signature is right for its own Timestamp."""
        auth = headers.get("authorization") or ""
        if not auth.startswith("TC ") or ":" not in auth or not self.secret_key:
            return None
        expected = hmac_expected(self.secret_key, raw_path, method, headers.get("timestamp", ""))
        return hmac.compare_digest(auth.rpartition(":")[2].encode(), expected.encode())

    def _authenticate(self, method: str, raw_path: str,
                      headers: Mapping[str, str]) -> Optional[Response]:
        """TC's two schemes; None when the caller is authenticated."""
        auth = headers.get("authorization")
        if not auth:
            return _failure(403, "Access Denied")
        if auth.startswith("TC-Token "):
            given = auth[len("TC-Token "):]
            if self.token and hmac.compare_digest(given.encode(), self.token.encode()):
                return None
            return _failure(401, "Unauthorized")
        if not auth.startswith("TC ") or ":" not in auth:
            return _failure(401, "Access Denied")
        access_id, _, signature = auth[3:].rpartition(":")
        if not (self.access_id and self.secret_key
                and hmac.compare_digest(access_id.encode(), self.access_id.encode())):
            return _failure(401, "Access Denied")
        timestamp = headers.get("timestamp", "")
        if not timestamp.isdigit() or \
                abs(self.clock() - int(timestamp)) > self._knobs["timestamp_window"]:
            return _failure(401, TIMESTAMP_TEXT)
        expected = hmac_expected(self.secret_key, raw_path, method, timestamp)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return _failure(401, SIGNATURE_TEXT)
        return None

    def _route(self, method: str, raw_path: str, headers: Mapping[str, str],
               body: bytes) -> Response:
        path, _, query = raw_path.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if not path.startswith("/api/"):
            return _failure(404, NOT_FOUND)
        path = path[len("/api"):]
        additional = params.get("includeAdditional") == "true"
        if method == "POST" and path == "/v2/batch":
            return self._create(body)
        if method == "POST" and path == "/v2/batch/createAndUpload":
            return self._create_and_upload(headers, body, additional)
        if method == "GET" and path == "/v2/types/indicatorTypes":
            return _json(200, {"status": "Success", "data": {
                "resultCount": len(INDICATOR_TYPE_INFO), "indicatorType": INDICATOR_TYPE_INFO}})
        if method == "GET" and path == "/v2/owners":
            return _json(200, {"status": "Success", "data": {"resultCount": len(self.owners), "owner": [
                {"id": index, "name": name, "type": "Organization"}
                for index, name in enumerate(self.owners, 1)]}})
        match = re.match(r"^/v2/batch/(\d+)(/errors|/results)?$", path)
        job = self._jobs.get(int(match.group(1))) if match else None
        if job is None:
            return _failure(404, NOT_FOUND)
        if method == "POST" and not match.group(2):
            return self._upload(job, headers, body)
        if method == "GET" and not match.group(2):
            self._advance(job, poll=True)
            return _json(200, {"status": "Success",
                               "data": {"batchStatus": job.batch_status(additional)}})
        if method == "GET" and match.group(2) == "/errors":
            return self._errors(job)
        if method == "GET" and match.group(2) == "/results":
            return self._results(job, params)
        return _failure(404, NOT_FOUND)

    # ------------------------------------------------------------ endpoints

    def _create(self, body: bytes) -> Response:
        refusal = self._batch_refusal()
        if refusal:
            return refusal
        try:
            config = json.loads(body.decode("utf-8"))
        except ValueError:
            return _failure(400, "Batch config is not valid JSON")
        checked = self._check_config(config)
        if not isinstance(checked, dict):
            return checked
        job = self._new_job(checked)
        return _json(201, {"status": "Success", "data": {"batchId": job.id}})

    def _batch_refusal(self) -> Optional[Response]:
        if self._knobs["batch_permission_denied"]:
            return _text(401, PERMISSION_DENIED_TEXT)
        if self._knobs["batch_disabled"]:
            return _text(503, BATCH_DISABLED_TEXT)
        return None

    def _check_config(self, config: Any) -> Any:
        """The normalised config, or an error response naming the field."""
        if not isinstance(config, dict):
            return _failure(400, "Batch config must be a JSON object")
        for name in BATCH_REQUIRED:
            if config.get(name) is None:
                return _failure(400, "Missing required field: {}".format(name))
        checked = dict(config)
        for name in BATCH_BOOLEANS:
            if name in checked:
                value = checked[name]
                if value in ("true", "false"):
                    checked[name] = value == "true"
                elif not isinstance(value, bool):
                    return _failure(400, "Invalid value for {}".format(name))
        for name, allowed in BATCH_ENUMS.items():
            if name in checked and checked[name] not in allowed:
                return _failure(400, "Invalid value for {}: must be one of {}".format(
                    name, ", ".join(allowed)))
        if checked["owner"] not in self._stores:
            return _failure(403, "Access Denied: owner {} is not accessible".format(
                checked["owner"]))
        return checked

    def _new_job(self, config: Dict[str, Any]) -> Job:
        job = Job(self._next_batch_id, config)
        self._next_batch_id += 1
        self._jobs[job.id] = job
        return job

    def _upload(self, job: Job, headers: Mapping[str, str], body: bytes) -> Response:
        if job.state != "Created":
            return _invalid("Batch job {} is {}, not Created".format(job.id, job.state))
        if headers.get("content-type", "").split(";")[0].strip() != "application/octet-stream":
            return _failure(400, "Content-Type must be application/octet-stream")
        return self._accept_content(job, body, headers.get("content-encoding", ""))

    def _accept_content(self, job: Job, wire: bytes, encoding: str) -> Response:
        raw = wire
        if encoding.lower() == "gzip":
            try:
                raw = gzip.decompress(wire)
            except (OSError, EOFError):
                return _invalid("Content-Encoding gzip but the body is not gzip")
        limit = self._knobs["max_upload_bytes"]
        size = len(raw) if self._knobs["upload_limit_basis"] == "uncompressed" else len(wire)
        if size > limit:
            return _invalid("File size greater than allowable limit of {}".format(limit))
        try:
            parsed = json.loads(raw.decode("utf-8"))
            job.items = _item_count(parsed)
        except ValueError as exc:
            job.invalid_json = str(exc)[:200]
            parsed = None
        if job.items > self._knobs["max_items_per_job"]:
            return _invalid("Batch file has {} items; more than the limit of {}".format(
                job.items, self._knobs["max_items_per_job"]))
        job.body, job.upload_bytes, job.gzip = parsed, len(raw), encoding.lower() == "gzip"
        job.state, job.uploaded_at, job.polls = "Queued", self.clock(), 0
        return _json(202, {"status": "Queued"})

    def _create_and_upload(self, headers: Mapping[str, str], body: bytes,
                           additional: bool) -> Response:
        refusal = self._batch_refusal()
        if refusal:
            return refusal
        parts = _multipart(headers.get("content-type", ""), body)
        if "config" not in parts or "content" not in parts:
            return _failure(400, "multipart parts config and content are required")
        try:
            config = json.loads(parts["config"].decode("utf-8"))
        except ValueError:
            return _failure(400, "Batch config is not valid JSON")
        checked = self._check_config(config)
        if not isinstance(checked, dict):
            return checked
        job = self._new_job(checked)
        answer = self._accept_content(job, parts["content"], "")
        if answer[0] != 202:
            del self._jobs[job.id]
            return answer
        if job.items <= self._knobs["sync_save_limit"]:
            self._complete(job)
        return _json(201, {"status": "Success",
                           "data": {"batchStatus": job.batch_status(additional)}})

    def _errors(self, job: Job) -> Response:
        self._advance(job, poll=False)
        if job.state != "Completed":
            return _invalid(RUNNING_TEXT)
        if not job.errors:
            return _failure(404, NOT_FOUND)
        if job.error_fetches < self._knobs["error_file_delay"]:
            job.error_fetches += 1
            return _failure(404, NOT_FOUND)
        payload = gzip.compress(json.dumps(job.errors).encode("utf-8"))
        return 200, {"Content-Type": "application/octet-stream",
                     "Content-Encoding": "gzip"}, payload

    def _results(self, job: Job, params: Mapping[str, str]) -> Response:
        self._advance(job, poll=False)
        if job.state != "Completed":
            return _invalid(RUNNING_TEXT)
        results = [_result_entry(error) for error in job.errors]
        if "code" in params:
            results = [r for r in results if r["code"] == params["code"]]
        if "contains" in params:
            results = [r for r in results if params["contains"] in r["errorReason"]]
        if "severity" in params:
            wanted = params["severity"].lower()[:3]
            results = [r for r in results if r["severity"].lower()[:3] == wanted]
        if not results:
            return _failure(404, NOT_FOUND)
        return _json(200, results)

    # ------------------------------------------------------------ job runs

    def _advance(self, job: Job, poll: bool) -> None:
        """Move a job along Queued -> Running -> Completed by polls or by clock."""
        if job.state in ("Created", "Completed"):
            return
        knobs = self._knobs
        if poll:
            job.polls += 1
        if knobs["timing"] == "clock":
            elapsed = self.clock() - job.uploaded_at
            queued = elapsed < knobs["queued_seconds"]
            done = elapsed >= knobs["queued_seconds"] + knobs["running_seconds"]
        else:
            queued = job.polls <= knobs["queued_polls"]
            done = job.polls > knobs["queued_polls"] + knobs["running_polls"]
        if done and not knobs["stuck_running"] and job.id not in knobs["stuck_batches"]:
            self._complete(job)
        else:
            job.state = "Queued" if queued else "Running"

    def _complete(self, job: Job) -> None:
        """Apply the job's items to the owner's store and record counts and errors."""
        job.state = "Completed"
        if job.invalid_json is not None or job.body is None:
            job.counts["error"] = 1
            job.errors.append({"errorReason": FATAL_PREFIX + "Invalid JSON: {}".format(
                job.invalid_json or "no content"), "errorSource": ""})
            return
        if self._knobs["fatal_jobs"]:
            job.counts.update(error=1, unprocessed=job.items)
            job.errors.append({"errorReason": FATAL_PREFIX + "(injected fault)",
                               "errorSource": ""})
            return
        body, job.body = job.body, None
        indicators = body if isinstance(body, list) else body.get("indicator") or []
        groups = [] if isinstance(body, list) else body.get("group") or []
        store = self._stores[job.owner]
        halted = False
        items = [("Group", g) for g in groups] + [("Indicator", i) for i in indicators]
        for kind, item in items:
            if halted:
                job.counts["unprocessed"] += 1
                continue
            try:
                self._check_excluded(kind, item)
                self._apply(store, job.config, kind, item)
            except ItemError as exc:
                self._record_error(job, kind, str(exc), item)
                halted = bool(job.config.get("haltOnError"))
            else:
                job.counts["success"] += 1
                job.counts["success" + kind] += 1
        if not halted and isinstance(body, dict) and job.config["action"] == "Create":
            for link in body.get("association") or []:
                try:
                    _associate(store, link)
                except ItemError as exc:
                    self._record_error(job, "Association", str(exc), link)

    def _check_excluded(self, kind: str, item: Any) -> None:
        excluded = self._knobs["excluded_indicators"]
        if kind == "Indicator" and excluded and isinstance(item, dict) and item.get("summary") in excluded:
            raise ItemError("Indicator {} is on an indicator exclusion list".format(item["summary"]))

    @staticmethod
    def _apply(store: OwnerStore, config: Mapping[str, Any], kind: str, item: Any) -> None:
        if config["action"] == "Delete":
            if kind == "Group":
                store.delete_group(group_identity(item)[1])
            else:
                store.delete_indicator(*indicator_identity(item))
        elif kind == "Group":
            store.save_group(normalise_group(item), config)
        else:
            store.save_indicator(normalise_indicator(item), config)

    @staticmethod
    def _record_error(job: Job, kind: str, reason: str, item: Any) -> None:
        job.counts["error"] += 1
        if kind in ("Group", "Indicator"):
            job.counts["error" + kind] += 1
        source = json.dumps(item, separators=(",", ":"), default=str)
        job.errors.append({"errorReason": reason, "errorSource": source[:2000]})


# ------------------------------------------------------------------ helpers

def _auth_scheme(header: Optional[str]) -> Optional[str]:
    if not header:
        return None
    return "token" if header.startswith("TC-Token ") else "hmac"


def _item_count(parsed: Any) -> int:
    if isinstance(parsed, list):
        return len(parsed)
    if not isinstance(parsed, dict):
        raise ValueError("batch file must be a JSON object")
    for key in ("indicator", "group", "association"):
        if not isinstance(parsed.get(key, []), list):
            raise ValueError("{} must be an array".format(key))
    return len(parsed.get("indicator", [])) + len(parsed.get("group", []))


def _multipart(content_type: str, body: bytes) -> Dict[str, bytes]:
    """Parts of a multipart/form-data body by field name ({} if it is not one)."""
    if not content_type.startswith("multipart/form-data"):
        return {}
    try:
        return {name: part.data for name, part in parse_multipart(body, content_type).items()}
    except ApiError:
        return {}


def _associate(store: OwnerStore, link: Any) -> None:
    """One ``association`` entry (indicator -> group, or indicator <-> indicator)."""
    if not isinstance(link, dict):
        raise ItemError("Association error: entry is not an object")
    ref1, type1 = link.get("id_1") or link.get("ref_1"), link.get("type_1")
    ref2, type2 = link.get("id_2") or link.get("ref_2"), link.get("type_2")
    if type1 in GROUP_TYPES and type2 in INDICATOR_TYPES:
        ref1, type1, ref2, type2 = ref2, type2, ref1, type1
    if type1 not in INDICATOR_TYPES:
        raise ItemError("Association error: type_1 must name an indicator type")
    records = store.indicators(type1)
    if ref1 not in records:
        raise ItemError("Association error: {} {} not found".format(type1, ref1))
    if type2 in INDICATOR_TYPES:
        if not link.get("associationType"):
            raise ItemError("Association error: associationType is required")
        if ref2 not in store.indicators(type2):
            raise ItemError("Association error: {} {} not found".format(type2, ref2))
        return  # indicator-to-indicator links are accepted but not stored
    if not store.has_group(str(ref2)):
        raise ItemError("Association error: group {} not found".format(ref2))
    record = {"type": type1, "summary": ref1, "hashes": {}, "rating": None, "confidence": None,
              "tags": [], "securityLabels": [], "attributes": [], "groupXids": [str(ref2)],
              "fields": {}}
    store.save_indicator(record, {"attributeWriteType": "Static", "tagWriteType": "Append",
                                  "securityLabelWriteType": "Append"})


_CODES = (("Association", "0x1009"), ("Item not found", "0x1007"),
          ("Invalid File", "0x1005"), ("Invalid group", "0x1006"), (FATAL_PREFIX, "0x1004"))


def _result_entry(error: Mapping[str, Any]) -> Dict[str, Any]:
    reason = error["errorReason"]
    code = "0x1005"
    for prefix, value in _CODES:
        if reason.startswith(prefix):
            code = value
    if " group" in reason.split(":")[0]:
        code = "0x1006"
    return {"code": code, "severity": "Error", "errorReason": reason,
            "errorMessage": reason}


class _Server(QuietTlsErrors, ThreadingHTTPServer):
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ThreatConnectEmulator"
    timeout = 60
    # Headers and body in one segment: separate small writes meet the client's
    # delayed ACK and cost ~40 ms per request on keep-alive connections.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.emulator.handle(  # type: ignore[attr-defined]
            self.command, self.path, dict(self.headers.items()), body)
        if status == DROP:
            self.close_connection = True
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        """Quiet: the standalone mode promises one line of output."""


# ---------------------------------------------------------------------- CLI

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--access-id")
    parser.add_argument("--secret-key")
    parser.add_argument("--token")
    parser.add_argument("--owner", action="append", help="repeat for several owners")
    parser.add_argument("--queued-polls", type=int, default=KNOB_DEFAULTS["queued_polls"])
    parser.add_argument("--running-polls", type=int, default=KNOB_DEFAULTS["running_polls"])
    parser.add_argument("--max-upload-bytes", type=int,
                        default=KNOB_DEFAULTS["max_upload_bytes"])
    args = parser.parse_args(argv)
    emulator = ThreatConnectEmulator(
        access_id=args.access_id, secret_key=args.secret_key, token=args.token,
        owners=args.owner or ["Example Org"], host=args.host, port=args.port,
        queued_polls=args.queued_polls, running_polls=args.running_polls,
        max_upload_bytes=args.max_upload_bytes)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    emulator.start()
    print("ThreatConnect emulator ready at {}".format(emulator.url), flush=True)
    try:
        threading.Event().wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
