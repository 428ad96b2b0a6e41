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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from lib.assemblyline import AssemblylineService
from lib.errors import InputError, PackError, UnsafePathError
from lib.file_selection import FilePolicy, open_checked, sha256_of, walk_directory
from lib.ledger import IngestLedger

METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
METADATA_MAX_VALUE = 4096  # the ingester silently drops longer JSON-encoded values
RESERVED_METADATA = ("ingest_id", "type", "ts")
# Submission parameters a caller may set; everything else comes from the profile.
SUBMISSION_PARAMS = ("classification", "description", "deep_scan", "priority", "services",
                     "service_spec", "ignore_cache", "generate_alert", "never_drop")
MAX_PRIORITY = 250  # the server caps priority here


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
    """Validate what a caller asked for and shape it as Assemblyline's ``params`` and metadata."""
    services = {}
    if services_selected is not None:
        services["selected"] = list(services_selected)
    if services_excluded is not None:
        services["excluded"] = list(services_excluded)
    if services:
        params["services"] = services
    priority = params.get("priority")
    if priority is not None and not (isinstance(priority, int) and 1 <= priority <= MAX_PRIORITY):
        raise InputError("priority must be an integer from 1 to {}".format(MAX_PRIORITY))
    unknown = set(params) - set(SUBMISSION_PARAMS)
    if unknown:
        raise InputError("unknown submission parameters: {}".format(", ".join(sorted(unknown))))
    params = {k: v for k, v in params.items() if v is not None}
    return SubmissionRequest(params, validate_metadata(metadata))


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
            sha256 = sha256_of(opened.handle)
            if skip_if_seen:
                skipped = self._seen_before(sha256, opened.path)
                if skipped:
                    return skipped
            full_metadata = dict(metadata)
            full_metadata.update({"file_path": opened.path, "hostname": self.hostname, "sha256": sha256})
            ingest_id = self.service.ingest(opened.handle, os.path.basename(opened.path), params,
                                            full_metadata, self.queue, threshold, submission_profile)
        outcome = {"path": opened.path, "status": "ingested", "ingest_id": ingest_id, "sha256": sha256,
                   "size": opened.size, "queue": self.queue}
        warning = self._record(ingest_id, sha256, opened.path, dedupe_ttl)
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

    def _record(self, ingest_id: str, sha256: str, path: str, dedupe_ttl: int) -> Optional[str]:
        """Bookkeeping after a successful ingest. Its failure must not hide the ingest
        (a failed action would invite a duplicate re-submission), so it becomes a warning."""
        try:
            self.ledger.record_pending(ingest_id, sha256, path, self.queue, self.deadline_seconds)
            if dedupe_ttl:
                self.ledger.mark_ingested(sha256, ingest_id, path, dedupe_ttl)
        except Exception as exc:  # noqa: BLE001 - any datastore failure
            return "ingested, but not recorded in the datastore ({}): the sensor cannot reconcile it " \
                   "if its notification is lost".format(type(exc).__name__)
        return None


class DirectoryReport:
    """Counts for a whole run plus a bounded list of per-file outcomes."""

    def __init__(self, directory: str, max_listed: int):
        self.directory = directory
        self.max_listed = max_listed
        self.counts = {"ingested": 0, "skipped": 0, "failed": 0}
        self.skipped_by_reason: Dict[str, int] = {}
        self.files: List[Dict[str, Any]] = []
        self.unlisted = 0
        self.limit_reached = False

    def add(self, outcome: Dict[str, Any]) -> None:
        status = outcome["status"]
        self.counts[status] += 1
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
                "files": self.files, "files_not_listed": self.unlisted, "limit_reached": self.limit_reached}


def ingest_directory(ingester: FileIngester, directory: str, params: Mapping[str, Any],
                     metadata: Mapping[str, str], include: Sequence[str], exclude: Sequence[str],
                     concurrency: int, max_files: int, force: bool, dedupe_ttl: int,
                     threshold: Optional[int] = None, submission_profile: Optional[str] = None,
                     max_listed: int = 100) -> Dict[str, Any]:
    """Ingest every candidate under ``directory``; one file's failure never stops the others."""
    report = DirectoryReport(directory, max_listed)
    entries = walk_directory(directory, ingester.policy, include or ("*",), exclude or ())
    candidates: List[str] = []
    for entry in entries:
        if entry.skip_reason:
            report.add({"path": entry.path, "status": "skipped", "reason": entry.skip_reason})
        elif len(candidates) >= max_files:
            report.limit_reached = True
            break
        else:
            candidates.append(entry.path)
    if candidates:
        ingester.service.client  # log in once before the workers share the client

    def one(path: str) -> Dict[str, Any]:
        try:
            return ingester.ingest_path(path, params, metadata, threshold, submission_profile,
                                        skip_if_seen=not force, dedupe_ttl=dedupe_ttl)
        except UnsafePathError as exc:
            return {"path": path, "status": "skipped", "reason": exc.reason}
        except PackError as exc:
            return {"path": path, "status": "failed", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one file must never fail the others
            return {"path": path, "status": "failed", "reason": "unexpected {}".format(type(exc).__name__)}

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for outcome in pool.map(one, candidates):
            report.add(outcome)
    return report.to_dict()
