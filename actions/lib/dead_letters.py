"""Notification messages the sensor could not turn into a trigger, kept for a person.

No single message may stop the sensor: one it cannot turn into a payload (a
wrong shape, a non-finite score, a bug) is written here, counted, and the rest
of its page goes on. Records are global datastore names with the pack prefix
(``<pack>.deadletter.<key>``), so the ``list_dead_letters`` action sees what the
sensor wrote; each keeps the reason, when, the ingest_id if any and the message
(its JSON cut to ``MAX_MESSAGE_CHARS``), for ``DEAD_LETTER_TTL_SECONDS``.
"""
import json
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

from lib.datastore import list_all
from lib.ledger import PACK

DEAD_LETTER_PREFIX = PACK + ".deadletter."
DEAD_LETTER_TTL_SECONDS = 30 * 24 * 3600
MAX_MESSAGE_CHARS = 20000
MAX_REASON_CHARS = 500


class DeadLetters:
    def __init__(self, datastore: Any, clock: Callable[[], float] = time.time):
        """``datastore``: an st2 action or sensor service."""
        self.datastore = datastore
        self.clock = clock

    def add(self, message: Any, reason: str, ingest_id: Optional[str] = None) -> str:
        """Keep ``message`` with ``reason``; returns the record's name."""
        now = self.clock()
        name = "{}{:017.6f}-{}".format(DEAD_LETTER_PREFIX, now, uuid.uuid4().hex[:16])
        text = json.dumps(message, default=repr, allow_nan=True, sort_keys=True)
        record = {"reason": str(reason)[:MAX_REASON_CHARS], "at": now, "ingest_id": ingest_id,
                  "message": text[:MAX_MESSAGE_CHARS], "message_chars": len(text)}
        self.datastore.set_value(name, json.dumps(record), ttl=DEAD_LETTER_TTL_SECONDS, local=False)
        return name

    def list(self, limit: int = 20) -> Dict[str, Any]:
        """The oldest ``limit`` records and how many there are."""
        items = sorted(list_all(self.datastore, DEAD_LETTER_PREFIX, local=False), key=lambda i: i.name)
        records: List[Dict[str, Any]] = []
        for item in items[:limit]:
            try:
                record = json.loads(item.value)
            except (TypeError, ValueError):
                record = {"reason": "unreadable record", "message": str(item.value)[:MAX_MESSAGE_CHARS]}
            records.append(dict(record, key=item.name))
        return {"count": len(items), "dead_letters": records, "not_listed": max(0, len(items) - limit)}

    def delete(self, key: str) -> bool:
        if not key.startswith(DEAD_LETTER_PREFIX):
            raise ValueError("not a dead-letter record: {}".format(key))
        return bool(self.datastore.delete_value(key, local=False))
