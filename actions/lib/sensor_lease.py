"""One active notification sensor per queue, even when StackStorm runs several.

StackStorm HA without sensor partitioning starts the same sensor in every
sensor container. Two of them popping one queue is not itself a loss (each
persists what it pops), but both would recover the same stored pages and
reconcile the same ingests, firing triggers twice. So the sensor holds a lease
in the shared datastore (``<pack>.sensor_lease.<queue>``: instance, host, pid,
expiry) and only the holder polls; another process standing by logs one clear
error naming the holder, and takes over once the lease expires (the holder
renews it on every poll and releases it in ``cleanup()``).

The datastore has no compare-and-set, so the claim is written and read back:
a process polls only when it reads its own lease. Two processes starting within
the same instant can both read their own write once; from the next poll the
last writer alone holds it. That window is the residual risk, documented.
"""
import json
import os
import socket
import time
import uuid
from typing import Any, Callable, Dict, Optional

from lib.ledger import PACK

LEASE_PREFIX = PACK + ".sensor_lease."


class SensorLease:
    def __init__(self, datastore: Any, queue: str, ttl_seconds: int,
                 clock: Callable[[], float] = time.time, instance: Optional[str] = None):
        self.datastore = datastore
        self.name = LEASE_PREFIX + queue
        self.ttl = int(ttl_seconds)
        self.clock = clock
        self.instance = instance or "{}:{}:{}".format(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])

    def holder(self) -> Optional[Dict[str, Any]]:
        """The current lease, or None when there is none or it expired."""
        try:
            record = json.loads(self.datastore.get_value(self.name, local=False) or "null")
        except (TypeError, ValueError):
            return None
        if not isinstance(record, dict) or float(record.get("expires_at") or 0) <= self.clock():
            return None
        return record

    def acquire(self) -> Optional[Dict[str, Any]]:
        """Claim or renew; returns None when this process holds the lease, else the holder."""
        current = self.holder()
        if current is not None and current.get("instance") != self.instance:
            return current
        now = self.clock()
        record = {"instance": self.instance, "acquired_at": (current or {}).get("acquired_at", now),
                  "expires_at": now + self.ttl}
        self.datastore.set_value(self.name, json.dumps(record, sort_keys=True), ttl=self.ttl, local=False)
        written = self.holder()
        if written is not None and written.get("instance") != self.instance:
            return written  # another process wrote at the same moment: it has the lease
        return None

    def release(self) -> None:
        current = self.holder()
        if current is not None and current.get("instance") == self.instance:
            self.datastore.delete_value(self.name, local=False)
