"""Turn Assemblyline's notification queue into StackStorm triggers, losing nothing.

Each poll: dispatch pages left over from a previous process, then pop up to
``max_pages_per_poll`` pages (one request each), persisting every page before
dispatching from it; then, at most every ``reconcile_interval`` seconds,
reconcile ingests that are past their deadline. ``poll()`` never raises:
errors are logged once with context (never a secret) and repeated failures
back off exponentially up to a cap, recovering by themselves.
"""
import time

import pack_lib_path  # noqa: F401  (puts the pack's actions/ on sys.path for lib.*)
from st2reactor.sensor.base import PollingSensor

from lib.assemblyline import AssemblylineService
from lib.config import load_config, secret_values
from lib.errors import PackError
from lib.inbox import Inbox
from lib.ledger import IngestLedger
from lib.notifications import MalformedMessage, ingest_id_of, trigger_for
from lib.reconcile import Reconciler

BACKOFF_BASE_SECONDS = 5
BACKOFF_CAP_SECONDS = 300
RECONCILE_INTERVAL_SECONDS = 300
RESET_CLIENT_AFTER_FAILURES = 3


class AssemblylineNotificationSensor(PollingSensor):
    def __init__(self, sensor_service, config=None, poll_interval=30, clock=time.time):
        super().__init__(sensor_service=sensor_service, config=config, poll_interval=poll_interval)
        self._logger = sensor_service.get_logger(name=self.__class__.__name__)
        self._clock = clock
        self._settings = None
        self._secrets = []
        self._service = None
        self._inbox = Inbox(sensor_service, clock=clock)
        self._ledger = IngestLedger(sensor_service, clock=clock)
        self._reconciler = None
        self._recovered = False
        self._backlog = []
        self._failures = 0
        self._retry_at = 0.0
        self._next_reconcile = 0.0
        self.stats = {"dispatched": 0, "duplicates": 0, "malformed": 0, "errors": 0}

    # -- st2 lifecycle (setup stays off the network) ---------------------------
    def setup(self):
        try:
            config = load_config(self.config)
        except PackError as error:
            self._logger.error("Assemblyline notification sensor is not configured: %s", error)
            return
        self._settings = config["assemblyline"]
        self._secrets = secret_values(config)
        self.set_poll_interval(int(self._settings["poll_interval"]))
        self._service = AssemblylineService(self._settings)
        self._reconciler = Reconciler(self._service, self._ledger, self._inbox, clock=self._clock)

    def poll(self):
        if self._settings is None or self._clock() < self._retry_at:
            return
        try:
            self._poll_once()
        except Exception as error:  # noqa: BLE001 - a raising poll() kills the sensor for good
            self._failed(error)
        else:
            self._recovered_from_failures()

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass

    # -- one poll -----------------------------------------------------------
    def _poll_once(self):
        if not self._recovered:  # pages a previous process popped but did not finish
            self._backlog.extend(self._inbox.recover())
            self._recovered = True
        self._drain_backlog()
        queue, page_size = self._settings["notification_queue"], int(self._settings["page_size"])
        for _ in range(int(self._settings["max_pages_per_poll"])):
            messages = self._service.pop_messages(queue, page_size)
            if not messages:
                break
            self._backlog.append(self._inbox.store(messages))  # persisted before any dispatch
            self._drain_backlog()
            if len(messages) < page_size:
                break
        if self._clock() >= self._next_reconcile:
            counts = self._reconciler.run(self._dispatch)
            self._next_reconcile = self._clock() + RECONCILE_INTERVAL_SECONDS
            if any(counts.values()):
                self._logger.info("Reconciled overdue ingests: %s", counts)

    def _drain_backlog(self):
        """Dispatch stored pages in order; a page that fails midway stays for the next poll."""
        while self._backlog:
            self._dispatch_page(self._backlog[0])
            self._backlog.pop(0)

    def _dispatch_page(self, page):
        for message in page.messages:
            ingest_id = ingest_id_of(message)
            if ingest_id and self._inbox.seen(ingest_id):
                self.stats["duplicates"] += 1
                continue
            try:
                trigger, payload = trigger_for(message)
            except MalformedMessage as problem:
                self.stats["malformed"] += 1
                self._logger.warning("Skipped a malformed notification message (%s; ingest_id %s)",
                                     problem, ingest_id or "unknown")
                continue
            self._dispatch(trigger, payload)
            self._inbox.remember(ingest_id)
        ids = [ingest_id_of(m) for m in page.messages]
        self._inbox.done(page, [i for i in ids if i and self._inbox.seen(i)])

    def _dispatch(self, trigger, payload):
        self.sensor_service.dispatch(trigger=trigger, payload=payload, trace_tag=payload["ingest_id"])
        self.stats["dispatched"] += 1

    # -- failures and backoff ---------------------------------------------------
    def _failed(self, error):
        self._failures += 1
        self.stats["errors"] += 1
        delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (self._failures - 1))
        self._retry_at = self._clock() + delay
        if self._failures >= RESET_CLIENT_AFTER_FAILURES:
            self._service.reset()  # log in again on the next try
        self._logger.error("Polling Assemblyline queue %s failed (%d in a row, next try in %d s): %s",
                           self._settings["notification_queue"], self._failures, delay, self._scrub(error))

    def _recovered_from_failures(self):
        if self._failures:
            self._logger.info("Polling Assemblyline works again after %d failed attempts", self._failures)
        self._failures = 0
        self._retry_at = 0.0

    def _scrub(self, error):
        text = str(error) if isinstance(error, PackError) else "{}: {}".format(type(error).__name__, error)
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text
