"""What the pack has ingested, kept in the st2 datastore.

Two kinds of records, shared by actions and the sensor (so they use global
names with the pack prefix rather than st2's per-class ``local`` names):

- ``<pack>.pending.<hour>.<token>``: one upload, written by the ingest action
  before the upload (and again with its ingest_id once Assemblyline answers,
  under the same name), filed under the UTC hour of its deadline. Nobody
  deletes it when its trigger fires: the sensor's done pages already say
  which ingests were dispatched, so a delete per message (an st2 API call
  each) would only repeat that. The reconciler lists only the hours from its
  cursor (``<pack>.pending_cursor``, the oldest hour that still holds an
  unsettled record) up to now, reports each overdue record nobody dispatched,
  and moves the cursor past an hour once every record in it is settled
  (dispatched, or reported overdue): one write per hour, whatever the number
  of ingests. Records expire ``KEEP_SECONDS`` after their deadline; a sensor
  stopped for longer than that no longer reports what its queue lost then.
- ``<pack>.ingested.<sha256>``: the last ingest of a file content, so a
  directory re-run skips what was already submitted.
"""
import calendar
import json
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from lib.datastore import list_all

PACK = "assemblyline_threatconnect"
PENDING_PREFIX = PACK + ".pending."
CURSOR_KEY = PACK + ".pending_cursor"
INGESTED_PREFIX = PACK + ".ingested."
KEEP_SECONDS = 30 * 24 * 3600   # a record lives this long after its deadline
HOUR = 3600
HOUR_FORMAT = "%Y%m%d%H"


def hour_of(timestamp: float) -> str:
    """The ledger hour (UTC, ``YYYYMMDDHH``) a deadline is filed under."""
    return time.strftime(HOUR_FORMAT, time.gmtime(max(0.0, timestamp)))


def hour_start(hour: str) -> float:
    return float(calendar.timegm(time.strptime(hour, HOUR_FORMAT)))


class IngestLedger:
    def __init__(self, datastore: Any, clock: Callable[[], float] = time.time):
        """``datastore``: an st2 action or sensor service (get/set/delete/list_values)."""
        self.datastore = datastore
        self.clock = clock

    # -- pending uploads (written by the ingest actions) -----------------------
    def record_pending(self, ingest_id: str, sha256: str, file_path: str, queue: str,
                       deadline_seconds: int, token: Optional[str] = None,
                       replaces: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Write one upload's record and return it with its datastore ``key``.

        ``token``: the upload's own key (``metadata.st2_ingest_token``); the record is named
        by it, so writing it again with the ingest_id (``replaces``: the first record, whose
        times it keeps) replaces it. A
        record whose ``ingest_id`` is its token stands for an upload whose ingest_id is not
        known (yet)."""
        now = self.clock()
        ingested_at, deadline = (replaces["ingested_at"], replaces["deadline"]) if replaces \
            else (now, now + deadline_seconds)
        record = {"ingest_id": ingest_id, "sha256": sha256, "file_path": file_path, "queue": queue,
                  "ingested_at": ingested_at, "deadline": deadline}
        if token:
            record["token"] = token
        key = "{}{}.{}".format(PENDING_PREFIX, hour_of(deadline), token or ingest_id)
        self.datastore.set_value(key, json.dumps(record, sort_keys=True),
                                 ttl=int(max(0.0, deadline - now) + KEEP_SECONDS), local=False)
        return dict(record, key=key)

    def forget(self, key: str) -> None:
        """Remove a record (an upload Assemblyline refused: nothing to wait for)."""
        self.datastore.delete_value(key, local=False)

    def pending(self) -> List[Dict[str, Any]]:
        """Every stored record, settled or not (all datastore pages), oldest deadline first."""
        return _sorted(self._records(PENDING_PREFIX))

    # -- what the reconciler reads (the sensor alone) --------------------------------
    def open_hours(self, now: float, max_hours: int) -> List[Tuple[str, List[Dict[str, Any]]]]:
        """The hours from the cursor up to now (at most ``max_hours``), each with its records."""
        cursor = self._cursor(now)
        hours = []
        start = hour_start(cursor)
        while start <= now and len(hours) < max_hours:
            hour = hour_of(start)
            hours.append((hour, _sorted(self._records("{}{}.".format(PENDING_PREFIX, hour)))))
            start += HOUR
        return hours

    def close_hour(self, hour: str) -> None:
        """Every record of ``hour`` is settled: the cursor moves to the next hour."""
        self.datastore.set_value(CURSOR_KEY, hour_of(hour_start(hour) + HOUR), local=False)

    def _cursor(self, now: float) -> str:
        value = self.datastore.get_value(CURSOR_KEY, local=False)
        if isinstance(value, str) and len(value) == 10 and value.isdigit():
            return value
        # no cursor yet (first run, or it was removed): start at the oldest record, once
        oldest = [r["key"][len(PENDING_PREFIX):].split(".", 1)[0] for r in self.pending()]
        valid = [h for h in oldest if len(h) == 10 and h.isdigit()]
        return min(valid) if valid else hour_of(now)

    def _records(self, prefix: str) -> List[Dict[str, Any]]:
        records = []
        for item in list_all(self.datastore, prefix, local=False):
            record = _loads(item.value)
            if record is None or not record.get("ingest_id"):
                continue
            record["ingest_id"] = str(record["ingest_id"])
            record["deadline"] = _number(record.get("deadline"))
            record["key"] = item.name
            records.append(record)
        return records

    # -- de-duplication by content ------------------------------------------
    def mark_ingested(self, sha256: str, ingest_id: str, file_path: str, ttl_seconds: int) -> None:
        record = {"ingest_id": ingest_id, "file_path": file_path, "at": self.clock()}
        self.datastore.set_value(INGESTED_PREFIX + sha256, json.dumps(record, sort_keys=True),
                                 ttl=int(ttl_seconds), local=False)

    def previous_ingest(self, sha256: str) -> Optional[Dict[str, Any]]:
        return _loads(self.datastore.get_value(INGESTED_PREFIX + sha256, local=False))


def _sorted(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return sorted(records, key=lambda r: (r["deadline"], r["ingest_id"]))


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
