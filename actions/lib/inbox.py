"""Persist-before-dispatch for the notification sensor.

Assemblyline's queue read is a destructive pop, so a popped page exists only
in the sensor's memory until it is dispatched. The inbox writes each page to
the datastore (one write per page, under a key chosen once, so a retried
write replaces rather than duplicates) before any dispatch, and overwrites it
with the page's ingest_ids once dispatched (one more write, with a TTL). After
a restart, pages still pending are dispatched again, skipping every ingest_id
already dispatched, so nothing is lost and a restart does not fire twice
(except for a page whose dispatch was cut short before it was marked done:
delivery is at least once, never at most once).

The dedupe memory is bounded (``memory`` keys, least recently used dropped
first; a message takes two: its ingest_id and its upload token): an ingest_id
replayed after it was dropped is dispatched again.
"""
import itertools
import json
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from lib.datastore import list_all

PAGE_PREFIX = "page."
DONE_TTL_SECONDS = 30 * 24 * 3600  # as long as ledger records live: done pages settle them


class Page(NamedTuple):
    key: str                 # datastore name (local to the sensor class)
    messages: List[Any]      # queue messages as popped, or
    triggers: Optional[List[List[Any]]] = None  # [trigger, payload, keys]: made by reconciliation
    recovered: bool = False  # stored by an earlier process and not marked done: may repeat triggers


class Inbox:
    def __init__(self, datastore: Any, clock: Callable[[], float] = time.time,
                 memory: int = 200000, done_ttl: int = DONE_TTL_SECONDS):
        self.datastore = datastore
        self.clock = clock
        self.done_ttl = done_ttl
        self.memory = memory
        self._seen: "OrderedDict[str, None]" = OrderedDict()
        self._counter = itertools.count()

    # -- dedupe memory -----------------------------------------------------
    def seen(self, ingest_id: str) -> bool:
        return ingest_id in self._seen

    def remember_all(self, keys: List[str]) -> None:
        for key in keys:
            self.remember(key)

    def remember(self, ingest_id: str) -> None:
        self._seen[ingest_id] = None
        self._seen.move_to_end(ingest_id)
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)

    # -- pages -------------------------------------------------------------
    def recover(self) -> List[Page]:
        """Load the dedupe memory from done pages and return pages still to dispatch, oldest first.

        Every stored page is read (the listing is paged); done pages are replayed into the
        memory oldest first, so with more ids than ``memory`` the most recent ones stay."""
        pending = []
        items = sorted(list_all(self.datastore, PAGE_PREFIX, local=True), key=lambda item: item.name)
        for item in items:
            key = item.name.split(":", 1)[-1]
            record = _loads(item.value)
            if record is None:
                continue
            if "done" in record:
                for ingest_id in record["done"] or []:
                    self.remember(str(ingest_id))
            elif isinstance(record.get("messages"), list):
                pending.append(Page(key, record["messages"], recovered=True))
            elif isinstance(record.get("triggers"), list):
                pending.append(Page(key, [], triggers=record["triggers"], recovered=True))
        return pending

    def page(self, messages: List[Any]) -> Page:
        """A popped page with its datastore key, not yet written (see ``persist``)."""
        # Time and counter keep keys in pop order; the random part makes them unique across
        # processes and restarts (two sensors, or a coarse clock, could otherwise overwrite
        # an unfinished page).
        key = "{}{:017.6f}-{:06d}-{}".format(PAGE_PREFIX, self.clock(), next(self._counter) % 1000000,
                                             uuid.uuid4().hex[:16])
        return Page(key, messages)

    def outcome(self, trigger: str, payload: Dict[str, Any], keys: List[str]) -> Page:
        """A page holding one trigger the pack made itself (a reconciled outcome) and the keys
        that settle its ledger record once done, not yet written."""
        return self.page([])._replace(triggers=[[trigger, payload, keys]])

    def persist(self, page: Page) -> None:
        """Write a page before anything is dispatched from it (safe to retry)."""
        record = {"triggers": page.triggers} if page.triggers is not None else {"messages": page.messages}
        self.datastore.set_value(page.key, json.dumps(record, separators=(",", ":")), local=True)

    def done(self, page: Page, ingest_ids: List[str]) -> None:
        """Replace the page by the ids it dispatched; they keep later replays from firing twice."""
        self.datastore.set_value(page.key, json.dumps({"done": ingest_ids}, separators=(",", ":")),
                                 ttl=self.done_ttl, local=True)


def _loads(value: Optional[str]) -> Optional[Dict[str, Any]]:
    try:
        record = json.loads(value) if value else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
