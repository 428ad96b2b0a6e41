"""The Assemblyline fault suite: many ingests through injected faults and sensor kills.

What it does, all on loopback in one process:

- ingests ``files`` sample files with the pack's ingest library (``FileIngester``, what the
  ingest actions run) while the AL emulator fails ``fault_rate`` of all calls, split evenly:
  502 and 503 (refused before any work), ``timeout`` (the work is done, the answer comes
  after the client has given up) and ``lost`` (the work is done, the connection closes
  unanswered; for a queue read that is the destructive pop whose page is gone);
- between batches of ingests, polls the notification sensor, which is killed at random
  points: right after a pop (before the page is stored), at the page's datastore write
  (between the pop and the persist), and at a dispatch (mid-page, or before a reconciled
  outcome is sent). A killed sensor is dropped without ``cleanup()``; a new one starts on
  the same datastore once the dead one's lease has expired, as after a SIGKILL;
- drains the queue and lets reconciliation run past the deadline, faults still on; then
  stops the faults and lets it finish what is left.

Every upload Assemblyline holds must end as exactly one completed, failed or overdue trigger
(more only when the extra ones are flagged ``redelivered``), overdue only when AL kept no
submission to find (an ingest it skipped whose failure message was lost); an upload the action reported
as failed that never reached Assemblyline may be reported overdue (its record is kept
because the pack cannot know it did not land). ``tests/test_fault_suite.py`` runs it,
asserts the figures and prints them (``pytest -s tests/test_fault_suite.py``).
"""
import random
import time
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional

from lib.assemblyline import AssemblylineService
from lib.config import load_config
from lib.errors import PackError
from lib.ingest import FileIngester
from lib.ledger import IngestLedger
from notification_sensor import LEASE_POLLS, AssemblylineNotificationSensor

COMPLETED = "assemblyline_threatconnect.submission_completed"
FAILED = "assemblyline_threatconnect.submission_failed"
OVERDUE = "assemblyline_threatconnect.submission_overdue"
OUTCOMES = (COMPLETED, FAILED, OVERDUE)
POLL_INTERVAL = 10
DEADLINE = 600


class Killed(BaseException):
    """A SIGKILL as seen from inside: nothing after it runs (``poll()`` catches Exception only)."""


class Clock:
    """Real time plus an offset the suite advances (lease expiry, deadlines)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Killer:
    """Wraps the sensor service and the sensor's AL service to kill the process at random points."""

    def __init__(self, sensor_service: Any, rng: random.Random, pop_kill: float, persist_kill: float,
                 dispatch_kill: float) -> None:
        self.service = sensor_service
        self.rng = rng
        self.rates = {"after_pop": pop_kill, "at_persist": persist_kill, "at_dispatch": dispatch_kill}
        self.kills: Counter = Counter()
        self.armed = False
        self._real_set = sensor_service.set_value
        self._real_dispatch = sensor_service.dispatch
        sensor_service.set_value = self._set_value
        sensor_service.dispatch = self._dispatch

    def maybe_kill(self, point: str) -> None:
        if self.armed and self.rng.random() < self.rates[point]:
            self.kills[point] += 1
            raise Killed(point)

    def _set_value(self, name: str, value: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("page."):
            self.maybe_kill("at_persist")
        return self._real_set(name, value, *args, **kwargs)

    def _dispatch(self, *args: Any, **kwargs: Any) -> Any:
        self.maybe_kill("at_dispatch")
        return self._real_dispatch(*args, **kwargs)

    def watch_pops(self, sensor: AssemblylineNotificationSensor) -> None:
        service = sensor._service
        real_pop = service.pop_messages

        def pop_then_maybe_die(queue: str, page_size: int) -> List[Any]:
            messages = real_pop(queue, page_size)
            if messages:
                self.maybe_kill("after_pop")
            return messages
        service.pop_messages = pop_then_maybe_die


def run(emulator: Any, sensor_service: Any, drop: Any, files: int = 1000, fault_rate: float = 0.2,
        seed: int = 1, client_timeout: float = 0.2, batch: int = 25) -> Dict[str, Any]:
    """Run the suite; return its figures (see ``figures``)."""
    from tests.helpers import AL_USER, pack_config
    rng = random.Random(seed)
    clock = Clock()
    config = pack_config(al_url=emulator.url, roots=[str(drop)],
                         assemblyline={"page_size": 40, "max_pages_per_poll": 5, "retries": 2,
                                       "poll_interval": POLL_INTERVAL, "completion_deadline": DEADLINE})
    kind_rate = fault_rate / 4
    emulator.set(seed=seed, analysis_delay=0.0, drop_rate=0.05, timeout_delay=client_timeout * 2.5,
                 fault_mix={502: kind_rate, 503: kind_rate, "timeout": kind_rate, "lost": kind_rate})
    killer = Killer(sensor_service, rng, pop_kill=0.15, persist_kill=0.05, dispatch_kill=0.004)
    state = {"sensor": None, "restarts": 0}

    def start_sensor() -> AssemblylineNotificationSensor:
        sensor = AssemblylineNotificationSensor(sensor_service, config=config, clock=clock)
        sensor.setup()
        sensor._service.settings["timeout"] = client_timeout  # beyond it, the emulator answers late
        killer.watch_pops(sensor)
        return sensor

    def poll() -> None:
        if state["sensor"] is None:
            state["sensor"] = start_sensor()
        killer.armed = True
        try:
            state["sensor"].poll()
        except Killed:
            state["sensor"], state["restarts"] = None, state["restarts"] + 1
            clock.advance(LEASE_POLLS * POLL_INTERVAL + 1)  # the dead one's lease expires
        finally:
            killer.armed = False

    loaded = load_config(config)
    loaded["assemblyline"]["timeout"] = client_timeout
    queue = loaded["assemblyline"]["notification_queue"]
    ingester = FileIngester.from_config(loaded, AssemblylineService(loaded["assemblyline"]), sensor_service)
    action_errors = []
    started = time.monotonic()
    for n in range(files):
        path = drop / "sample{:05d}.bin".format(n)
        path.write_bytes("fault suite sample {} http://evil{}.example/x".format(n, n).encode())
        try:
            ingester.ingest_path(str(path), {}, {})
        except PackError as error:
            action_errors.append(str(error))
        if n % batch == batch - 1:
            emulator.pump()
            poll()
    for _ in range(20):  # drain the queue, faults and kills still on
        emulator.pump()
        poll()
    clock.advance(DEADLINE + 1)
    ledger = IngestLedger(sensor_service)

    def reconcile(rounds: int) -> None:  # bounded searches per run, one run per interval
        for _ in range(rounds):
            poll()
            sensor = state["sensor"]
            if sensor is not None and not emulator.queue(AL_USER, queue) and \
                    all(sensor._reconciler._settled(r) for r in ledger.pending()):
                return
            if state["sensor"] is not None:
                state["sensor"]._next_reconcile = 0
            clock.advance(POLL_INTERVAL)
    reconcile(100)
    faulty_requests = len(emulator.request_log)
    emulator.set(fault_mix=None)  # the network heals: what is left is finished
    reconcile(200)
    elapsed = time.monotonic() - started
    result = figures(emulator, sensor_service, ledger, action_errors, killer.kills, state["restarts"], elapsed)
    if state["sensor"] is None:
        state["sensor"] = start_sensor()
        state["sensor"].poll()  # loads what the done pages settled
    result["pending_left"] = sum(1 for r in ledger.pending() if not state["sensor"]._reconciler._settled(r))
    result["al_requests_while_faulty"] = faulty_requests
    return result


def figures(emulator: Any, sensor_service: Any, ledger: IngestLedger, action_errors: List[str],
            kills: Counter, restarts: int, elapsed: float) -> Dict[str, Any]:
    """Count, per upload Assemblyline holds, the outcome triggers it got.

    An upload is one file sent by the pack (one ``st2_ingest_token``); the client's retry of
    an upload whose answer was lost can make it two ingests in Assemblyline (twins)."""
    held = emulator.ingests()
    upload_of = {}  # AL ingest_id or token -> token
    without_submission = set()  # uploads AL dropped (skipped): only their queue message tells
    for ingest in held:
        token = (ingest.get("metadata") or {}).get("st2_ingest_token") or ingest["ingest_id"]
        upload_of[ingest["ingest_id"]] = upload_of[token] = token
        if ingest["outcome"] == "skipped":
            without_submission.add(token)
    uploads = set(upload_of.values())
    triggers: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    phantoms = 0
    for dispatched in sensor_service.dispatched_triggers:
        if dispatched["trigger"] not in OUTCOMES:
            continue
        payload = dispatched["payload"]
        token = (payload.get("metadata") or {}).get("st2_ingest_token") or payload["ingest_id"]
        upload = upload_of.get(token, upload_of.get(payload["ingest_id"]))
        if upload is None:
            phantoms += 1
            continue
        triggers[upload].append(dict(payload, trigger=dispatched["trigger"]))
    lost = [u for u in uploads if not triggers.get(u)]
    flagged = unflagged = overdue_with_submission = 0
    kinds: Counter = Counter()
    for upload in uploads:
        got = triggers.get(upload, [])
        plain = [t for t in got if not t.get("redelivered")]
        unflagged += max(0, len(plain) - 1)
        flagged += max(0, len(got) - 1) - max(0, len(plain) - 1)
        if got:
            kinds[got[0]["trigger"].rsplit("_", 1)[-1]] += 1
            if got[0]["trigger"] == OVERDUE and upload not in without_submission:
                overdue_with_submission += 1
    faults = Counter(e.get("late_fault") or e["status"] for e in emulator.request_log
                     if e.get("late_fault") or e["status"] in (0, 502, 503))
    return {
        "uploads_held_by_al": len(uploads), "al_ingests": len(held), "action_errors": len(action_errors),
        "al_requests": len(emulator.request_log), "faults_injected": dict(faults),
        "sensor_kills": dict(kills), "sensor_restarts": restarts,
        "outcomes": dict(kinds), "reconciled": sum(1 for t in triggers.values() for p in t if p.get("reconciled")),
        "lost": len(lost), "unflagged_duplicates": unflagged, "flagged_redeliveries": flagged,
        "overdue_with_a_submission": overdue_with_submission,
        "overdue_for_uploads_not_in_al": phantoms,
        "seconds": round(elapsed, 1),
    }
