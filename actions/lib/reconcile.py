"""Recover what the notification queue never said.

Assemblyline sends no message for timeouts or exhausted retries, deletes a
whole queue once its oldest message is 24 h old, and loses a page whose HTTP
response is lost. The ingest actions record every ingest with a deadline and
the sensor removes the record once it has dispatched that ingest's trigger.
For each record past its deadline, the reconciler:

- drops it without a search when its ingest_id was already dispatched (a
  record whose removal failed or was cut short);
- otherwise looks the submission up by ``metadata.ingest_id`` (then by the
  file's sha256, for cache hits that created no submission of their own) and
  dispatches ``submission_completed`` when it is completed,
  ``submission_failed`` when it is ``failed``, ``submission_overdue`` when
  nothing is found, and waits while it is still running, until
  ``stuck_after`` seconds past the deadline, when it is reported overdue.

Completed and failed are outcomes: the ingest_id is remembered so a late queue
message for it is skipped as a duplicate. Overdue is a warning: the record
leaves the ledger (it is reported once) but the ingest_id is not remembered,
so when the submission finishes after all, its queue message still fires
``submission_completed`` (or ``submission_failed``).

A run searches at most ``max_per_run`` records: those never checked by this
process first, oldest deadline first, then those that were still running,
least recently checked first, so neither already-dispatched records nor
long-running submissions can crowd out a lost ingest.
"""
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from lib.assemblyline import AssemblylineService, quote_query_value
from lib.inbox import Inbox
from lib.ledger import PENDING_GRACE_SECONDS, IngestLedger
from lib.notifications import completed_from_record, failed_from_record, overdue_payload

SEARCH_FIELDS = "sid,state,max_score"
# A submission still unfinished this long after its deadline is reported overdue
# (well inside PENDING_GRACE_SECONDS, after which the ledger record expires).
STUCK_AFTER_SECONDS = min(24 * 3600, PENDING_GRACE_SECONDS // 2)

Dispatch = Callable[[str, Dict[str, Any]], None]
OUTCOMES = ("already_notified", "completed", "failed", "overdue", "still_running", "deferred")


class Reconciler:
    def __init__(self, service: AssemblylineService, ledger: IngestLedger, inbox: Inbox,
                 clock: Callable[[], float] = time.time, max_per_run: int = 20,
                 stuck_after: float = STUCK_AFTER_SECONDS):
        self.service = service
        self.ledger = ledger
        self.inbox = inbox
        self.clock = clock
        self.max_per_run = max_per_run
        self.stuck_after = stuck_after
        self._checked: Dict[str, float] = {}  # ingest_id -> when a search last found it running

    def run(self, dispatch: Dispatch) -> Dict[str, int]:
        """Reconcile overdue ingests (searching at most ``max_per_run``); count the outcomes.

        Errors (search or datastore) propagate; what was dispatched before one stays done."""
        counts = dict.fromkeys(OUTCOMES, 0)
        now = self.clock()
        to_search = []
        for record in self.ledger.overdue(now):
            if self.inbox.seen(record["ingest_id"]):
                self.ledger.resolve(record["ingest_id"])
                counts["already_notified"] += 1
            else:
                to_search.append(record)
        waiting = {r["ingest_id"] for r in to_search}
        self._checked = {k: v for k, v in self._checked.items() if k in waiting}
        to_search.sort(key=lambda r: self._checked.get(r["ingest_id"], 0.0))  # stable: deadline order kept
        for record in to_search[:self.max_per_run]:
            try:
                counts[self._reconcile(record, dispatch, now)] += 1
            except Exception:
                self._checked[record["ingest_id"]] = now  # the next run starts with the others
                raise
        counts["deferred"] = max(0, len(to_search) - self.max_per_run)
        return counts

    def _reconcile(self, record: Mapping[str, Any], dispatch: Dispatch, now: float) -> str:
        ingest_id = record["ingest_id"]
        found = self._find(record)
        state = found.get("state") if found is not None else None
        if record.get("token") and found is not None:  # an upload whose answer was lost: found by token
            real = self._ingest_id_of(found) or ingest_id
            if self.inbox.seen(real):  # its queue message came after all
                self.ledger.resolve(ingest_id)
                return "already_notified"
            record = dict(record, ingest_id=real)
        if found is None:
            (trigger, payload), outcome = overdue_payload(record, now), "overdue"
        elif state == "completed":
            (trigger, payload), outcome = completed_from_record(self.service.submission(found["sid"]),
                                                                record), "completed"
        elif state == "failed":
            (trigger, payload), outcome = failed_from_record(self.service.submission(found["sid"]),
                                                             record), "failed"
        elif now < float(record["deadline"]) + self.stuck_after:
            self._checked[ingest_id] = now
            return "still_running"
        else:
            (trigger, payload), outcome = overdue_payload(record, now, found), "overdue"
        dispatch(trigger, payload)
        if outcome != "overdue":  # overdue is a warning: a late queue message still fires
            self.inbox.remember(record["ingest_id"])
        self._checked.pop(ingest_id, None)
        self.ledger.resolve(ingest_id)
        return outcome

    def _ingest_id_of(self, found: Mapping[str, Any]) -> Optional[str]:
        """The ingest_id Assemblyline gave an upload found by its token (its metadata)."""
        metadata = (self.service.submission(found["sid"]) or {}).get("metadata") or {}
        value = metadata.get("ingest_id")
        return str(value) if value else None

    def _find(self, record: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        for query in self._queries(record):
            items = self.service.search_submissions(query, fl=SEARCH_FIELDS, rows=10)
            items = [i for i in items if isinstance(i, Mapping) and i.get("sid")]
            if items:
                for state in ("completed", "failed"):
                    matching = [i for i in items if i.get("state") == state]
                    if matching:
                        return matching[0]
                return items[0]
        return None

    @staticmethod
    def _queries(record: Mapping[str, Any]) -> List[str]:
        if record.get("token"):
            queries = ["metadata.st2_ingest_token:{}".format(quote_query_value(record["token"]))]
        else:
            queries = ["metadata.ingest_id:{}".format(quote_query_value(record["ingest_id"]))]
        if record.get("sha256"):
            queries.append("files.sha256:{} AND state:completed".format(quote_query_value(record["sha256"])))
        return queries
