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

Each outcome goes through the inbox like a popped page (stored before its
dispatch, marked done after), so a crash in between repeats it after a restart,
flagged ``redelivered``, rather than losing it. Completed and failed are outcomes:
the ingest_id is remembered, across restarts too, so a late queue message for it
is skipped as a duplicate. Overdue is a warning: the record
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
from lib.ledger import IngestLedger
from lib.notifications import (TOKEN_METADATA, completed_from_record, failed_from_record, overdue_payload,
                               token_key)

SEARCH_FIELDS = "sid,state,max_score"
# A submission still unfinished this long after its deadline is reported overdue
# (Assemblyline deletes a queue whose oldest message is 24 h old: its message is most likely gone).
STUCK_AFTER_SECONDS = 24 * 3600

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
            if self._notified(record["ingest_id"], record):
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
        if record.get("token") == ingest_id and found is not None:  # answer lost: found by token
            real = self._ingest_id_of(found) or ingest_id
            if self._notified(real, record):  # its queue message came after all
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
        keys = [k for k in dict.fromkeys([record["ingest_id"], token_key(record)]) if k]
        self._deliver(trigger, payload, ingest_id, keys, dispatch, remember=outcome != "overdue")
        self._checked.pop(ingest_id, None)
        return outcome

    def _notified(self, ingest_id: str, record: Mapping[str, Any]) -> bool:
        """Already dispatched: by ingest_id, or by the upload's token (a twin ingest made by the
        client's retry of an upload whose answer was lost)."""
        key = token_key(record)
        return self.inbox.seen(ingest_id) or bool(key and self.inbox.seen(key))

    def _deliver(self, trigger: str, payload: Dict[str, Any], ledger_key: str, keys: List[str],
                 dispatch: Dispatch, remember: bool) -> None:
        """Stored before the dispatch, the ledger record settled and the page marked done after:
        a crash anywhere repeats the trigger after a restart (flagged ``redelivered``), never
        loses it. Overdue is a warning (``remember`` false): a late queue message still fires."""
        page = self.inbox.outcome(trigger, payload, ledger_key, keys)
        self.inbox.persist(page)
        dispatch(trigger, payload)
        self.ledger.resolve(ledger_key)
        ids = keys if remember else []
        for remembered in ids:
            self.inbox.remember(remembered)
        self.inbox.done(page, ids)

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
        if record.get("token"):  # finds the upload's twins too
            queries = ["metadata.{}:{}".format(TOKEN_METADATA, quote_query_value(record["token"]))]
        else:
            queries = ["metadata.ingest_id:{}".format(quote_query_value(record["ingest_id"]))]
        if record.get("sha256"):
            queries.append("files.sha256:{} AND state:completed".format(quote_query_value(record["sha256"])))
        return queries
