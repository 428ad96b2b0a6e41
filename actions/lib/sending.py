"""Assemblyline analyses into ThreatConnect batch jobs, in one process.

The workflows never pass indicators through StackStorm: an action's result
and the next action's parameters are database documents capped at 16 MB, and
100,000 indicators are far more. ``send_analyses`` fetches each submission,
builds its indicators and group, merges what several submissions share,
splits everything into as few jobs as ``batch_max_items``/``batch_max_bytes``
allow (``ceil(items / limit)``, groups first) and creates and uploads them.
It returns only references and counts; the workflow then polls the jobs
(``batch_report.jobs_report``) without holding a runner.

Re-sending is safe: every group has a deterministic xid and every indicator
is keyed by its summary, so ThreatConnect updates instead of duplicating.
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from lib.al_results import TagOrder, check_sid, fetch_results
from lib.errors import AnalysisNotReady, InputError, PackError, ThreatConnectError
from lib.indicators import TC_TYPES, build_indicators, most_restrictive_labels
from lib.tc_batch_bodies import iter_jobs
from lib.tc_submit import start_job
from lib.threatconnect import ThreatConnectClient

MAX_SIDS = 5000
# Lists in an indicator that several submissions may contribute to, with the key
# that identifies one entry.
_MERGED_LISTS = (("associatedGroups", ("groupXid",)), ("tag", ("name",)),
                 ("securityLabel", ("name",)), ("fileOccurrence", ("fileName", "path", "date")),
                 ("associatedIndicators", ("summary", "indicatorType")))


def check_sids(sids: Any) -> List[str]:
    """The distinct sids, in order; ``InputError`` naming the problem otherwise."""
    if isinstance(sids, str) or not isinstance(sids, Sequence) or not sids:
        raise InputError("sids must be a non-empty list of Assemblyline submission IDs")
    if len(sids) > MAX_SIDS:
        raise InputError("sids: {} given, at most {} per run".format(len(sids), MAX_SIDS))
    checked: List[str] = []
    for index, sid in enumerate(sids):
        try:
            sid = check_sid(sid)
        except InputError:
            raise InputError("sids[{}] is not an Assemblyline submission ID".format(index)) from None
        if sid not in checked:
            checked.append(sid)
    return checked


class Collected:
    """Every submission's indicators and groups, merged; plus what each contributed."""

    def __init__(self) -> None:
        self.indicators: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.groups: Dict[str, Dict[str, Any]] = {}
        self.submissions: List[Dict[str, Any]] = []
        self.failed: List[Dict[str, Any]] = []
        self.rejected: List[Dict[str, Any]] = []
        self.filtered: Dict[str, int] = {}
        self.warnings: List[str] = []

    def add(self, sid: str, results: Mapping[str, Any], built: Mapping[str, Any]) -> None:
        for indicator in built["indicators"]:
            key = (indicator["type"], indicator["summary"])
            existing = self.indicators.get(key)
            self.indicators[key] = indicator if existing is None else merge_indicator(existing, indicator)
        for group in built["groups"]:
            self.groups[group["xid"]] = group
        for entry in built["rejected"]:
            self.rejected.append(dict(entry, sid=sid))
        for reason, count in built["counts"].items():
            if reason not in TC_TYPES and count:
                self.filtered[reason] = self.filtered.get(reason, 0) + count
        self.warnings.extend("{}: {}".format(sid, w) for w in built["warnings"])
        self.submissions.append({
            "sid": sid, "al_url": results.get("al_url"), "score": results.get("max_score"),
            "verdict": results.get("verdict"), "group_xid": built["group_xid"],
            "indicators": len(built["indicators"]), "rejected": len(built["rejected"])})

    def indicator_list(self) -> List[Dict[str, Any]]:
        return [self.indicators[key] for key in sorted(self.indicators)]

    def counts_by_type(self) -> Dict[str, int]:
        counts = dict.fromkeys(TC_TYPES, 0)
        for tc_type, _ in self.indicators:
            counts[tc_type] = counts.get(tc_type, 0) + 1
        return counts


def _attribute_type(attribute: Any) -> Any:
    return attribute.get("type") if isinstance(attribute, Mapping) else attribute


def merge_indicator(first: Mapping[str, Any], second: Mapping[str, Any]) -> Dict[str, Any]:
    """One indicator seen in two submissions: both groups, tags, attributes and labels.

    Rating and confidence take the higher of the two. The inputs' lists are
    shared between indicators, so new lists are built, never changed in place.
    """
    merged = dict(first)
    for field, key_names in _MERGED_LISTS:
        if field not in first and field not in second:
            continue
        combined, seen = [], set()
        for entry in list(first.get(field) or ()) + list(second.get(field) or ()):
            key = tuple(entry.get(name) for name in key_names) if isinstance(entry, Mapping) else entry
            if key not in seen:
                seen.add(key)
                combined.append(entry)
        merged[field] = most_restrictive_labels(combined) if field == "securityLabel" else combined
    for field in ("rating", "confidence"):
        values = [v for v in (first.get(field), second.get(field)) if isinstance(v, (int, float))]
        if values:
            merged[field] = max(values)
    if "attribute" in first or "attribute" in second:
        # as attributeWriteType Singleton does in TC: the later sighting's attribute types
        # replace the earlier's (one Description, the latest; each submission's own record is
        # its group, associated above), and several values of one type from one sighting stay
        later = list(second.get("attribute") or ())
        replaced = {_attribute_type(a) for a in later}
        merged["attribute"] = [a for a in first.get("attribute") or () if _attribute_type(a) not in replaced] + later
    for field, pick in (("firstSeen", min), ("lastSeen", max)):  # same format: text order is time order
        values = [v for v in (first.get(field), second.get(field)) if isinstance(v, str)]
        if values:
            merged[field] = pick(values)
    return merged


FETCH_WORKERS = 4  # submissions fetched at once (their full result and summary: network waits)


def collect(service: Any, config: Mapping[str, Any], sids: Iterable[str], max_tags: int) -> Collected:
    """Fetch and build every submission; a permanent failure of one is listed, not fatal.

    Up to ``FETCH_WORKERS`` submissions are fetched at once (in windows, so results are
    held for a window only); they are built one by one in ``sids`` order. An analysis
    still running raises ``AnalysisNotReady`` and an unreachable Assemblyline a transient
    ``AssemblylineError``: the whole step is retried later. When no submission could be
    built at all, the first error is raised.
    """
    collected = Collected()
    first_error: Optional[PackError] = None
    order = TagOrder.from_mapping(config.get("mapping"))
    sids = list(sids)

    def fetch(sid: str) -> Tuple[str, Any]:
        try:
            return sid, fetch_results(service, sid, max_tags=max_tags, order=order)
        except PackError as error:
            return sid, error

    if len(sids) > 1:
        service.client  # log in once before the workers share the client
    with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
        for start in range(0, len(sids), FETCH_WORKERS * 4):
            for sid, results in pool.map(fetch, sids[start:start + FETCH_WORKERS * 4]):
                try:
                    if isinstance(results, PackError):
                        raise results
                    if results["partial"]:
                        raise AnalysisNotReady("submission {} is not completed yet (state {})".format(
                            sid, results.get("state")))
                    built = build_indicators(results, config).to_dict()
                except PackError as error:
                    if error.transient:
                        raise
                    first_error = first_error or error
                    collected.failed.append({"sid": sid, "error": str(error), "error_type": error.kind})
                    continue
                collected.add(sid, results, built)
                if results["truncated"]["tags"]:
                    collected.warnings.append("{}: {} tags beyond max_tags ({}) were not read".format(
                        sid, results["truncated"]["tags"], max_tags))
    if not collected.submissions and first_error is not None:
        raise first_error
    return collected


def send_collected(client: ThreatConnectClient, collected: Collected,
                   overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Create and upload the jobs (no waiting); the jobs and what was not sendable.

    If a request fails after the client's retries, ``ThreatConnectError`` is
    raised with ``partial_result`` listing the jobs already created.
    """
    config = client.batch_config("Create", overrides)
    jobs: List[Dict[str, Any]] = []
    unsendable: List[Dict[str, Any]] = []
    groups = [collected.groups[xid] for xid in sorted(collected.groups)]
    try:
        for job in iter_jobs(groups, collected.indicator_list(), client.max_items, client.max_bytes,
                             unsendable):
            entry = {"batch_id": None, "items": job.items, "groups": job.groups,
                     "indicators": job.indicators, "uploaded": False}
            start_job(client, config, job, lambda batch_id, e=entry: e.update(batch_id=batch_id) or
                      jobs.append(e))
            entry["uploaded"] = True
    except ThreatConnectError as error:
        error.partial_result = {"jobs": jobs, "owner": config["owner"]}  # type: ignore[attr-defined]
        raise
    return {"owner": config["owner"], "jobs": jobs, "unsendable": unsendable}


def send_analyses(service: Any, client: ThreatConnectClient, config: Mapping[str, Any], sids: Any,
                  max_tags: int = 1000, max_listed: int = 20,
                  overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The ``send_to_threatconnect`` result: references and counts, never the indicators."""
    sids = check_sids(sids)
    collected = collect(service, config, sids, max_tags)
    said = len(client.warnings)
    sent = send_collected(client, collected, overrides)
    collected.warnings.extend(client.warnings[said:])  # e.g. a create that may have left a job
    rejected = collected.rejected + [
        {"value": e.get("source"), "type": None, "reason": "unsendable", "detail": e["reason"]}
        for e in sent["unsendable"]]
    by_reason: Dict[str, int] = {}
    for entry in rejected:
        by_reason[entry["reason"]] = by_reason.get(entry["reason"], 0) + 1
    return {
        "owner": sent["owner"],
        "sids": [s["sid"] for s in collected.submissions],
        "submissions": collected.submissions,
        "failed_submissions": collected.failed,
        "indicator_count": len(collected.indicators),
        "group_count": len(collected.groups),
        "counts_by_type": collected.counts_by_type(),
        "filtered": dict(sorted(collected.filtered.items())),
        "rejected_count": len(rejected),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "rejected": rejected[:max_listed],
        "jobs": sent["jobs"],
        "batch_ids": [job["batch_id"] for job in sent["jobs"]],
        "warnings": collected.warnings[:max_listed],
        "warnings_not_listed": max(0, len(collected.warnings) - max_listed),
    }
