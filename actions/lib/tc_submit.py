"""Any number of items sent as ThreatConnect batch jobs, and one aggregate of the outcomes.

``submit`` splits items into jobs (``lib.tc_batch_bodies.iter_jobs``), runs the
jobs one after the other through a ``ThreatConnectClient`` (a job carrying
groups completes before later jobs reference those groups) and returns one
aggregate dict. ``start_job`` (create + upload once) and ``job_errors`` are
also used on their own by ``lib.sending`` and ``lib.batch_report``.
"""
import logging
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from lib.errors import ThreatConnectError
from lib.tc_batch_bodies import BatchJob, iter_jobs
from lib.tc_http import MAX_MESSAGE_CHARS
from lib.threatconnect import ThreatConnectClient

LOG = logging.getLogger(__name__)

Aggregate = Dict[str, Any]

# Error reasons after which a job (and so the rest of a submission) is lost.
FATAL_REASONS = ("encountered an unexpected exception while processing batch job",
                 "would exceed the number of allowed indicators")


def submit(client: ThreatConnectClient, indicators: Iterable[Mapping[str, Any]],
           groups: Iterable[Mapping[str, Any]] = (), action: str = "Create",
           overrides: Optional[Mapping[str, Any]] = None) -> Aggregate:
    """Send any number of items as batch jobs and return one aggregate.

    Jobs run one after the other: create, upload, poll to completion, fetch
    errors when ``errorCount > 0``. All groups go first (first job, or the
    first jobs if they do not fit one), so every later job's
    ``associatedGroups`` resolve against groups already in the owner and no
    group is sent twice (a repeat would duplicate ``Append`` attributes).

    A submission stops early (rest counted in ``totals.not_submitted``)
    when a job with ``haltOnError`` reports an error, when a job reports a
    fatal reason, or when a job is still unfinished at ``poll_timeout``.
    If a request fails after retries, ``ThreatConnectError`` is raised with
    the aggregate so far in its ``partial_result`` attribute.

    Aggregate::

        {"owner", "action",
         "jobs": [{"batch_id", "status", "items", "groups", "indicators",
                   "success_count", "error_count", "unprocessed_count"}],
         "totals": {"items", "success", "error", "unprocessed", "rejected",
                    "not_submitted"},
         "errors": [{"reason", "source", "batch_id"}],   # all of them
         "unfinished": [batch_id, ...],
         "stopped": None | {"reason": "halt_on_error" | "fatal_error" |
                            "poll_timeout", "batch_id", "message"},
         "warnings": [str, ...]}   # e.g. a create retried that may have left an empty job
    """
    config = client.batch_config(action, overrides)
    result = _new_aggregate(config)
    said = len(client.warnings)
    rejected = []  # type: List[Dict[str, Any]]
    try:
        for job in iter_jobs(groups, indicators, client.max_items, client.max_bytes, rejected):
            _take_rejected(result, rejected)
            if result["stopped"]:
                result["totals"]["not_submitted"] += job.items
            else:
                _run_job(client, config, job, result)
        _take_rejected(result, rejected)
    except ThreatConnectError as exc:
        _take_rejected(result, rejected)
        result["warnings"] = client.warnings[said:]
        exc.partial_result = result  # type: ignore[attr-defined]
        raise
    result["warnings"] = client.warnings[said:]
    return result


def start_job(client: ThreatConnectClient, config: Mapping[str, Any], job: BatchJob,
              created: Optional[Callable[[int], None]] = None) -> int:
    """Create a job and upload its body once (see ``_upload_once``); return its batch id.

    ``created(batch_id)`` is called between the two calls, so a caller can
    report a job whose upload then fails.
    """
    batch_id = client.create_batch(config)
    if created is not None:
        created(batch_id)
    _upload_once(client, batch_id, job.body)
    LOG.info("ThreatConnect batch %s: %d items uploaded (%d bytes)", batch_id, job.items,
             len(job.body))
    return batch_id


def job_errors(client: ThreatConnectClient, batch_id: int, count: int) -> List[Dict[str, Any]]:
    """A completed job's errors as ``{"reason", "source", "batch_id"}``.

    A job that counted errors but has no error file gets one entry saying so.
    """
    found = [dict(zip(("reason", "source"), _error_fields(raw)), batch_id=batch_id)
             for raw in client.errors(batch_id, just_completed=True)]
    if not found and count:
        found.append({"reason": "ThreatConnect counted {} errors but returned no error file".format(
            count), "source": None, "batch_id": batch_id})
    return found


def is_fatal(reason: str) -> bool:
    """Whether an error reason is one of TC's whole-job failures (nothing more was processed)."""
    return any(fatal in reason.lower() for fatal in FATAL_REASONS)


def _run_job(client: ThreatConnectClient, config: Mapping[str, Any], job: BatchJob,
             result: Aggregate) -> None:
    """Create, upload, poll and collect errors of one job into ``result``."""
    entry = {"batch_id": None, "status": "Created", "items": job.items,
             "groups": job.groups, "indicators": job.indicators,
             "success_count": 0, "error_count": 0, "unprocessed_count": 0}

    def created(batch_id: int) -> None:
        entry["batch_id"] = batch_id
        result["jobs"].append(entry)
        result["totals"]["items"] += job.items

    batch_id = start_job(client, config, job, created)
    entry["status"] = "Queued"
    status, finished = client.wait(batch_id)
    _apply_status(entry, status, result["totals"])
    if not finished:
        result["unfinished"].append(batch_id)
        _stop(result, "poll_timeout", batch_id,
              "batch {} not completed within {:g} s".format(batch_id, client.poll_timeout))
        return
    if entry["error_count"]:
        for error in job_errors(client, batch_id, entry["error_count"]):
            result["errors"].append(error)
            if is_fatal(error["reason"]):
                _stop(result, "fatal_error", batch_id, error["reason"][:MAX_MESSAGE_CHARS])
    if entry["error_count"] and config.get("haltOnError"):
        _stop(result, "halt_on_error", batch_id,
              "batch {} halted at its first error".format(batch_id))


def _upload_once(client: ThreatConnectClient, batch_id: int, body: bytes) -> None:
    """Upload a job's body exactly once, even when the answer is lost.

    An upload is never replayed blindly (TC may have taken it, and a second
    copy would duplicate ``Append`` attributes). After an ambiguous failure
    (no answer, or a 5xx that is not TC's "batch api not available") the
    job's status decides: still ``Created`` means the body never arrived and
    it is sent again; any later state means it was accepted.
    """
    attempt = 0
    while True:
        try:
            client.upload(batch_id, body)
            return
        except ThreatConnectError as error:
            ambiguous = error.status is None or 500 <= error.status < 600
            if not ambiguous or attempt >= client.retries:
                raise
            attempt += 1
            state = client.status(batch_id, include_additional=False).get("status")
            if state != "Created":
                LOG.warning("ThreatConnect batch %s: upload answer lost (%s) but the job is %s: "
                            "accepted, not sent again", batch_id, error.status, state)
                return
            LOG.warning("ThreatConnect batch %s: upload failed (%s) and the job is still "
                        "Created: sending it again (%d of %d)", batch_id, error.status,
                        attempt, client.retries)
            client.sleep(min(client.backoff_max, client.backoff_factor * (2 ** attempt)))


def _error_fields(raw: Mapping[str, Any]) -> Tuple[str, Any]:
    reason = raw.get("errorReason") or raw.get("errorMessage") or "unknown error"
    return str(reason), raw.get("errorSource")


def _new_aggregate(config: Mapping[str, Any]) -> Aggregate:
    return {"owner": config["owner"], "action": config["action"], "jobs": [],
            "totals": {"items": 0, "success": 0, "error": 0, "unprocessed": 0,
                       "rejected": 0, "not_submitted": 0},
            "errors": [], "unfinished": [], "stopped": None}


def _take_rejected(result: Aggregate, rejected: List[Dict[str, Any]]) -> None:
    for entry in rejected:
        result["errors"].append(dict(entry, batch_id=None))
    result["totals"]["rejected"] += len(rejected)
    del rejected[:]


def _apply_status(entry: Dict[str, Any], status: Mapping[str, Any],
                  totals: Dict[str, int]) -> None:
    entry["status"] = status.get("status", entry["status"])
    entry["success_count"] = _count(status, "successCount")
    entry["error_count"] = _count(status, "errorCount")
    entry["unprocessed_count"] = _count(status, "unprocessCount", "unprocessedCount")
    totals["success"] += entry["success_count"]
    totals["error"] += entry["error_count"]
    totals["unprocessed"] += entry["unprocessed_count"]


def _count(status: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = status.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _stop(result: Aggregate, reason: str, batch_id: int, message: str) -> None:
    if result["stopped"] is None:
        result["stopped"] = {"reason": reason, "batch_id": batch_id, "message": message}
