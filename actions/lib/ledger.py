"""What the pack has ingested, kept in the st2 datastore.

Two kinds of records, shared by actions and the sensor (so they use global
names with the pack prefix rather than st2's per-class ``local`` names):

- ``<pack>.pending.<ingest_id>``: an ingest whose outcome has not been
  dispatched yet, with its deadline. The sensor removes it once it has
  dispatched that ingest's trigger (after the dispatch, so a crash in between
  can only repeat a trigger, never lose one) and reconciles overdue ones. It
  has no TTL: however long the sensor is stopped, the record stays until its
  ingest is reported.
- ``<pack>.ingested.<sha256>``: the last ingest of a file content, so a
  directory re-run skips what was already submitted.
"""
import json
import time
from typing import Any, Callable, Dict, List, Optional

from lib.datastore import list_all

PACK = "assemblyline_threatconnect"
PENDING_PREFIX = PACK + ".pending."
INGESTED_PREFIX = PACK + ".ingested."


class IngestLedger:
    def __init__(self, datastore: Any, clock: Callable[[], float] = time.time):
        """``datastore``: an st2 action or sensor service (get/set/delete/list_values)."""
        self.datastore = datastore
        self.clock = clock

    # -- pending ingests ---------------------------------------------------
    def record_pending(self, ingest_id: str, sha256: str, file_path: str, queue: str,
                       deadline_seconds: int, token: Optional[str] = None) -> Dict[str, Any]:
        """``token``: the upload's own key (``metadata.st2_ingest_token``). A record whose
        ``ingest_id`` is its token stands for an upload whose ingest_id is not known (yet)."""
        now = self.clock()
        record = {"ingest_id": ingest_id, "sha256": sha256, "file_path": file_path, "queue": queue,
                  "ingested_at": now, "deadline": now + deadline_seconds}
        if token:
            record["token"] = token
        # No TTL: only a dispatched trigger (or a reconciled outcome) removes it, so a sensor
        # stopped for days still reports every ingest when it comes back.
        self.datastore.set_value(PENDING_PREFIX + ingest_id, json.dumps(record, sort_keys=True),
                                 local=False)
        return record

    def pending(self) -> List[Dict[str, Any]]:
        """Every pending record (all datastore pages), oldest deadline first."""
        records = []
        for item in list_all(self.datastore, PENDING_PREFIX, local=False):
            record = _loads(item.value)
            if record is None or not record.get("ingest_id"):
                continue
            record["ingest_id"] = str(record["ingest_id"])
            record["deadline"] = _number(record.get("deadline"))
            records.append(record)
        return sorted(records, key=lambda r: (r["deadline"], r["ingest_id"]))

    def overdue(self, now: Optional[float] = None) -> List[Dict[str, Any]]:
        now = self.clock() if now is None else now
        return [r for r in self.pending() if r["deadline"] <= now]

    def resolve(self, ingest_id: str) -> bool:
        """Forget a pending ingest (its trigger was dispatched); False when there was no record."""
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


def _number(value: Any) -> float:
    """A record's deadline as a number (a damaged record sorts first and counts as overdue)."""
    if isinstance(value, bool):
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
