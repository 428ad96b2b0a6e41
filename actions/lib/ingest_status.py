"""Where a run's ingests stand in Assemblyline, found by search (the bulk workflow's wait).

The bulk workflow cannot wait on sensor triggers (a workflow cannot consume
them) and must not read the notification queue (that is the sensor's, and a
pop is destructive). So it keeps the list of its own ingests and asks
Assemblyline, a few searches per poll:

- a fresh ingest's submission has ``sid == ingest_id``, so one query
  ``sid:"a" OR sid:"b" ...`` (``SEARCH_CHUNK`` ids per request) finds every
  submission that exists, with its state and score;
- a cache hit (or a duplicate of a file still in flight) creates no
  submission of its own: once ``cache_grace`` seconds have passed without a
  record, it is looked up by content (``files.sha256:<sha256> AND
  state:completed``) and reported with the earlier submission's sid
  (``cached: true``);
- whatever is neither completed nor failed ``overdue_after`` seconds after the
  ingest is reported overdue (Assemblyline drops ingests on timeouts and
  exhausted retries without a record the pack could find).
"""
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from lib.assemblyline import AssemblylineService, quote_query_value
from lib.errors import InputError

SEARCH_FIELDS = "sid,state,max_score"
SEARCH_CHUNK = 100
MAX_INGESTS = 10000
FINAL_STATES = ("completed", "failed")


def check_ingest_list(ingests: Any) -> List[Dict[str, Optional[str]]]:
    """The ingests as ``{ingest_id, sha256, path}``; ``InputError`` naming the bad entry."""
    if not isinstance(ingests, Sequence) or isinstance(ingests, str):
        raise InputError("ingests must be a list of {ingest_id, sha256, path} objects")
    if len(ingests) > MAX_INGESTS:
        raise InputError("ingests: {} given, at most {} per call".format(len(ingests), MAX_INGESTS))
    checked = []
    for index, entry in enumerate(ingests):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("ingest_id"), str) \
                or not entry["ingest_id"].strip():
            raise InputError("ingests[{}] has no ingest_id".format(index))
        checked.append({"ingest_id": entry["ingest_id"].strip(),
                        "sha256": entry.get("sha256") if isinstance(entry.get("sha256"), str) else None,
                        "path": entry.get("path") if isinstance(entry.get("path"), str) else None})
    return checked


def _number(name: str, value: Any, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < low:
        raise InputError("{} must be a number of at least {}".format(name, low))
    return float(value)


def now() -> float:
    """The current time (one name to replace in tests that let hours pass)."""
    return time.time()


class IngestChecker:
    def __init__(self, service: AssemblylineService, clock: Optional[Callable[[], float]] = None):
        self.service = service
        self.clock = clock or now

    def check(self, ingests: Any, ingested_at: Any, overdue_after: Any, cache_grace: Any = 60
              ) -> Dict[str, Any]:
        ingests = check_ingest_list(ingests)
        ingested_at = _number("ingested_at", ingested_at, 0)
        overdue_after = _number("overdue_after", overdue_after, 1)
        cache_grace = _number("cache_grace", cache_grace, 0)
        elapsed = max(0.0, self.clock() - ingested_at)
        found = self._by_sid([i["ingest_id"] for i in ingests])
        report: Dict[str, List[Dict[str, Any]]] = {"completed": [], "failed": [], "overdue": []}
        waiting = 0
        for ingest in ingests:
            record = found.get(ingest["ingest_id"])
            cached = False
            if record is None and elapsed >= cache_grace and ingest["sha256"]:
                record, cached = self._by_content(ingest["sha256"]), True
            state = record.get("state") if record else None
            entry = {"ingest_id": ingest["ingest_id"], "path": ingest["path"], "sha256": ingest["sha256"]}
            if state in FINAL_STATES:
                entry.update(sid=record["sid"], score=record.get("max_score"), cached=cached)
                report[state].append(entry)
            elif elapsed >= overdue_after:
                entry.update(sid=record.get("sid") if record else None, state=state)
                report["overdue"].append(entry)
            else:
                waiting += 1
        sids = []
        for entry in report["completed"]:
            if entry["sid"] not in sids:
                sids.append(entry["sid"])
        counts = {name: len(entries) for name, entries in report.items()}
        counts.update(waiting=waiting, total=len(ingests))
        return dict(report, done=waiting == 0, counts=counts, sids=sids, elapsed=round(elapsed, 1))

    def _by_sid(self, ingest_ids: List[str]) -> Dict[str, Dict[str, Any]]:
        found: Dict[str, Dict[str, Any]] = {}
        for start in range(0, len(ingest_ids), SEARCH_CHUNK):
            chunk = ingest_ids[start:start + SEARCH_CHUNK]
            query = " OR ".join("sid:{}".format(quote_query_value(i)) for i in chunk)
            for item in self.service.search_submissions(query, fl=SEARCH_FIELDS, rows=len(chunk)):
                if isinstance(item, Mapping) and item.get("sid") in chunk:
                    found[item["sid"]] = dict(item)
        return found

    def _by_content(self, sha256: str) -> Optional[Dict[str, Any]]:
        query = "files.sha256:{} AND state:completed".format(quote_query_value(sha256))
        items = [i for i in self.service.search_submissions(query, fl=SEARCH_FIELDS, rows=1)
                 if isinstance(i, Mapping) and i.get("sid")]
        return dict(items[0]) if items else None
