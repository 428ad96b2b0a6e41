"""Recover what the notification queue never said.

Assemblyline sends no message for timeouts or exhausted retries, deletes a
whole queue once its oldest message is 24 h old, and loses a page whose HTTP
response is lost. The ingest actions record every upload with a deadline
(``lib.ledger``); a record is settled once its ingest was dispatched (the
sensor's done pages remember its ingest_id and upload token) or reported
overdue. For each unsettled record past its deadline, in the ledger hours
from the cursor up to now, the reconciler looks the submission up by the
upload's token (``metadata.st2_ingest_token``; by ``metadata.ingest_id`` for
a record without one), then by the file's sha256 for cache hits that created
no submission of their own, and dispatches ``submission_completed`` when it
is completed, ``submission_failed`` when it is ``failed``,
``submission_overdue`` when nothing is found, and waits while it is still
running, until ``stuck_after`` seconds past the deadline, when it is reported
overdue. Then the cursor moves past every leading hour that is over and
settled: records are never deleted one by one.

Each outcome goes through the inbox like a popped page (stored before its
dispatch, marked done after), so a crash in between repeats it after a restart,
flagged ``redelivered``, rather than losing it. Completed and failed are outcomes:
the ingest_id and token are remembered, across restarts too, so a late queue
message for it is skipped as a duplicate. Overdue is a warning: the record is
settled (reported once) but the ingest is not remembered, so when the
submission finishes after all, its queue message still fires
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
from lib.ledger import HOUR, IngestLedger, hour_start
from lib.notifications import (TOKEN_METADATA, completed_from_record, failed_from_record, overdue_payload,
                               reported_key, token_key)

SEARCH_FIELDS = "sid,state,max_score"
# A submission still unfinished this long after its deadline is reported overdue
# (Assemblyline deletes a queue whose oldest message is 24 h old: its message is most likely gone).
STUCK_AFTER_SECONDS = 24 * 3600
MAX_HOURS_PER_RUN = 48  # ledger hours listed per run (after a long stop the cursor catches up)

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
        hours = self.ledger.open_hours(now, MAX_HOURS_PER_RUN)
        to_search = [r for _, records in hours for r in records
                     if r["deadline"] <= now and not self._settled(r)]
        waiting = {r["key"] for r in to_search}
        self._checked = {k: v for k, v in self._checked.items() if k in waiting}
        to_search.sort(key=lambda r: self._checked.get(r["key"], 0.0))  # stable: deadline order kept
        for record in to_search[:self.max_per_run]:
            try:
                counts[self._reconcile(record, dispatch, now)] += 1
            except Exception:
                self._checked[record["key"]] = now  # the next run starts with the others
                raise
        counts["deferred"] = max(0, len(to_search) - self.max_per_run)
        self._close_settled_hours(hours, now)
        return counts

    def _settled(self, record: Mapping[str, Any]) -> bool:
        """Dispatched (by queue message or reconciliation) or reported overdue."""
        return self._notified(record["ingest_id"], record) or self.inbox.seen(reported_key(record))

    def _close_settled_hours(self, hours: List[Any], now: float) -> None:
        """Move the cursor past each leading hour that is over and holds only settled records."""
        for hour, records in hours:
            if hour_start(hour) + HOUR > now or not all(self._settled(r) for r in records):
                return
            self.ledger.close_hour(hour)

    def _reconcile(self, record: Mapping[str, Any], dispatch: Dispatch, now: float) -> str:
        ingest_id = record["ingest_id"]
        found = self._find(record)
        state = found.get("state") if found is not None else None
        if record.get("token") == ingest_id and found is not None:  # answer lost: found by token
            real = self._ingest_id_of(found) or ingest_id
            if self._notified(real, record):  # its queue message came after all
                self.inbox.remember(str(token_key(record)))
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
            self._checked[record["key"]] = now
            return "still_running"
        else:
            (trigger, payload), outcome = overdue_payload(record, now, found), "overdue"
        if outcome == "overdue":  # a warning: a late queue message still fires
            keys = [reported_key(record)]
        else:
            keys = [k for k in dict.fromkeys([record["ingest_id"], token_key(record)]) if k]
        self._deliver(trigger, payload, keys, dispatch)
        self._checked.pop(record["key"], None)
        return outcome

    def _notified(self, ingest_id: str, record: Mapping[str, Any]) -> bool:
        """Already dispatched: by ingest_id, or by the upload's token (a twin ingest made by the
        client's retry of an upload whose answer was lost)."""
        key = token_key(record)
        return self.inbox.seen(ingest_id) or bool(key and self.inbox.seen(key))

    def _deliver(self, trigger: str, payload: Dict[str, Any], keys: List[str], dispatch: Dispatch) -> None:
        """Stored before the dispatch and marked done with ``keys`` after (they settle the
        record, across restarts too): a crash anywhere repeats the trigger after a restart
        (flagged ``redelivered``), never loses it."""
        page = self.inbox.outcome(trigger, payload, keys)
        self.inbox.persist(page)
        dispatch(trigger, payload)
        self.inbox.remember_all(keys)
        self.inbox.done(page, keys)

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
