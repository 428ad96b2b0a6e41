"""What the pack has ingested, kept in the st2 datastore.

Two kinds of records, shared by actions and the sensor (so they use global
names with the pack prefix rather than st2's per-class ``local`` names):

- ``<pack>.pending.<ingest_id>``: an ingest whose notification has not been
  seen yet, with its deadline; the sensor reconciles overdue ones.
- ``<pack>.ingested.<sha256>``: the last ingest of a file content, so a
  directory re-run skips what was already submitted.
"""
import json
import time
from typing import Any, Callable, Dict, List, Optional

PACK = "assemblyline_threatconnect"
PENDING_PREFIX = PACK + ".pending."
INGESTED_PREFIX = PACK + ".ingested."
# Keep a pending record this long after its deadline so reconciliation can run.
PENDING_GRACE_SECONDS = 3 * 24 * 3600


class IngestLedger:
    def __init__(self, datastore: Any, clock: Callable[[], float] = time.time):
        """``datastore``: an st2 action or sensor service (get/set/delete/list_values)."""
        self.datastore = datastore
        self.clock = clock

    # -- pending ingests ---------------------------------------------------
    def record_pending(self, ingest_id: str, sha256: str, file_path: str, queue: str,
                       deadline_seconds: int) -> Dict[str, Any]:
        now = self.clock()
        record = {"ingest_id": ingest_id, "sha256": sha256, "file_path": file_path, "queue": queue,
                  "ingested_at": now, "deadline": now + deadline_seconds}
        self.datastore.set_value(PENDING_PREFIX + ingest_id, json.dumps(record, sort_keys=True),
                                 ttl=int(deadline_seconds + PENDING_GRACE_SECONDS), local=False)
        return record

    def pending(self) -> List[Dict[str, Any]]:
        records = []
        for item in self.datastore.list_values(local=False, prefix=PENDING_PREFIX) or []:
            record = _loads(item.value)
            if record is not None and record.get("ingest_id"):
                records.append(record)
        return sorted(records, key=lambda r: (r.get("deadline", 0), r["ingest_id"]))

    def overdue(self) -> List[Dict[str, Any]]:
        now = self.clock()
        return [r for r in self.pending() if r.get("deadline", 0) <= now]

    def resolve(self, ingest_id: str) -> bool:
        return bool(self.datastore.delete_value(PENDING_PREFIX + ingest_id, local=False))

    # -- de-duplication by content ------------------------------------------
    def mark_ingested(self, sha256: str, ingest_id: str, file_path: str, ttl_seconds: int) -> None:
        record = {"ingest_id": ingest_id, "file_path": file_path, "at": self.clock()}
        self.datastore.set_value(INGESTED_PREFIX + sha256, json.dumps(record, sort_keys=True),
                                 ttl=int(ttl_seconds), local=False)

    def previous_ingest(self, sha256: str) -> Optional[Dict[str, Any]]:
        return _loads(self.datastore.get_value(INGESTED_PREFIX + sha256, local=False))


def _loads(value: Optional[str]) -> Optional[Dict[str, Any]]:
    if not value:
        return None
    try:
        record = json.loads(value)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
