"""Recover what the notification queue never said.

Assemblyline sends no message for timeouts or exhausted retries, deletes a
whole queue once its oldest message is 24 h old, and loses a page whose HTTP
response is lost. The ingest actions record every ingest with a deadline; for
each one past it, the reconciler looks the submission up by
``metadata.ingest_id`` (then by the file's sha256, for cache hits that created
no record of their own) and reports it completed, or overdue when nothing is
found.
"""
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from lib.assemblyline import AssemblylineService, quote_query_value
from lib.inbox import Inbox
from lib.ledger import IngestLedger
from lib.notifications import completed_from_record, overdue_payload

SEARCH_FIELDS = "sid,state,max_score"

Dispatch = Callable[[str, Dict[str, Any]], None]


class Reconciler:
    def __init__(self, service: AssemblylineService, ledger: IngestLedger, inbox: Inbox,
                 clock: Callable[[], float] = time.time, max_per_run: int = 20):
        self.service = service
        self.ledger = ledger
        self.inbox = inbox
        self.clock = clock
        self.max_per_run = max_per_run

    def run(self, dispatch: Dispatch) -> Dict[str, int]:
        """Handle up to ``max_per_run`` overdue ingests; return what happened to them."""
        counts = {"already_notified": 0, "completed": 0, "overdue": 0, "still_running": 0}
        for record in self.ledger.overdue()[:self.max_per_run]:
            outcome = self._reconcile(record, dispatch)
            counts[outcome] += 1
        return counts

    def _reconcile(self, record: Mapping[str, Any], dispatch: Dispatch) -> str:
        ingest_id = str(record["ingest_id"])
        if self.inbox.seen(ingest_id):
            self.ledger.resolve(ingest_id)
            return "already_notified"
        found = self._find(record)
        if found is not None and found.get("state") != "completed":
            return "still_running"
        if found is not None:
            trigger, payload = completed_from_record(self.service.submission(found["sid"]), ingest_id)
            outcome = "completed"
        else:
            trigger, payload = overdue_payload(record, self.clock())
            outcome = "overdue"
        dispatch(trigger, payload)
        self.inbox.remember(ingest_id)
        self.ledger.resolve(ingest_id)
        return outcome

    def _find(self, record: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        for query in self._queries(record):
            items = self.service.search_submissions(query, fl=SEARCH_FIELDS, rows=10)
            if items:
                completed = [i for i in items if i.get("state") == "completed"]
                return (completed or items)[0]
        return None

    @staticmethod
    def _queries(record: Mapping[str, Any]) -> List[str]:
        queries = ["metadata.ingest_id:{}".format(quote_query_value(record["ingest_id"]))]
        if record.get("sha256"):
            queries.append("files.sha256:{} AND state:completed".format(quote_query_value(record["sha256"])))
        return queries
