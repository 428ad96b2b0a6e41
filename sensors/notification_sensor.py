"""Turn Assemblyline's notification queue into StackStorm triggers, losing nothing.

Each poll: dispatch pages left over from a previous process, then pop up to
``max_pages_per_poll`` pages (one request each), persisting every page before
dispatching from it and marking it done with what it dispatched (two writes
per page, whatever its size: the done page settles those ingests' ledger
records, none is deleted per message); a popped page whose write failed is
kept in memory and written first on the next poll, and nothing more is popped
until it is. Queue failures back off
exponentially (capped) and recover by themselves. Reconciliation of ingests
past their deadline runs on its own schedule, after a successful queue poll,
with its own backoff: its failures never delay queue draining. ``poll()`` never
raises: errors are logged once with context (never a secret).
"""
import time

import pack_lib_path  # noqa: F401  (puts the pack's actions/ on sys.path for lib.*)
from st2reactor.sensor.base import PollingSensor

from lib.assemblyline import AssemblylineService
from lib.config import load_config, secret_values
from lib.dead_letters import DeadLetters
from lib.errors import AssemblylineError, PackError
from lib.inbox import Inbox
from lib.ledger import IngestLedger
from lib.notifications import MalformedMessage, delivery_key_of, ingest_id_of, trigger_for
from lib.reconcile import Reconciler
from lib.sensor_lease import SensorLease

BACKOFF_BASE_SECONDS = 5
BACKOFF_CAP_SECONDS = 300
RECONCILE_INTERVAL_SECONDS = 300
RECONCILE_BUSY_INTERVAL_SECONDS = 60   # while overdue ingests wait beyond one run's bound
RECONCILE_BACKOFF_CAP_SECONDS = 3600
RESET_CLIENT_AFTER_FAILURES = 3
LEASE_POLLS = 3  # the lease outlives this many poll intervals without a renewal


class AssemblylineNotificationSensor(PollingSensor):
    def __init__(self, sensor_service, config=None, poll_interval=30, clock=time.time):
        super().__init__(sensor_service=sensor_service, config=config, poll_interval=poll_interval)
        self._logger = sensor_service.get_logger(name=self.__class__.__name__)
        self._clock = clock
        self._settings = None
        self._config_error = None  # said on every poll until the config is fixed
        self._secrets = []
        self._service = None
        self._inbox = Inbox(sensor_service, clock=clock)
        self._ledger = IngestLedger(sensor_service, clock=clock)
        self._dead_letters = DeadLetters(sensor_service, clock=clock)
        self._reconciler = None
        self._lease = None
        self._standing_by = False
        self._recovered = False
        self._backlog = []
        self._unpersisted = None  # a popped page whose datastore write failed
        self._failures = 0
        self._retry_at = 0.0
        self._next_reconcile = 0.0
        self._reconcile_failures = 0
        self.stats = {"dispatched": 0, "duplicates": 0, "malformed": 0, "dead_letters": 0, "errors": 0,
                      "reconcile_errors": 0}

    # -- st2 lifecycle (setup stays off the network) ---------------------------
    def setup(self):
        try:
            config = load_config(self.config)
        except PackError as error:
            self._config_error = str(error)
            self._say_not_configured()
            return
        self._settings = config["assemblyline"]
        self._secrets = secret_values(config)
        self.set_poll_interval(int(self._settings["poll_interval"]))
        self._service = AssemblylineService(self._settings)
        self._reconciler = Reconciler(self._service, self._ledger, self._inbox, clock=self._clock)
        self._lease = SensorLease(self.sensor_service, self._settings["notification_queue"],
                                  ttl_seconds=LEASE_POLLS * int(self._settings["poll_interval"]),
                                  clock=self._clock)

    def poll(self):
        if self._settings is None:
            self._say_not_configured()  # every poll interval, so a broken config is never silent
            return
        if self._clock() < self._retry_at:
            return
        try:
            if not self._hold_lease():
                return
            self._poll_once()
        except Exception as error:  # noqa: BLE001 - a raising poll() kills the sensor for good
            self._failed(error)
            return
        self._recovered_from_failures()
        self._reconcile_if_due()

    def _say_not_configured(self):
        self._logger.error("Assemblyline notification sensor is not configured, nothing is polled: %s "
                           "(fix /opt/stackstorm/configs/assemblyline_threatconnect.yaml, run "
                           "st2ctl reload --register-configs, then the action check_config)",
                           self._config_error)

    def cleanup(self):
        if self._lease is not None:
            try:
                self._lease.release()
            except Exception as error:  # noqa: BLE001 - it expires by itself
                self._logger.warning("Could not release the sensor lease: %s", self._scrub(error))

    def _hold_lease(self):
        """Only one process polls a queue (StackStorm HA runs a sensor in every container)."""
        holder = self._lease.acquire()
        if holder is None:
            if self._standing_by:
                self._logger.info("Took over polling queue %s", self._settings["notification_queue"])
            self._standing_by = False
            return True
        if not self._standing_by:
            self._logger.error(
                "Another AssemblylineNotificationSensor (%s) is polling queue %s; this one (%s) stands by "
                "and takes over if that one stops. Under StackStorm HA run this sensor in one sensor "
                "container (sensor partitioning), or give each pack instance its own "
                "assemblyline.notification_queue.", holder.get("instance"),
                self._settings["notification_queue"], self._lease.instance)
        self._standing_by = True
        return False

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
        self._persist_popped()   # a page popped by an earlier poll whose write failed
        self._drain_backlog()
        queue, page_size = self._settings["notification_queue"], int(self._settings["page_size"])
        for _ in range(int(self._settings["max_pages_per_poll"])):
            messages = self._service.pop_messages(queue, page_size)
            if not messages:
                break
            self._unpersisted = self._inbox.page(messages)
            self._persist_popped()   # persisted before any dispatch
            self._drain_backlog()
            if len(messages) < page_size:
                break

    def _persist_popped(self):
        """Write the popped page held in memory; until that succeeds nothing more is popped."""
        if self._unpersisted is not None:
            self._inbox.persist(self._unpersisted)
            self._backlog.append(self._unpersisted)
            self._unpersisted = None

    def _drain_backlog(self):
        """Dispatch stored pages in order; a page that fails midway stays for the next poll."""
        while self._backlog:
            self._dispatch_page(self._backlog[0])
            self._backlog.pop(0)

    def _dispatch_page(self, page):
        if page.triggers is not None:
            self._dispatch_outcomes(page)
            return
        remembered = []
        for message in page.messages:
            ingest_id, key = ingest_id_of(message), delivery_key_of(message)
            if (key and self._inbox.seen(key)) or (ingest_id and self._inbox.seen(ingest_id)):
                self.stats["duplicates"] += 1
                continue
            try:
                trigger, payload = trigger_for(message)
            except Exception as problem:  # noqa: BLE001 - no single message may stop the sensor
                self._dead_letter(message, problem, ingest_id)
                continue
            self._dispatch(trigger, payload, page.recovered)
            keys = list(dict.fromkeys([ingest_id, key]))
            self._inbox.remember_all(keys)
            remembered.extend(keys)
        self._inbox.done(page, remembered)  # settles their ledger records too

    def _dispatch_outcomes(self, page):
        """A reconciled outcome stored by an earlier process that may have died before or after
        dispatching it: dispatched again (flagged ``redelivered``) unless already remembered."""
        remembered = []
        for trigger, payload, keys in page.triggers:
            if any(self._inbox.seen(k) for k in keys):
                self.stats["duplicates"] += 1
            else:
                self._dispatch(trigger, dict(payload), page.recovered)
            self._inbox.remember_all(keys)
            remembered.extend(keys)
        self._inbox.done(page, remembered)

    def _dead_letter(self, message, problem, ingest_id):
        """Keep a message that cannot become a trigger; the rest of its page goes on.

        Its ingest stays pending, so reconciliation still reports it (by search) later."""
        kind = "malformed" if isinstance(problem, MalformedMessage) else "unexpected error"
        self.stats["malformed"] += 1
        try:
            self._dead_letters.add(message, "{}: {}".format(kind, self._scrub(problem)), ingest_id)
            self.stats["dead_letters"] += 1
        except Exception as error:  # noqa: BLE001 - logged; the page must still finish
            self._logger.error("Could not keep a dead-letter message (%s)", self._scrub(error))
        self._logger.warning("Skipped a notification message (%s: %s; ingest_id %s); kept as a dead "
                             "letter (action list_dead_letters)", kind, self._scrub(problem),
                             ingest_id or "unknown")

    def _dispatch(self, trigger, payload, redelivered=False):
        """``redelivered``: from a page an earlier process stored and did not mark done, so this
        trigger may have fired before (delivery is at least once); rules can filter on it."""
        if redelivered:
            payload["redelivered"] = True
        self.sensor_service.dispatch(trigger=trigger, payload=payload, trace_tag=payload["ingest_id"])
        self.stats["dispatched"] += 1

    # -- reconciliation (own schedule and backoff) ------------------------------
    def _reconcile_if_due(self):
        now = self._clock()
        if now < self._next_reconcile:
            return
        try:
            counts = self._reconciler.run(self._dispatch)
        except Exception as error:  # noqa: BLE001 - never fatal, never slows the queue
            self._reconcile_failures += 1
            self.stats["reconcile_errors"] += 1
            delay = min(RECONCILE_BACKOFF_CAP_SECONDS,
                        RECONCILE_INTERVAL_SECONDS * 2 ** (self._reconcile_failures - 1))
            self._next_reconcile = self._clock() + delay
            self._logger.error("Reconciling overdue ingests failed (%d in a row, next try in %d s): %s",
                               self._reconcile_failures, delay, self._scrub(error))
            return
        if self._reconcile_failures:
            self._logger.info("Reconciling overdue ingests works again after %d failed attempts",
                              self._reconcile_failures)
        self._reconcile_failures = 0
        busy = counts.get("deferred", 0) > 0
        self._next_reconcile = self._clock() + (RECONCILE_BUSY_INTERVAL_SECONDS if busy
                                                else RECONCILE_INTERVAL_SECONDS)
        if any(counts.values()):
            self._logger.info("Reconciled overdue ingests: %s", counts)

    # -- failures and backoff ---------------------------------------------------
    def _failed(self, error):
        self._failures += 1
        self.stats["errors"] += 1
        delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (self._failures - 1))
        self._retry_at = self._clock() + delay
        if isinstance(error, AssemblylineError) and self._failures >= RESET_CLIENT_AFTER_FAILURES:
            self._service.reset()  # log in again on the next try
        held = ""
        if self._unpersisted is not None:
            held = " ({} popped messages are held in memory and stored first on the next try)".format(
                len(self._unpersisted.messages))
        self._logger.error("Polling Assemblyline queue %s failed (%d in a row, next try in %d s): %s%s",
                           self._settings["notification_queue"], self._failures, delay, self._scrub(error),
                           held)

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
