"""In-memory Assemblyline: users/sessions, ingester, dispatcher, notification queues, datastore.

Everything is guarded by one re-entrant lock; the HTTP layer and the test hooks of
:class:`~tests.emulators.assemblyline.AssemblylineEmulator` both call into this.
"""
import copy
import hashlib
import json
import random
import re
import secrets
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import al_ingest, al_query, al_results
from .al_analysis import (
    DEFAULT_INFO_VALUES, DEFAULT_MALICIOUS_KEYWORDS, DEFAULT_SAFELIST, SKIP_MARKER, Rules, file_info,
)
from .al_common import CLASSIFICATION, ApiError, Clock, IdFactory, iso, parse_iso, queue_key

METADATA_MAX_JSON = 4096
HASHED_PARAMS = ("classification", "deep_scan", "ignore_cache", "ignore_filtering", "ignore_size",
                 "ignore_recursion_prevention", "max_extracted", "max_supplementary")
ROLES = ["submission_create", "submission_view", "file_detail", "alert_view", "safelist_view"]

KNOB_DEFAULTS = {
    # analysis / ingester behaviour
    "analysis_delay": 0.0,          # seconds until an accepted ingest completes; None = only by hooks
    "max_file_size": 104857600,     # UI upload limit -> 413
    "max_scan_size": 104857600,     # ingester limit -> failure "File too large (n > max)"
    "submission_customize": False,  # False: a submission_profile is mandatory
    "restricted_params": (),        # params a profile user may not send -> 400
    "allow_url_submissions": True,
    "max_dtl": 0,
    "drop_rate": 0.0,               # fraction of ingests dropped with failure "Skipped"
    "cache_window": 172800.0,       # seconds a finished scan is reused (cache hit)
    "always_create_submission": False,
    "max_extraction_depth": 5,
    "queue_expiry": 86400.0,        # plumber deletes a queue whose head is older; None = never
    "plumber_interval": 1800.0,
    "malicious_keywords": DEFAULT_MALICIOUS_KEYWORDS,
    "info_values": DEFAULT_INFO_VALUES,
    "safelist": DEFAULT_SAFELIST,
    # sessions / faults
    "session_duration": 3600,
    "error_rate": 0.0,              # fraction of calls answered error_status (JSON)
    "error_status": 503,
    # {kind: fraction}: 502/503/504 refuse the call before any work (JSON error); "timeout"
    # does the work and answers only after timeout_delay seconds (a client with a shorter
    # timeout has given up); "lost" does the work and closes the connection unanswered.
    "fault_mix": None,
    "timeout_delay": 1.0,
    "fault_paths": None,            # regex: faults only for matching paths (None = all)
    "delay": 0.0,                   # seconds added before every response
    "drop_response_after_pop": False,  # True / int n: pop messages then close the connection
    "api_quota": None,              # int: concurrent calls per user before 503
    "daily_quota_exceeded": False,  # every authenticated call -> 503 "...daily..." (not retried)
    "ingest_quota": None,           # "concurrent" | "daily": ingest -> 503
    "seed": 0,
}
RULE_KNOBS = ("malicious_keywords", "info_values", "safelist")
CONCURRENCY_MESSAGE = "You've exceeded your maximum concurrent API calls quota of %d"
DAILY_API_MESSAGE = "You've exceeded your daily maximum API calls quota of %d"
INGEST_QUOTA_MESSAGES = {
    "concurrent": "You've exceeded your maximum async concurrent submission quota of 10",
    "daily": "You've exceeded your daily maximum submission quota of 10000",
}


class Task:
    """One accepted ingest (what the ingester tracks; becomes a notification message)."""

    def __init__(self, ingest_id: str, user: str, req: al_ingest.IngestRequest, now: float) -> None:
        self.ingest_id = ingest_id
        self.user = user
        self.name = req.name
        self.content = req.content
        self.sha256 = hashlib.sha256(req.content).hexdigest()
        self.params = req.params
        self.metadata = req.metadata
        self.queue = req.queue
        self.threshold = req.threshold
        self.ingest_time = now
        self.scan_key = ""
        self.outcome = "pending"  # pending | submitted | duplicate | cache_hit | skipped | too_large
        self.sid = ingest_id

    def describe(self) -> Dict[str, Any]:
        return {"ingest_id": self.ingest_id, "user": self.user, "name": self.name, "sha256": self.sha256,
                "sid": self.sid, "outcome": self.outcome, "scan_key": self.scan_key,
                "queue": self.queue, "threshold": self.threshold,
                "params": copy.deepcopy(self.params), "metadata": dict(self.metadata)}


class Submission:
    def __init__(self, record: Dict[str, Any], content: bytes, due: Optional[float]) -> None:
        self.record = record
        self.content = content
        self.due = due
        self.root = None  # type: Optional[al_results.FileNode]

    @property
    def sid(self) -> str:
        return self.record["sid"]

    @property
    def completed(self) -> bool:
        return self.record["state"] == "completed"


class Session:
    def __init__(self, user: str, expire_at: float, xsrf: str) -> None:
        self.user = user
        self.expire_at = expire_at
        self.xsrf = xsrf


def _parse_users(users: Dict[str, Union[str, Sequence[str]]]) -> Dict[str, Dict[str, str]]:
    parsed = {}  # type: Dict[str, Dict[str, str]]
    for user, keys in users.items():
        for key in ([keys] if isinstance(keys, str) else list(keys)):
            name, sep, secret = key.partition(":")
            if not sep or not name or not secret:
                raise ValueError("API keys look like 'name:secret', got %r for %r" % (key, user))
            parsed.setdefault(user, {})[name] = secret
    return parsed


class State:
    def __init__(self, users: Dict[str, Union[str, Sequence[str]]], knobs: Dict[str, Any]) -> None:
        self.lock = threading.RLock()
        self.clock = Clock()
        self.users = _parse_users(users)
        self.knobs = dict(KNOB_DEFAULTS)
        self.rules = Rules()
        self.rng = random.Random(0)
        self.ids = IdFactory(None)
        self.initial_knobs = dict(knobs)
        self.generation = 0  # bumped by reset(): stragglers from before are not logged
        self.set_knobs(**knobs)
        self.reset()

    # ------------------------------------------------------------------ config
    def set_knobs(self, **knobs: Any) -> None:
        unknown = set(knobs) - set(KNOB_DEFAULTS)
        if unknown:
            raise TypeError("unknown emulator knob(s): %s" % ", ".join(sorted(unknown)))
        with self.lock:
            self.knobs.update(knobs)
            if set(knobs) & set(RULE_KNOBS):
                self.rules = Rules(self.knobs["malicious_keywords"], self.knobs["info_values"],
                                   self.knobs["safelist"])
            if "seed" in knobs:
                self.rng = random.Random(knobs["seed"])
                self.ids = IdFactory(knobs["seed"])

    def restore_knobs(self) -> None:
        """Back to the defaults plus the constructor's knobs."""
        with self.lock:
            self.knobs = dict(KNOB_DEFAULTS)
            self.set_knobs(**dict({k: KNOB_DEFAULTS[k] for k in RULE_KNOBS}, **self.initial_knobs))

    def knob(self, name: str) -> Any:
        with self.lock:
            return self.knobs[name]

    def reset(self) -> None:
        """Forget every session, queue, submission, file and log entry (knobs stay)."""
        with self.lock:
            self.generation += 1
            self.sessions = {}  # type: Dict[str, Session]
            self.queues = {}  # type: Dict[str, List[Dict[str, Any]]]
            self.submissions = {}  # type: Dict[str, Submission]
            self.files = {}  # type: Dict[str, bytes]
            self.hash_index = {}  # type: Dict[Tuple[str, str], str]
            self.tasks = {}  # type: Dict[str, Task]
            self.cache = {}  # type: Dict[str, Tuple[str, Optional[int], float]]
            self.inflight = {}  # type: Dict[str, str]
            self.waiters = {}  # type: Dict[str, List[Task]]
            self.log = []  # type: List[Dict[str, Any]]
            self.calls_in_flight = {}  # type: Dict[str, int]
            self.forced_faults = []  # type: List[Union[int, str]]
            self.last_plumber = self.clock.now()

    # ------------------------------------------------------------------ auth
    def check_apikey(self, user: Optional[str], apikey: Optional[str]) -> bool:
        name, _, secret = (apikey or "").partition(":")
        keys = self.users.get(user or "", {})
        return bool(name) and name in keys and secrets.compare_digest(keys[name], secret)

    def login(self, data: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, str]]:
        user, apikey = data.get("user"), data.get("apikey")
        if not user or not (apikey or data.get("password") or data.get("oauth_token")):
            raise ApiError(401, "Not enough information to proceed with authentication")
        if not apikey or not self.check_apikey(user, apikey):
            raise ApiError(401, "Invalid user or APIKey")
        with self.lock:
            duration = int(self.knobs["session_duration"])
            session_id, xsrf = secrets.token_hex(32), secrets.token_urlsafe(24)
            self.sessions[session_id] = Session(user, self.clock.now() + duration, xsrf)
        body = {"username": user, "privileges": ["R", "W"], "roles_limit": list(ROLES),
                "session_duration": duration}
        return body, {"session": session_id, "XSRF-TOKEN": xsrf}

    def session_user(self, session_id: Optional[str]) -> str:
        if not session_id:
            raise ApiError(401, "Session not found")
        with self.lock:
            session = self.sessions.get(session_id)
            now = self.clock.now()
            if session is None or session.expire_at < now:
                self.sessions.pop(session_id, None)
                raise ApiError(401, "Session expired")
            session.expire_at = now + int(self.knobs["session_duration"])
            return session.user

    def logout(self, session_id: Optional[str]) -> None:
        with self.lock:
            self.sessions.pop(session_id or "", None)

    def expire_sessions(self, user: Optional[str] = None) -> int:
        with self.lock:
            doomed = [k for k, s in self.sessions.items() if user is None or s.user == user]
            for key in doomed:
                del self.sessions[key]
            return len(doomed)

    # ------------------------------------------------------------------ faults / quotas
    def fault_applies(self, path: str) -> bool:
        pattern = self.knob("fault_paths")
        return pattern is None or re.search(pattern, path) is not None

    def pick_fault(self, path: str) -> Optional[Union[int, str]]:
        """A forced (``fail_next``) or random (``error_rate``) fault for this call, if any."""
        with self.lock:
            if not self.fault_applies(path):
                return None
            if self.forced_faults:
                return self.forced_faults.pop(0)
            if self.knobs["error_rate"] and self.rng.random() < self.knobs["error_rate"]:
                return int(self.knobs["error_status"])
            return self._mixed_fault()

    def _mixed_fault(self) -> Optional[Union[int, str]]:
        """A fault drawn from ``fault_mix`` (caller holds the lock)."""
        mix = self.knobs["fault_mix"] or {}
        draw = self.rng.random()
        for kind, fraction in sorted(mix.items(), key=lambda item: str(item[0])):
            if draw < fraction:
                return kind if kind in ("timeout", "lost") else int(kind)
            draw -= fraction
        return None

    def begin_call(self, user: str) -> None:
        with self.lock:
            if self.knobs["daily_quota_exceeded"]:
                raise ApiError(503, DAILY_API_MESSAGE % 10000)
            quota = self.knobs["api_quota"]
            if quota is not None and self.calls_in_flight.get(user, 0) >= quota:
                raise ApiError(503, CONCURRENCY_MESSAGE % quota)
            self.calls_in_flight[user] = self.calls_in_flight.get(user, 0) + 1

    def end_call(self, user: str) -> None:
        with self.lock:
            self.calls_in_flight[user] = max(0, self.calls_in_flight.get(user, 0) - 1)

    def take_drop_after_pop(self) -> bool:
        with self.lock:
            value = self.knobs["drop_response_after_pop"]
            if isinstance(value, bool) or not isinstance(value, int):
                return bool(value)
            if value <= 0:
                return False
            self.knobs["drop_response_after_pop"] = value - 1
            return True

    def record(self, entry: Dict[str, Any], generation: int) -> None:
        with self.lock:
            if generation == self.generation:
                self.log.append(entry)

    # ------------------------------------------------------------------ files
    def store_file(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        with self.lock:
            self.files[sha256] = content
            for algo in ("md5", "sha1", "sha256"):
                self.hash_index[(algo, hashlib.new(algo, content).hexdigest())] = sha256
        return sha256

    def lookup_file(self, method: str, value: str) -> Optional[bytes]:
        with self.lock:
            sha256 = self.hash_index.get((method, value))
            return self.files.get(sha256) if sha256 else None

    # ------------------------------------------------------------------ ingest
    def ingest_config(self) -> al_ingest.IngestConfig:
        with self.lock:
            k = self.knobs
            return al_ingest.IngestConfig(int(k["max_file_size"]), bool(k["submission_customize"]),
                                          tuple(k["restricted_params"]), bool(k["allow_url_submissions"]),
                                          int(k["max_dtl"]))

    def ingest(self, user: str, content_type: str, body: bytes) -> Dict[str, str]:
        with self.lock:
            quota = self.knobs["ingest_quota"]
        if quota:
            raise ApiError(503, INGEST_QUOTA_MESSAGES.get(quota, str(quota)))
        req = al_ingest.validate(content_type, body, user, self.ingest_config(), self.lookup_file)
        with self.lock:
            now = self.clock.now()
            task = Task(self.ids.new_id(), user, req, now)
            task.metadata.update({"ingest_id": task.ingest_id, "type": str(task.params.get("type")),
                                  "ts": iso(now)})
            task.metadata = {k: v for k, v in task.metadata.items() if len(json.dumps(v)) <= METADATA_MAX_JSON}
            self.store_file(task.content)
            self.tasks[task.ingest_id] = task
            self._run_ingester(task)
        return {"ingest_id": task.ingest_id}

    def _scan_key(self, task: Task) -> str:
        hashed = {k: task.params.get(k) for k in HASHED_PARAMS}
        hashed["services"] = task.params.get("services", {}).get("selected", [])
        hashed["service_spec"] = task.params.get("service_spec", {})
        raw = json.dumps([task.sha256, hashed], sort_keys=True)
        key = "%sv0" % hashlib.md5(raw.encode()).hexdigest()
        return key + "." + task.ingest_id if task.params.get("ignore_cache") else key

    def _run_ingester(self, task: Task) -> None:
        task.scan_key = self._scan_key(task)
        size, limit = len(task.content), int(self.knobs["max_scan_size"])
        protected = task.params.get("never_drop") or task.params.get("ignore_size")
        if size > limit and not protected:
            task.outcome = "too_large"
            self._notify(task, task.ingest_id, None, "File too large (%d > %d)" % (size, limit))
        elif self._cache_hit(task):
            pass
        elif self._should_drop(task):
            task.outcome = "skipped"
            self._notify(task, task.ingest_id, None, "Skipped")
        elif task.scan_key in self.inflight:
            task.outcome, task.sid = "duplicate", self.inflight[task.scan_key]
            self.waiters[task.sid].append(task)
        else:
            self._submit(task)

    def _cache_hit(self, task: Task) -> bool:
        entry = self.cache.get(task.scan_key)
        if entry is None or self.clock.now() - entry[2] > float(self.knobs["cache_window"]):
            return False
        sid, score, _ = entry
        task.outcome, task.sid = "cache_hit", sid
        if self.knobs["always_create_submission"] and sid in self.submissions:
            task.sid = self._copy_submission(task, self.submissions[sid])
        self._notify(task, task.sid, score, "")
        return True

    def _should_drop(self, task: Task) -> bool:
        if task.params.get("never_drop"):
            return False
        if SKIP_MARKER in task.content or int(task.params.get("priority", 0)) <= 1:
            return True
        rate = float(self.knobs["drop_rate"])
        return bool(rate) and self.rng.random() < rate

    def _new_record(self, task: Task) -> Dict[str, Any]:
        now = self.clock.now()
        ttl = int(task.params.get("ttl") or 0)
        return {
            "archive_ts": None, "archived": False, "classification": CLASSIFICATION, "error_count": 0,
            "errors": [], "expiry_ts": iso(now + ttl * 86400) if ttl else None, "file_count": 1,
            "files": [{"name": task.name, "size": len(task.content), "sha256": task.sha256}],
            "from_archive": False, "max_score": 0, "metadata": dict(task.metadata),
            "params": copy.deepcopy(task.params), "results": [], "scan_key": task.scan_key,
            "sid": task.ingest_id, "state": "submitted", "times": {"completed": None, "submitted": iso(now)},
            "to_be_deleted": False, "tracing_events": [],
            "verdict": {"malicious": [], "non_malicious": []},
        }

    def _submit(self, task: Task) -> None:
        delay = self.knobs["analysis_delay"]
        due = None if delay is None else self.clock.now() + float(delay)
        sub = Submission(self._new_record(task), task.content, due)
        task.outcome = "submitted"
        self.submissions[sub.sid] = sub
        self.inflight[task.scan_key] = sub.sid
        self.waiters[sub.sid] = [task]

    def _copy_submission(self, task: Task, original: Submission) -> str:
        record = copy.deepcopy(original.record)
        record.update({"sid": task.ingest_id, "metadata": dict(task.metadata),
                       "params": dict(copy.deepcopy(task.params), psid=original.sid)})
        copied = Submission(record, original.content, None)
        copied.root = original.root
        self.submissions[task.ingest_id] = copied
        return task.ingest_id

    # ------------------------------------------------------------------ dispatcher
    def pump(self) -> None:
        """Complete every submission whose analysis delay elapsed; run the plumber when due."""
        with self.lock:
            now = self.clock.now()
            for sub in list(self.submissions.values()):
                if not sub.completed and sub.due is not None and sub.due <= now:
                    self.complete(sub.sid)
            interval = float(self.knobs["plumber_interval"])
            if self.knobs["queue_expiry"] is not None and now - self.last_plumber >= interval:
                self.run_plumber()

    def complete(self, sid: str) -> None:
        with self.lock:
            sub = self.submissions[sid]
            if sub.completed:
                return
            now = self.clock.now()
            record = sub.record
            root = al_results.analyse(record["files"][0]["name"], sub.content, self.rules, iso(now),
                                      int(self.knobs["max_extraction_depth"]),
                                      [int(record["params"].get("max_extracted", 100))])
            sub.root = root
            nodes = al_results.unique_nodes(root)
            for node in nodes.values():
                self.store_file(node.content)
            errors = [k for n in nodes.values() for k in n.errors]
            record.update({
                "state": "completed", "max_score": max(n.score for n in nodes.values()),
                "file_count": len(nodes), "results": [k for n in nodes.values() for k in n.results],
                "errors": errors, "error_count": len(errors),
            })
            record["times"]["completed"] = iso(now)
            self._finish(sub, now)

    def _finish(self, sub: Submission, now: float) -> None:
        scan_key = sub.record["scan_key"]
        self.cache[scan_key] = (sub.sid, sub.record["max_score"], now)
        if self.inflight.get(scan_key) == sub.sid:
            del self.inflight[scan_key]
        for task in self.waiters.pop(sub.sid, []):
            self._notify(task, sub.sid, sub.record["max_score"], "")

    def complete_all(self) -> int:
        with self.lock:
            pending = [s.sid for s in self.submissions.values() if not s.completed]
            for sid in pending:
                self.complete(sid)
            return len(pending)

    # ------------------------------------------------------------------ notification queues
    def _notify(self, task: Task, sid: str, score: Optional[int], failure: str) -> None:
        if not task.queue:
            return
        if task.threshold is not None and score is not None and score < task.threshold:
            return
        now = self.clock.now()
        message = {
            "submission": {
                "sid": sid, "time": iso(task.ingest_time),
                "files": [{"name": task.name, "size": len(task.content), "sha256": task.sha256}],
                "metadata": dict(task.metadata),
                "notification": {"queue": task.queue, "threshold": task.threshold},
                "params": copy.deepcopy(task.params), "scan_key": task.scan_key,
                "errors": [], "results": {}, "file_tree": {}, "file_infos": {},
            },
            "retries": 0, "failure": failure, "score": score, "extended_scan": "skipped",
            "ingest_id": task.ingest_id, "ingest_time": iso(task.ingest_time), "notify_time": iso(now),
        }
        self.queues.setdefault(queue_key(task.user, task.queue), []).append(message)

    def push_message(self, user: str, name: str, message: Dict[str, Any]) -> None:
        with self.lock:
            self.queues.setdefault(queue_key(user, name), []).append(copy.deepcopy(message))

    def pop_messages(self, user: str, name: str, count: int) -> List[Dict[str, Any]]:
        """Destructive FIFO pop of ``count`` messages (-1 = all)."""
        with self.lock:
            queue = self.queues.get(queue_key(user, name), [])
            taken = list(queue) if count < 0 else queue[:count]
            del queue[:len(taken)]
            return taken

    def run_plumber(self) -> List[str]:
        """Delete every queue whose head message is older than ``queue_expiry`` (or undated)."""
        with self.lock:
            now = self.clock.now()
            self.last_plumber = now
            expiry = self.knobs["queue_expiry"]
            doomed = []
            for key, queue in self.queues.items():
                if not queue or expiry is None:
                    continue
                head = queue[0]
                stamp = parse_iso(head.get("notify_time")) or parse_iso(head.get("ingest_time"))
                if stamp is None or now - stamp >= float(expiry):
                    doomed.append(key)
            for key in doomed:
                del self.queues[key]
            return doomed

    # ------------------------------------------------------------------ datastore views
    def _submission(self, sid: str) -> Submission:
        sub = self.submissions.get(sid)
        if sub is None:
            raise ApiError(404, "Submission ID %s does not exists." % sid)
        return sub

    def submission_record(self, sid: str) -> Dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._submission(sid).record)

    def is_completed(self, sid: str) -> bool:
        with self.lock:
            return self._submission(sid).completed

    def summary(self, sid: str) -> Dict[str, Any]:
        with self.lock:
            sub = self._submission(sid)
            nodes = al_results.unique_nodes(sub.root) if sub.root else {}
            return copy.deepcopy(al_results.summary(nodes, partial=not sub.completed))

    def full(self, sid: str) -> Dict[str, Any]:
        with self.lock:
            sub = self._submission(sid)
            data = copy.deepcopy(sub.record)
            if sub.root is None:
                files = data["files"][0]
                info = file_info(sub.content, data["times"]["submitted"])
                data["file_tree"] = {files["sha256"]: {
                    "name": [files["name"]], "type": info["type"], "sha256": files["sha256"],
                    "size": files["size"], "score": 0, "truncated": False, "children": {}}}
                data["file_infos"] = {files["sha256"]: info}
                data.update({"results": {}, "errors": {}})
            else:
                nodes = al_results.unique_nodes(sub.root)
                data["file_tree"] = al_results.file_tree(sub.root)
                data["file_infos"] = {sha: n.info for sha, n in nodes.items()}
                data["results"] = {k: r for n in nodes.values() for k, r in n.results.items()}
                data["errors"] = {k: e for n in nodes.values() for k, e in n.errors.items()}
            data.update({"missing_error_keys": [], "missing_file_keys": [], "missing_result_keys": []})
            return copy.deepcopy(data)

    def file_result(self, sha256: str) -> Dict[str, Any]:
        with self.lock:
            node = self._latest_node(sha256)
            if node is None:
                raise ApiError(404, "This file does not exists")
            return copy.deepcopy({
                "alternates": {}, "attack_matrix": {}, "classification": CLASSIFICATION,
                "childrens": [{"name": c.name, "sha256": c.sha256} for c in node.children],
                "emptys": [], "errors": list(node.errors.values()), "file_info": node.info,
                "heuristics": {}, "metadata": {}, "parents": [],
                "results": [r for k, r in node.results.items() if not k.endswith(".e")],
                "signatures": [], "tags": al_results.file_tags(node),
            })

    def _latest_node(self, sha256: str) -> Optional[al_results.FileNode]:
        done = sorted((s for s in self.submissions.values() if s.root is not None),
                      key=lambda s: s.record["times"]["completed"] or "", reverse=True)
        for sub in done:
            node = al_results.unique_nodes(sub.root).get(sha256)  # type: ignore[arg-type]
            if node is not None:
                return node
        return None

    def search_submissions(self, body: Dict[str, Any]) -> Dict[str, Any]:
        with self.lock:
            records = [s.record for s in self.submissions.values()]
            return copy.deepcopy(al_query.search(records, body))

    def delete_submission(self, sid: str) -> bool:
        with self.lock:
            return self.submissions.pop(sid, None) is not None
