"""Batch results sized for workflows and chatops.

ThreatConnect reports every error of a job; a 100,000-indicator submission can
carry thousands. Action results keep every count but list only the first
``limit`` errors (``threatconnect.max_reported_errors`` unless overridden).
"""
from typing import Any, Dict, List, Mapping, Optional

from lib.tc_submit import job_errors

STATUS_COUNTS = {
    "successCount": "success_count", "errorCount": "error_count", "unprocessCount": "unprocessed_count",
    "successIndicatorCount": "success_indicator_count", "errorIndicatorCount": "error_indicator_count",
    "successGroupCount": "success_group_count", "errorGroupCount": "error_group_count",
}


def error_limit(config: Mapping[str, Any], override: Optional[int]) -> int:
    return int(config["threatconnect"]["max_reported_errors"] if override is None else override)


def first_errors(errors: List[Mapping[str, Any]], limit: int) -> Dict[str, Any]:
    return {"errors": [dict(e) for e in errors[:limit]], "errors_not_listed": max(0, len(errors) - limit)}


def job_status(batch_id: int, status: Mapping[str, Any], completed: bool) -> Dict[str, Any]:
    result = {"batch_id": int(batch_id), "status": status.get("status"), "completed": completed}
    for wire, name in STATUS_COUNTS.items():
        if isinstance(status.get(wire), int):
            result[name] = status[wire]
    return result


def submission_summary(aggregate: Mapping[str, Any], limit: int) -> Dict[str, Any]:
    summary = {key: aggregate[key] for key in ("owner", "action", "jobs", "totals", "unfinished", "stopped")}
    summary.update(first_errors(aggregate["errors"], limit))
    return summary


TOTALS = ("success_count", "error_count", "unprocessed_count")


def jobs_report(client: Any, batch_ids: List[int], limit: int) -> Dict[str, Any]:
    """One status poll of every job; their errors once all of them are Completed.

    The workflows call this on an interval (``retry``) instead of holding a
    runner while TC works. Errors are fetched only when every job is done, so
    each poll costs one request per job and the error files are read once.
    """
    jobs = []
    for batch_id in batch_ids:
        status = client.status(batch_id)
        jobs.append(job_status(batch_id, status, status.get("status") == "Completed"))
    totals = {name: sum(job.get(name, 0) for job in jobs) for name in TOTALS}
    unfinished = [job["batch_id"] for job in jobs if not job["completed"]]
    errors: List[Dict[str, Any]] = []
    if not unfinished:
        for job in jobs:
            if job.get("error_count") or job.get("error_indicator_count") or job.get("error_group_count"):
                errors.extend(job_errors(client, job["batch_id"], job.get("error_count", 0)))
    report = {"completed": not unfinished, "jobs": jobs, "totals": totals, "unfinished": unfinished,
              "error_count": totals["error_count"]}
    report.update(first_errors(errors, limit))
    return report
