"""Submitting files to Assemblyline: one file, or a directory walk.

Both paths go through ``FileIngester.ingest_path``: open the file safely,
hash it, build the metadata (``file_path``, ``hostname``, ``sha256`` plus the
caller's), ingest it with the pack's notification queue, and record it in the
ledger so the sensor can reconcile it and a re-run can skip it.
"""
import json
import os
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from lib.assemblyline import AssemblylineService
from lib.errors import AssemblylineError, InputError, PackError, UnsafePathError
from lib.file_selection import FilePolicy, open_checked, snapshot, walk_directory
from lib.ledger import IngestLedger
from lib.notifications import TOKEN_METADATA

METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
METADATA_MAX_VALUE = 4096  # the ingester silently drops longer JSON-encoded values
RESERVED_METADATA = ("ingest_id", "type", "ts", TOKEN_METADATA)
QUEUE_RE = re.compile(r"^[a-z0-9_]{1,64}$")  # the client does not URL-encode queue names
MAX_PRIORITY = 250  # the server caps priority here
MAX_CONCURRENCY = 32
SECONDS_PER_DAY = 86400


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _boolean(name: str, value: Any) -> Optional[bool]:
    if value is not None and not isinstance(value, bool):
        raise InputError("{} must be true or false (got {})".format(name, _kind(value)))
    return value


def _text_param(name: str, value: Any) -> Optional[str]:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InputError("{} must be a non-empty string (got {})".format(
            name, "an empty string" if isinstance(value, str) else _kind(value)))
    return value


def _integer(name: str, value: Any, low: int, high: Optional[int] = None) -> Optional[int]:
    """An int in [low, high]; booleans are not integers here."""
    if value is None:
        return None
    in_range = isinstance(value, int) and not isinstance(value, bool) and value >= low \
        and (high is None or value <= high)
    if not in_range:
        bounds = "from {} to {}".format(low, high) if high is not None else "of at least {}".format(low)
        shown = repr(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else _kind(value)
        raise InputError("{} must be an integer {} (got {})".format(name, bounds, shown))
    return value


def _names(name: str, value: Any) -> Optional[List[str]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError("{} must be a list of non-empty strings (got {})".format(name, _kind(value)))
    return list(value)


def _service_spec(value: Any) -> Optional[Dict[str, Dict[str, Any]]]:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, Mapping) for k, v in value.items()):
        raise InputError("service_spec must be an object of service name: {parameter: value} "
                         "(e.g. {Extract: {password: infected}})")
    return {k: dict(v) for k, v in value.items()}


# Submission parameters a caller may set, each with its check; everything else comes from the profile.
SUBMISSION_PARAMS: Dict[str, Callable[[str, Any], Any]] = {
    "classification": _text_param,
    "description": _text_param,
    "deep_scan": _boolean,
    "priority": lambda name, value: _integer(name, value, 1, MAX_PRIORITY),
    "service_spec": lambda name, value: _service_spec(value),
    "ignore_cache": _boolean,
    "generate_alert": _boolean,  # sent inside params: servers ignore the root-level flag
    "never_drop": _boolean,
}


def validate_metadata(metadata: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    """Check caller metadata and return it as AL stores it (strings)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InputError("metadata must be an object of key: value pairs")
    clean: Dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not METADATA_KEY_RE.match(key):
            raise InputError("metadata key {!r} must be 1-64 letters, digits, '_', '.' or '-'".format(key))
        if key in RESERVED_METADATA:
            raise InputError("metadata key {!r} is set by Assemblyline itself".format(key))
        if isinstance(value, (dict, list)) or value is None:
            raise InputError("metadata value of {!r} must be a string, number or boolean".format(key))
        text = value if isinstance(value, str) else json.dumps(value)
        if len(json.dumps(text)) > METADATA_MAX_VALUE:
            raise InputError("metadata value of {!r} is over {} characters; Assemblyline would drop it"
                             .format(key, METADATA_MAX_VALUE))
        clean[key] = text
    return clean


class SubmissionRequest(NamedTuple):
    params: Dict[str, Any]
    metadata: Dict[str, str]


def submission_request(metadata: Optional[Mapping[str, Any]] = None,
                       services_selected: Optional[Sequence[str]] = None,
                       services_excluded: Optional[Sequence[str]] = None,
                       **params: Any) -> SubmissionRequest:
    """Validate what a caller asked for and shape it as Assemblyline's ``params`` and metadata.

    Every value is checked by name (type and range) so a bad one is refused
    before anything is read or uploaded; ``None`` means "not set".
    """
    unknown = set(params) - set(SUBMISSION_PARAMS)
    if unknown:
        raise InputError("unknown submission parameters: {} (known: {})".format(
            ", ".join(sorted(unknown)), ", ".join(sorted(SUBMISSION_PARAMS))))
    clean = {name: SUBMISSION_PARAMS[name](name, value) for name, value in params.items()}
    clean = {k: v for k, v in clean.items() if v is not None}
    services = {}
    selected = _names("services_selected", services_selected)
    excluded = _names("services_excluded", services_excluded)
    if selected is not None:
        services["selected"] = selected
    if excluded is not None:
        services["excluded"] = excluded
    if services:
        clean["services"] = services
    return SubmissionRequest(clean, validate_metadata(metadata))


class Delivery(NamedTuple):
    """Where Assemblyline reports the outcome, and with which profile it analyses."""

    queue: Optional[str]
    threshold: Optional[int]
    submission_profile: Optional[str]


def delivery_options(notification_queue: Any = None, notification_threshold: Any = None,
                     submission_profile: Any = None) -> Delivery:
    if notification_queue is not None and (not isinstance(notification_queue, str)
                                           or not QUEUE_RE.match(notification_queue)):
        raise InputError("notification_queue must be 1-64 lower-case letters, digits or '_'")
    return Delivery(notification_queue, _integer("notification_threshold", notification_threshold, 1),
                    _text_param("submission_profile", submission_profile))


class FileIngester:
    def __init__(self, service: AssemblylineService, policy: FilePolicy, ledger: IngestLedger,
                 queue: str, deadline_seconds: int, hostname: Optional[str] = None):
        self.service = service
        self.policy = policy
        self.ledger = ledger
        self.queue = queue
        self.deadline_seconds = deadline_seconds
        self.hostname = hostname or socket.gethostname()
        self._claimed: Dict[str, str] = {}  # sha256 -> first path in this run
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], service: AssemblylineService,
                    datastore: Any) -> "FileIngester":
        al = config["assemblyline"]
        return cls(service, FilePolicy.from_config(config["ingest"]), IngestLedger(datastore),
                   al["notification_queue"], int(al["completion_deadline"]))

    def ingest_path(self, path: str, params: Mapping[str, Any], metadata: Mapping[str, str],
                    threshold: Optional[int] = None, submission_profile: Optional[str] = None,
                    skip_if_seen: bool = False, dedupe_ttl: int = 0) -> Dict[str, Any]:
        opened = open_checked(path, self.policy)
        with opened.handle:
            copy = snapshot(opened, self.policy.max_file_size)  # hashed and uploaded: the same bytes
        with copy.handle:
            sha256 = copy.sha256
            if skip_if_seen:
                skipped = self._seen_before(sha256, opened.path)
                if skipped:
                    return skipped
            token = uuid.uuid4().hex
            full_metadata = dict(metadata)
            full_metadata.update({"file_path": opened.path, "hostname": self.hostname, "sha256": sha256,
                                  TOKEN_METADATA: token})
            # recorded before the upload, so an ingest whose answer is lost is still reconciled
            record, early_warning = self._record_token(token, sha256, opened.path)
            try:
                ingest_id = self.service.ingest(copy.handle, os.path.basename(opened.path), params,
                                                full_metadata, self.queue, threshold, submission_profile)
            except AssemblylineError as error:
                if not error.transient:  # refused: nothing reached Assemblyline
                    if record is not None:
                        self.ledger.forget(record["key"])
                else:  # the upload may have landed: reconciliation reports what became of it
                    error.args = (str(error) + "; it may have reached Assemblyline anyway: the sensor's "
                                  "reconciliation reports it after assemblyline.completion_deadline",)
                raise
        outcome = {"path": opened.path, "status": "ingested", "ingest_id": ingest_id, "sha256": sha256,
                   "size": opened.size, "queue": self.queue}
        warning = self._record(ingest_id, sha256, opened.path, dedupe_ttl, token, record) or early_warning
        if warning:
            outcome["warning"] = warning
        return outcome

    def _seen_before(self, sha256: str, path: str) -> Optional[Dict[str, Any]]:
        """A skip outcome when this content was ingested before or earlier in this run."""
        with self._lock:
            first_path = self._claimed.setdefault(sha256, path)
        if first_path != path:
            return {"path": path, "status": "skipped", "sha256": sha256, "reason_group": "duplicate in this run",
                    "reason": "same content as {} in this run".format(first_path)}
        previous = self.ledger.previous_ingest(sha256)
        if previous:
            return {"path": path, "status": "skipped", "sha256": sha256, "reason_group": "already ingested",
                    "reason": "already ingested as {}".format(previous.get("ingest_id"))}
        return None

    def _record_token(self, token: str, sha256: str, path: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        try:
            record = self.ledger.record_pending(token, sha256, path, self.queue, self.deadline_seconds,
                                                token=token)
        except Exception as exc:  # noqa: BLE001 - the upload still goes ahead; said in the result
            return None, "not recorded in the datastore before the upload ({}): if its answer is lost " \
                         "it cannot be reconciled".format(type(exc).__name__)
        return record, None

    def _record(self, ingest_id: str, sha256: str, path: str, dedupe_ttl: int, token: str,
                record: Optional[Dict[str, Any]]) -> Optional[str]:
        """Bookkeeping after a successful ingest: the upload's record again, with its ingest_id
        (same name and deadline). Its failure must not hide the ingest (a failed action would
        invite a duplicate re-submission), so it becomes a warning (the token record still
        covers it)."""
        try:
            self.ledger.record_pending(ingest_id, sha256, path, self.queue, self.deadline_seconds, token=token,
                                       replaces=record)
            if dedupe_ttl:
                self.ledger.mark_ingested(sha256, ingest_id, path, dedupe_ttl)
        except Exception as exc:  # noqa: BLE001 - any datastore failure
            return "ingested, but not recorded in the datastore ({}): the sensor cannot reconcile it " \
                   "if its notification is lost".format(type(exc).__name__)
        return None


class DirectoryReport:
    """Counts for a whole run plus a bounded list of per-file outcomes.

    ``ingests`` lists every file ingested (id, sha256, path), whatever
    ``max_listed`` says: the bulk workflow waits on exactly those.
    """

    def __init__(self, directory: Optional[str], max_listed: int):
        self.directory = directory
        self.max_listed = max_listed
        self.ingested_at = time.time()
        self.ingests: List[Dict[str, Any]] = []
        self.counts = {"ingested": 0, "skipped": 0, "failed": 0}
        self.skipped_by_reason: Dict[str, int] = {}
        self.files: List[Dict[str, Any]] = []
        self.unlisted = 0
        self.limit_reached = False

    def add(self, outcome: Dict[str, Any]) -> None:
        status = outcome["status"]
        self.counts[status] += 1
        if status == "ingested":
            self.ingests.append({key: outcome[key] for key in ("ingest_id", "sha256", "path")})
        if status == "skipped":
            reason = outcome.get("reason_group") or outcome["reason"]
            self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
        if len(self.files) < self.max_listed:
            self.files.append(outcome)
        else:
            self.unlisted += 1

    def to_dict(self) -> Dict[str, Any]:
        return {"directory": self.directory, "counts": dict(self.counts, seen=sum(self.counts.values())),
                "skipped_by_reason": dict(sorted(self.skipped_by_reason.items())),
                "files": self.files, "files_not_listed": self.unlisted, "limit_reached": self.limit_reached,
                "ingests": self.ingests, "ingested_at": self.ingested_at}


def ingest_candidates(ingester: FileIngester, report: DirectoryReport, candidates: Sequence[str],
                      params: Mapping[str, Any], metadata: Mapping[str, str], concurrency: int,
                      force: bool, dedupe_ttl: int, threshold: Optional[int] = None,
                      submission_profile: Optional[str] = None) -> None:
    """Ingest ``candidates`` into ``report``, at most ``concurrency`` files read and uploaded at once."""
    if candidates:
        ingester.service.client  # log in once before the workers share the client

    def one(path: str) -> Dict[str, Any]:
        try:
            return ingester.ingest_path(path, params, metadata, threshold, submission_profile,
                                        skip_if_seen=not force, dedupe_ttl=dedupe_ttl)
        except UnsafePathError as exc:
            return {"path": path, "status": "skipped", "reason": exc.reason,
                    "reason_group": exc.group}
        except PackError as exc:
            return {"path": path, "status": "failed", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one file must never fail the others
            return {"path": path, "status": "failed", "reason": "unexpected {}".format(type(exc).__name__)}

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for outcome in pool.map(one, candidates):
            report.add(outcome)


# -- the actions' entry points ------------------------------------------------------

def ingest_one(config: Mapping[str, Any], service: AssemblylineService, datastore: Any, path: Any,
               metadata: Any = None, notification_queue: Any = None, notification_threshold: Any = None,
               submission_profile: Any = None, **submission: Any) -> Dict[str, Any]:
    """``ingest_file``: validate every parameter, then read, upload and record one file."""
    request = submission_request(metadata, **submission)
    delivery = delivery_options(notification_queue, notification_threshold, submission_profile)
    ingester = FileIngester.from_config(config, service, datastore)
    if delivery.queue:
        ingester.queue = delivery.queue
    outcome = ingester.ingest_path(path, request.params, request.metadata, delivery.threshold,
                                   delivery.submission_profile)
    result = {"ingest_id": outcome["ingest_id"], "sha256": outcome["sha256"], "size": outcome["size"],
              "queue": outcome["queue"], "file_path": outcome["path"]}
    if "warning" in outcome:
        result["warning"] = outcome["warning"]
    return result


def walk_policy(base: FilePolicy, max_file_size: Any = None, include_hidden: Any = None,
                follow_symlinks: Any = None) -> FilePolicy:
    """The config's file policy with a run's overrides; ``max_file_size`` may only lower the limit.

    Following symbolic links never widens what may be read: every target is
    still resolved and checked against the allowed roots.
    """
    limit = _integer("max_file_size", max_file_size, 1)
    if limit is not None and limit > base.max_file_size:
        raise InputError("max_file_size ({}) may only lower the configured limit "
                         "(ingest.max_file_size is {})".format(limit, base.max_file_size))
    hidden = _boolean("include_hidden", include_hidden)
    follow = _boolean("follow_symlinks", follow_symlinks)
    return base._replace(
        max_file_size=base.max_file_size if limit is None else limit,
        include_hidden=base.include_hidden if hidden is None else hidden,
        follow_symlinks=base.follow_symlinks if follow is None else follow)


class BulkRun(NamedTuple):
    """A bulk run's validated options and the ingester they configure."""
    ingester: FileIngester
    request: SubmissionRequest
    delivery: Delivery
    force: bool
    dedupe_ttl: int
    concurrency: int
    max_listed: int

    def ingest(self, report: DirectoryReport, candidates: Sequence[str]) -> Dict[str, Any]:
        ingest_candidates(self.ingester, report, candidates, self.request.params, self.request.metadata,
                          self.concurrency, self.force, self.dedupe_ttl, self.delivery.threshold,
                          self.delivery.submission_profile)
        return dict(report.to_dict(), completion_deadline=self.ingester.deadline_seconds)


def bulk_run(config: Mapping[str, Any], service: AssemblylineService, datastore: Any, force: Any = False,
             dedupe_days: Any = 30, concurrency: Any = None, max_listed: Any = 100,
             max_file_size: Any = None, include_hidden: Any = None, follow_symlinks: Any = None,
             metadata: Any = None, notification_threshold: Any = None, submission_profile: Any = None,
             **submission: Any) -> BulkRun:
    """Validate every option shared by ``ingest_directory`` and ``ingest_files``."""
    dedupe_days = _integer("dedupe_days", 30 if dedupe_days is None else dedupe_days, 1, 365)
    concurrency = _integer("concurrency", concurrency, 1, MAX_CONCURRENCY) or int(config["ingest"]["concurrency"])
    request = submission_request(metadata, **submission)
    delivery = delivery_options(None, notification_threshold, submission_profile)
    ingester = FileIngester.from_config(config, service, datastore)
    ingester.policy = walk_policy(ingester.policy, max_file_size, include_hidden, follow_symlinks)
    return BulkRun(ingester, request, delivery, bool(_boolean("force", force)), dedupe_days * SECONDS_PER_DAY,
                   concurrency, _integer("max_listed", 100 if max_listed is None else max_listed, 0, 10000))


def ingest_tree(config: Mapping[str, Any], service: AssemblylineService, datastore: Any,
                directory: Any = None, include: Any = None, exclude: Any = None, max_files: Any = None,
                **options: Any) -> Dict[str, Any]:
    """``ingest_directory``: validate every parameter, then walk and ingest."""
    ingest_config = config["ingest"]
    directory = _text_param("directory", directory) or ingest_config.get("drop_directory")
    if not directory:
        raise InputError("no directory given and ingest.drop_directory is not configured")
    include = _names("include", include) or ["*"]
    exclude = _names("exclude", exclude) or []
    max_files = _integer("max_files", max_files, 1) or int(ingest_config["max_files_per_run"])
    run = bulk_run(config, service, datastore, **options)
    report = DirectoryReport(directory, run.max_listed)
    candidates: List[str] = []
    for entry in walk_directory(directory, run.ingester.policy, include, exclude):
        if entry.skip_reason:
            report.add({"path": entry.path, "status": "skipped", "reason": entry.skip_reason})
        elif len(candidates) >= max_files:
            report.limit_reached = True
            break
        else:
            candidates.append(entry.path)
    return run.ingest(report, candidates)


def ingest_files(config: Mapping[str, Any], service: AssemblylineService, datastore: Any, paths: Any = None,
                 **options: Any) -> Dict[str, Any]:
    """``ingest_files``: validate every parameter, then ingest the listed files."""
    paths = _names("paths", paths)
    if not paths:
        raise InputError("paths must be a non-empty list of absolute file paths")
    limit = int(config["ingest"]["max_files_per_run"])
    if len(paths) > limit:
        raise InputError("paths: {} given, at most ingest.max_files_per_run ({}) per run".format(
            len(paths), limit))
    run = bulk_run(config, service, datastore, **options)
    return run.ingest(DirectoryReport(None, run.max_listed), list(dict.fromkeys(paths)))
