"""The notification sensor against the AL emulator and the real client.

The stand-in sensor service validates every dispatched payload against the
trigger types' payload_schema (sensors/notification_sensor.yaml) and fails the
test if one would be dropped by st2.
"""
import json
import logging
import time

import pytest

from st2tests.base import BaseSensorTestCase

from lib.assemblyline import AssemblylineService
from lib.config import load_config
from lib.datastore import list_all
from lib.inbox import Inbox
from lib.ingest import FileIngester
from lib.ledger import CURSOR_KEY, KEEP_SECONDS, PENDING_PREFIX, IngestLedger
from lib.sensor_lease import LEASE_PREFIX
from notification_sensor import LEASE_POLLS, AssemblylineNotificationSensor
from tests.emulators.assemblyline import AssemblylineEmulator
from tests.helpers import AL_APIKEY, AL_USER, SECRETS, pack_config

QUEUE = "st2_threatconnect"
COMPLETED = "assemblyline_threatconnect.submission_completed"
FAILED = "assemblyline_threatconnect.submission_failed"
OVERDUE = "assemblyline_threatconnect.submission_overdue"


class Clock:
    """Real time plus an offset the test can advance."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        return time.time() + self.offset

    def advance(self, seconds):
        self.offset += seconds


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture(scope="module")
def emulator():
    with AssemblylineEmulator(user=AL_USER, apikey=AL_APIKEY) as emu:
        yield emu


class NotificationSensorTest(BaseSensorTestCase):
    sensor_cls = AssemblylineNotificationSensor

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, tmp_path):
        emulator.reset(knobs=True)
        emulator.clear_log()
        self.emulator = emulator
        self.drop = tmp_path / "drop"
        self.drop.mkdir()
        self.clock = Clock()
        self.config = pack_config(al_url=emulator.url, roots=[str(self.drop)],
                                  assemblyline={"page_size": 50, "max_pages_per_poll": 20, "poll_interval": 10})

    def sensor(self, config=None):
        """A new sensor process. The previous one stopped cleanly (st2 called cleanup(), which
        releases the queue lease), unless it was killed: then its lease has to expire first."""
        previous = getattr(self, "_last_sensor", None)
        if previous is not None:
            if getattr(self, "_killed", False):
                self.clock.advance(LEASE_POLLS * 10 + 1)  # poll_interval 10 in self.config
                self._killed = False
            else:
                previous.cleanup()
        sensor = AssemblylineNotificationSensor(sensor_service=self.sensor_service,
                                                config=config or self.config, clock=self.clock)
        self._last_sensor = sensor
        self.log = ListHandler()
        sensor._logger = logging.getLogger("test.sensor.{}".format(id(sensor)))
        sensor._logger.addHandler(self.log)
        sensor._logger.setLevel(logging.DEBUG)
        sensor._logger.propagate = False
        sensor.setup()
        return sensor

    def ingest(self, content, name="sample.bin", **params):
        path = self.drop / name
        path.write_bytes(content)
        config = load_config(self.config)
        ingester = FileIngester.from_config(config, AssemblylineService(config["assemblyline"]),
                                            self.sensor_service)  # the datastore st2 shares
        return ingester.ingest_path(str(path), params, {})

    def unsettled(self):
        """Ingest_ids whose ledger record is neither dispatched nor reported (as the last sensor
        process sees it)."""
        reconciler = self._last_sensor._reconciler
        return [r["ingest_id"] for r in IngestLedger(self.sensor_service).pending() if not reconciler._settled(r)]

    def lose_queued_messages(self):
        self.emulator.pump()  # finished analyses queue their messages first
        self.emulator.state.queues.clear()

    def payloads(self, trigger):
        return [d["payload"] for d in self.get_dispatched_triggers() if d["trigger"] == trigger]

    def push(self, count, start=0):
        """Queue ``count`` messages of the real shape (taken from a real ingest), after any queued."""
        template_ingest = self.ingest(b"template http://evil.com/x", "template.bin")
        ledger = IngestLedger(self.sensor_service)
        for record in ledger.pending():
            if record["ingest_id"] == template_ingest["ingest_id"]:
                ledger.forget(record["key"])
        self.emulator.pump()  # the template completes and queues its message
        with self.emulator.state.lock:  # take the template's own message out of the queue
            queue = self.emulator.state.queues[self.emulator.queue_key(AL_USER, QUEUE)]
            template = [m for m in queue if m["ingest_id"] == template_ingest["ingest_id"]][0]
            queue.remove(template)
        encoded = json.dumps(template)
        for n in range(start, start + count):
            message = json.loads(encoded)
            message["ingest_id"] = message["submission"]["sid"] = "iid{:06d}".format(n)
            message["submission"]["metadata"]["ingest_id"] = message["ingest_id"]
            message["submission"]["metadata"]["st2_ingest_token"] = "token{:06d}".format(n)  # one upload each
            self.emulator.push_message(AL_USER, QUEUE, message)

    # -- setup ------------------------------------------------------------------
    def test_setup_is_network_free_and_takes_the_interval_from_config(self):
        sensor = self.sensor()
        assert sensor.get_poll_interval() == 10
        assert self.emulator.request_log == []

    def test_invalid_config_is_logged_and_poll_does_nothing(self):
        sensor = self.sensor(config={"assemblyline": {"url": "ftp://x"}})
        sensor.poll()
        sensor.poll()
        assert self.get_dispatched_triggers() == [] and self.emulator.request_log == []
        # said at setup and on every poll interval, naming the setting
        assert len(self.log.lines) == 3
        assert all(level == "ERROR" and "is not configured" in line and "assemblyline.url" in line
                   for level, line in self.log.lines)

    # -- dispatching ------------------------------------------------------------
    def test_completed_submission_dispatches_a_valid_payload(self):
        ingest = self.ingest(b"beacon http://evil-c2.com/gate\n", "dropper.exe")
        self.sensor().poll()
        [payload] = self.payloads(COMPLETED)
        assert payload["ingest_id"] == ingest["ingest_id"] == payload["sid"]
        assert payload["cached"] is False and payload["score"] >= 1000
        assert payload["file_path"] == str(self.drop / "dropper.exe")
        assert payload["metadata"]["sha256"] == ingest["sha256"] == payload["files"][0]["sha256"]
        assert payload["files"][0]["name"] == "dropper.exe"

    def test_cache_hit_is_flagged_and_deduped_by_ingest_id_not_sid(self):
        first = self.ingest(b"same content http://evil.com", "a.bin")
        second = self.ingest(b"same content http://evil.com", "b.bin")
        self.sensor().poll()
        payloads = {p["ingest_id"]: p for p in self.payloads(COMPLETED)}
        assert set(payloads) == {first["ingest_id"], second["ingest_id"]}
        assert payloads[second["ingest_id"]]["sid"] == first["ingest_id"]
        assert payloads[second["ingest_id"]]["cached"] is True

    def test_failures_fire_their_own_trigger(self):
        skipped = self.ingest(b"AL-EMU:SKIP please", "skip.bin")
        self.emulator.set(max_scan_size=10)
        large = self.ingest(b"x" * 64, "large.bin")
        self.sensor().poll()
        failed = {p["ingest_id"]: p for p in self.payloads(FAILED)}
        assert failed[skipped["ingest_id"]]["failure"] == "Skipped"
        assert failed[large["ingest_id"]]["failure"] == "File too large (64 > 10)"
        assert failed[large["ingest_id"]]["file_path"] == str(self.drop / "large.bin")
        assert self.payloads(COMPLETED) == []

    def test_ten_thousand_messages_dispatched_exactly_once_in_pages(self):
        self.push(10000)
        self.emulator.clear_log()
        sensor = self.sensor()
        polls = 0
        key = self.emulator.queue_key(AL_USER, QUEUE)
        while self.emulator.state.queues.get(key) or polls == 0:
            sensor.poll()
            polls += 1
            assert polls <= 11
        ids = [p["ingest_id"] for p in self.payloads(COMPLETED)]
        assert len(ids) == 10000 and len(set(ids)) == 10000
        assert polls == 10  # 20 pages of 50 per poll
        pops = [e for e in self.emulator.request_log if "get_message_list" in e["path"]]
        assert len(pops) == 200  # one request per page
        write_count = getattr(self.sensor_service.datastore_service, "write_count", None)
        if write_count is not None:  # only the stand-in counts writes (upstream st2tests does not)
            assert write_count <= 2 * 200 + polls + 5  # per page and one lease renewal per poll, not per message
        assert self.unsettled() == []

    def test_malformed_messages_are_counted_and_skipped_never_fatal(self):
        self.push(3)
        good = self.emulator.queue(AL_USER, QUEUE)
        self.emulator.state.queues.clear()
        bad = ["not an object", {"no": "submission"}, {"submission": {"sid": 5}, "ingest_id": "x1"},
               {"submission": {"sid": "s", "files": "nope"}, "ingest_id": "x2", "score": 1},
               {"submission": {"sid": "s"}, "ingest_id": "x3", "score": "high"}]
        for message in [good[0]] + bad + good[1:]:
            self.emulator.push_message(AL_USER, QUEUE, message)
        sensor = self.sensor()
        sensor.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)] == ["iid000000", "iid000001", "iid000002"]
        assert sensor.stats["malformed"] == 5
        warnings = [line for level, line in self.log.lines if level == "WARNING"]
        assert len(warnings) == 5 and "message is a str, not an object" in warnings[0]
        assert "submission.files is not a list" in warnings[3]

    def poison_page(self, *bad):
        self.push(3)
        good = self.emulator.queue(AL_USER, QUEUE)
        self.emulator.state.queues.clear()
        for message in [good[0]] + list(bad) + good[1:]:
            self.emulator.push_message(AL_USER, QUEUE, message)

    def test_a_non_finite_score_is_a_dead_letter_and_never_blocks_the_queue(self):
        self.push(1, start=100)
        [poison_template] = self.emulator.queue(AL_USER, QUEUE)
        self.emulator.state.queues.clear()
        poisons = []
        for n, score in enumerate((float("nan"), float("inf"), float("-inf"))):
            poison = json.loads(json.dumps(poison_template))
            poison["ingest_id"] = poison["submission"]["sid"] = "poison{}".format(n)
            poison["score"] = score
            poisons.append(poison)
        self.poison_page(*poisons)
        sensor = self.sensor()
        sensor.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)] == ["iid000000", "iid000001", "iid000002"]
        assert sensor.stats["dead_letters"] == 3
        sensor.poll()  # nothing is stuck: no page is retried, nothing fires twice
        restarted = self.sensor()
        restarted.poll()
        assert len(self.payloads(COMPLETED)) == 3
        from list_dead_letters import ListDeadLettersAction
        action = ListDeadLettersAction(config=self.config, action_service=self.sensor_service)
        listed = action.run(limit=2)
        assert listed["count"] == 3 and listed["not_listed"] == 1
        assert [d["ingest_id"] for d in listed["dead_letters"]] == ["poison0", "poison1"]
        assert "score is not a finite number (nan)" in listed["dead_letters"][0]["reason"]
        assert action.run(delete=[listed["dead_letters"][0]["key"]])["count"] == 2
        refused = action.run(delete=["assemblyline_threatconnect.pending.x"])
        assert refused[0] is False and "not a dead-letter record" in refused[1]["error"]

    def test_an_unexpected_error_on_one_message_is_a_dead_letter_and_the_page_goes_on(self):
        import notification_sensor as module
        self.poison_page({"ingest_id": "boom", "submission": {"sid": "boom"}, "score": 10})
        real = module.trigger_for

        def exploding(message):
            if isinstance(message, dict) and message.get("ingest_id") == "boom":
                raise RuntimeError("a bug in the pack")
            return real(message)
        module.trigger_for = exploding
        try:
            sensor = self.sensor()
            sensor.poll()
        finally:
            module.trigger_for = real
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)] == ["iid000000", "iid000001", "iid000002"]
        assert sensor.stats["dead_letters"] == 1
        warnings = [line for level, line in self.log.lines if level == "WARNING"]
        assert any("unexpected error: RuntimeError: a bug in the pack" in w for w in warnings)

    # -- persistence --------------------------------------------------------------
    def kill_during_dispatch(self, at_call):
        """Run one poll whose ``at_call``-th dispatch never returns (the process is killed)."""
        class Killed(BaseException):
            """What a SIGKILL looks like from inside: nothing after it runs."""

        real_dispatch = self.sensor_service.dispatch
        calls = {"n": 0}

        def dying_dispatch(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == at_call:
                raise Killed()
            return real_dispatch(*args, **kwargs)

        self.sensor_service.dispatch = dying_dispatch
        with pytest.raises(Killed):
            self.sensor().poll()
        self.sensor_service.dispatch = real_dispatch
        self._killed = True  # no cleanup(): its queue lease stays until it expires

    def restart_and_drain(self):
        restarted = self.sensor()  # a new process with the same datastore
        restarted.poll()
        restarted.poll()
        return [p["ingest_id"] for p in self.payloads(COMPLETED)]

    def test_a_kill_between_pop_and_dispatch_loses_nothing_and_fires_once(self):
        self.push(120)
        self.kill_during_dispatch(at_call=1)  # the page is popped and stored, nothing dispatched
        assert self.get_dispatched_triggers() == []
        assert len(self.emulator.queue(AL_USER, QUEUE)) == 70  # only the first page was popped
        ids = self.restart_and_drain()
        assert ids == ["iid{:06d}".format(n) for n in range(120)]

    def test_a_kill_midway_through_a_page_loses_nothing(self):
        """At least once: only what the dead process dispatched from its last page repeats."""
        self.push(120)
        self.kill_during_dispatch(at_call=30)
        ids = self.restart_and_drain()
        assert sorted(set(ids)) == ["iid{:06d}".format(n) for n in range(120)]
        repeated = sorted(i for i in set(ids) if ids.count(i) > 1)
        assert repeated == ["iid{:06d}".format(n) for n in range(29)]
        payloads = self.payloads(COMPLETED)
        # every repeat is flagged: the whole page the dead process stored (50) is marked redelivered
        assert all(p.get("redelivered") is True for p in payloads[29:79])
        assert not any("redelivered" in p for p in payloads[:29] + payloads[79:])

    def test_restart_does_not_fire_twice(self):
        self.push(60)
        self.sensor().poll()
        self.push(1, start=5)   # the same ingest_id again (replayed page, HA twin, ...)
        self.push(1, start=60)
        self.sensor().poll()    # a new process: its memory comes from the datastore
        ids = [p["ingest_id"] for p in self.payloads(COMPLETED)]
        assert ids == ["iid{:06d}".format(n) for n in range(61)]

    # -- failures and recovery ------------------------------------------------------
    def test_assemblyline_down_then_up_backs_off_and_recovers(self):
        self.push(5)
        sensor = self.sensor(pack_config(al_url=self.emulator.url, assemblyline={"retries": 1, "timeout": 2}))
        self.emulator.set(error_rate=1.0, error_status=502)
        delays = []
        for _ in range(8):
            sensor.poll()  # never raises
            delays.append(round(sensor._retry_at - self.clock()))
            self.clock.advance(1000)
        assert delays == [5, 10, 20, 40, 80, 160, 300, 300]
        errors = [line for level, line in self.log.lines if level == "ERROR"]
        assert len(errors) == 8 and "HTTP 429" in errors[0] and "Max retry reached" in errors[0]
        self.emulator.set(error_rate=0.0)
        sensor.poll()
        assert len(self.payloads(COMPLETED)) == 5
        assert self.log.lines[-1] == ("INFO", "Polling Assemblyline works again after 8 failed attempts")

    def test_polls_inside_the_backoff_window_do_not_touch_the_network(self):
        sensor = self.sensor()
        self.emulator.set(error_rate=1.0, error_status=400)
        sensor.poll()
        self.emulator.clear_log()
        sensor.poll()
        assert self.emulator.request_log == []

    def test_unexpected_errors_are_caught_too(self):
        self.push(2)
        sensor = self.sensor()
        datastore = self.sensor_service.datastore_service
        working_set_value = datastore.set_value

        def broken(name, *args, **kwargs):
            if name.startswith(LEASE_PREFIX):  # the lease was renewed just before; pages fail
                return working_set_value(name, *args, **kwargs)
            raise RuntimeError("datastore unavailable")
        datastore.set_value = broken
        sensor.poll()  # pops the page, cannot persist it
        assert sensor.stats["errors"] == 1
        assert "RuntimeError: datastore unavailable" in self.log.lines[-1][1]
        assert "2 popped messages are held in memory" in self.log.lines[-1][1]
        assert self.get_dispatched_triggers() == []  # nothing dispatched unpersisted
        assert self.emulator.queue(AL_USER, QUEUE) == []  # popped for good: only the sensor has them

        self.push(1, start=2)  # more waits in the queue
        self.emulator.clear_log()
        self.clock.advance(60)
        sensor.poll()  # the held page is retried first, and nothing more is popped while it fails
        assert sensor.stats["errors"] == 2 and self.get_dispatched_triggers() == []
        assert [e for e in self.emulator.request_log if "get_message" in e["path"]] == []
        assert len(self.emulator.queue(AL_USER, QUEUE)) == 1

        datastore.set_value = working_set_value
        self.clock.advance(60)
        sensor.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)] == ["iid000000", "iid000001", "iid000002"]
        assert self.log.lines[-1] == ("INFO", "Polling Assemblyline works again after 2 failed attempts")
        restarted = self.sensor()  # the held page was stored and marked done like any other
        restarted.poll()
        assert len(self.payloads(COMPLETED)) == 3

    def test_no_secret_reaches_any_log_line(self):
        sensor = self.sensor(pack_config(al_url=self.emulator.url, assemblyline={"retries": 1}))
        self.emulator.set(error_rate=1.0, error_status=503)
        sensor.poll()
        bad_key = pack_config(al_url=self.emulator.url)
        bad_key["assemblyline"]["api_key"] = "st2key:" + SECRETS[0] + "-wrong"
        self.emulator.set(error_rate=0.0)
        other = self.sensor(bad_key)
        other.poll()
        assert any("HTTP 401" in line for _, line in self.log.lines)
        for _, line in self.log.lines:
            for secret in SECRETS:
                assert secret not in line

    # -- reconciliation -----------------------------------------------------------
    def test_lost_response_is_recovered_by_search_after_the_deadline(self):
        ingest = self.ingest(b"http://evil.com/lost", "lost.bin")
        self.emulator.set(drop_response_after_pop=1)
        sensor = self.sensor(pack_config(al_url=self.emulator.url, assemblyline={"retries": 1}))
        sensor.poll()  # the popped message dies with the connection, as on the real server
        assert self.emulator.queue(AL_USER, QUEUE) == [] and self.get_dispatched_triggers() == []
        self.clock.advance(7200 + 1)
        sensor._next_reconcile = 0
        sensor.poll()
        [payload] = self.payloads(COMPLETED)
        assert payload["ingest_id"] == ingest["ingest_id"] and payload["reconciled"] is True
        assert payload["file_path"] == str(self.drop / "lost.bin")
        assert self.unsettled() == []

    def test_an_ingest_whose_answer_was_lost_is_still_recorded_and_reconciled(self):
        """Assemblyline accepts the upload, the answer never arrives: the action fails, the
        token record written before the upload lets reconciliation find and report it."""
        import lib.assemblyline
        path = self.drop / "answerless.bin"
        path.write_bytes(b"beacon http://evil.com/answerless")
        config = load_config(self.config)
        service = AssemblylineService(config["assemblyline"])
        real_ingest = service.ingest

        def answer_lost(*args, **kwargs):
            real_ingest(*args, **kwargs)  # the server did the work ...
            raise lib.assemblyline.AssemblylineError("ingest of answerless.bin failed: connection reset")
        service.ingest = answer_lost
        ingester = FileIngester.from_config(config, service, self.sensor_service)
        with pytest.raises(lib.assemblyline.AssemblylineError, match="may have reached Assemblyline"):
            ingester.ingest_path(str(path), {}, {})
        [record] = IngestLedger(self.sensor_service).pending()
        assert record["token"] and record["ingest_id"] == record["token"]
        self.lose_queued_messages()  # ... and its notification is lost too
        sensor = self.sensor()
        self.clock.advance(7200 + 1)
        sensor.poll()
        [payload] = self.payloads(COMPLETED)
        [stored] = [i for i in self.emulator.ingests() if i["name"] == "answerless.bin"]
        assert payload["ingest_id"] == stored["ingest_id"] != record["token"]
        assert payload["reconciled"] is True and payload["file_path"] == str(path)
        assert self.unsettled() == []

    def test_a_refused_upload_leaves_no_record_one_that_may_have_landed_does(self):
        from lib.errors import AssemblylineError
        path = self.drop / "refused.bin"
        path.write_bytes(b"x")
        config = load_config(self.config)
        for status, kept in ((400, False), (403, False), (503, True), (None, True)):
            service = AssemblylineService(config["assemblyline"])

            def failing(*args, status=status, **kwargs):
                raise AssemblylineError("ingest of refused.bin failed", status=status)
            service.ingest = failing
            ingester = FileIngester.from_config(config, service, self.sensor_service)
            with pytest.raises(AssemblylineError):
                ingester.ingest_path(str(path), {}, {})
            ledger = IngestLedger(self.sensor_service)
            assert len(ledger.pending()) == (1 if kept else 0), status
            for record in ledger.pending():
                ledger.forget(record["key"])

    def test_queue_deleted_after_24h_is_recovered(self):
        ingest = self.ingest(b"http://evil.com/old", "old.bin")
        self.emulator.age_messages(90000)
        assert self.emulator.run_plumber()  # the whole queue is gone
        sensor = self.sensor()
        self.clock.advance(7201)
        sensor.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)] == [ingest["ingest_id"]]

    def test_cache_hit_without_a_record_is_found_by_sha256(self):
        first = self.ingest(b"cached http://evil.com/c", "first.bin")
        sensor = self.sensor()
        sensor.poll()
        second = self.ingest(b"cached http://evil.com/c", "second.bin")
        self.emulator.state.queues.clear()  # its message is lost
        self.clock.advance(7201)
        sensor._next_reconcile = 0
        sensor.poll()
        payload = [p for p in self.payloads(COMPLETED) if p["ingest_id"] == second["ingest_id"]][0]
        assert payload["sid"] == first["ingest_id"] and payload["cached"] is True
        assert payload["reconciled"] is True
        # the ingest's own facts, not the earlier submission's
        assert payload["file_path"] == str(self.drop / "second.bin")
        assert payload["metadata"] == {"ingest_id": second["ingest_id"], "sha256": second["sha256"],
                                       "file_path": str(self.drop / "second.bin")}
        assert payload["files"] == [{"name": "second.bin", "sha256": second["sha256"], "size": 24}]
        assert payload["ingest_time"].endswith("Z") and payload["notify_time"] is None

    def test_unknown_ingest_becomes_overdue_and_running_ones_wait(self):
        self.emulator.set(analysis_delay=None)  # never completes by itself
        running = self.ingest(b"slow http://evil.com/slow", "slow.bin")
        lost = self.ingest(b"gone http://evil.com/gone", "gone.bin")
        self.emulator.delete_submission(lost["ingest_id"])
        sensor = self.sensor()
        sensor.poll()
        assert self.get_dispatched_triggers() == []  # not due yet
        self.clock.advance(7201)
        sensor._next_reconcile = 0
        sensor.poll()
        [overdue] = self.payloads(OVERDUE)
        assert overdue["ingest_id"] == lost["ingest_id"] and overdue["file_path"] == str(self.drop / "gone.bin")
        assert overdue["deadline"] < overdue["checked_at"]
        assert self.unsettled() == [running["ingest_id"]]
        sensor._next_reconcile = 0
        sensor.poll()
        assert len(self.payloads(OVERDUE)) == 1  # fired once

    def test_notified_ingests_are_resolved_without_a_search(self):
        self.ingest(b"http://evil.com/quick", "quick.bin")
        sensor = self.sensor()
        sensor.poll()
        self.clock.advance(7201)
        sensor._next_reconcile = 0
        self.emulator.clear_log()
        sensor.poll()
        assert [e for e in self.emulator.request_log if "search" in e["path"]] == []
        assert self.unsettled() == []
        assert len(self.payloads(COMPLETED)) == 1

    def test_a_submission_found_failed_fires_submission_failed(self):
        self.emulator.set(analysis_delay=None)  # it never completes; no message will come
        ingest = self.ingest(b"doomed http://evil.com/doomed", "doomed.bin")
        with self.emulator.state.lock:
            self.emulator.state.submissions[ingest["ingest_id"]].record["state"] = "failed"
        sensor = self.sensor()
        sensor.poll()
        self.clock.advance(7201)
        sensor.poll()
        [payload] = self.payloads(FAILED)
        assert payload["ingest_id"] == payload["sid"] == ingest["ingest_id"] and payload["reconciled"] is True
        assert payload["failure"] == "Submission {} ended in state failed".format(ingest["ingest_id"])
        assert payload["file_path"] == str(self.drop / "doomed.bin")
        assert payload["files"][0]["sha256"] == ingest["sha256"]
        assert self.unsettled() == []

    def test_a_submission_stuck_long_after_its_deadline_becomes_overdue(self):
        self.emulator.set(analysis_delay=None)
        ingest = self.ingest(b"stuck http://evil.com/stuck", "stuck.bin")
        sensor = self.sensor()
        sensor.poll()
        for _ in range(3):  # found running: wait, within the bounded extra time
            self.clock.advance(7201)
            sensor.poll()
        assert self.get_dispatched_triggers() == []
        self.clock.advance(24 * 3600 - 3 * 7201 + 7201)  # 24 h past the deadline
        sensor.poll()
        [overdue] = self.payloads(OVERDUE)
        assert overdue["ingest_id"] == overdue["sid"] == ingest["ingest_id"] and overdue["state"] == "submitted"
        assert overdue["checked_at"] - overdue["deadline"] >= 24 * 3600
        assert self.unsettled() == []
        self.clock.advance(24 * 3600)
        sensor.poll()
        assert len(self.payloads(OVERDUE)) == 1

    def test_a_submission_completing_after_its_overdue_report_still_fires_completed(self):
        """Overdue is a warning, not an outcome: the late completion must not be dropped."""
        self.emulator.set(analysis_delay=None)
        ingest = self.ingest(b"late http://evil.com/late", "late.bin")
        sensor = self.sensor()
        sensor.poll()
        self.clock.advance(7201 + 24 * 3600)  # stuck: reported overdue
        sensor.poll()
        [overdue] = self.payloads(OVERDUE)
        assert overdue["ingest_id"] == ingest["ingest_id"] and overdue["state"] == "submitted"
        self.emulator.complete(ingest["ingest_id"])  # it finishes; its message comes late
        sensor.poll()
        [completed] = self.payloads(COMPLETED)
        assert completed["ingest_id"] == ingest["ingest_id"] and "reconciled" not in completed  # from the queue
        assert sensor.stats["duplicates"] == 0
        sensor.poll()
        assert len(self.payloads(COMPLETED)) == 1 and len(self.payloads(OVERDUE)) == 1

    def test_a_restart_after_an_overdue_report_does_not_report_it_again(self):
        self.emulator.set(analysis_delay=None)
        self.ingest(b"never http://evil.com/never", "never.bin")
        sensor = self.sensor()
        sensor.poll()
        self.clock.advance(7201 + 24 * 3600)
        sensor.poll()
        assert len(self.payloads(OVERDUE)) == 1
        restarted = self.sensor()
        self.clock.advance(3600)
        restarted.poll()
        assert len(self.payloads(OVERDUE)) == 1 and self.unsettled() == []

    # -- reconciled outcomes are as durable as popped pages -------------------------
    def lost_ingest(self, name):
        """An ingest whose queue message is lost: only reconciliation can report it."""
        ingest = self.ingest(("lost http://evil.com/" + name).encode(), name)
        self.lose_queued_messages()
        return ingest

    def test_a_reconciled_outcome_is_remembered_across_a_restart(self):
        ingest = self.lost_ingest("remembered.bin")
        sensor = self.sensor()
        self.clock.advance(7201)
        sensor.poll()
        [reconciled] = self.payloads(COMPLETED)
        assert reconciled["reconciled"] is True
        restarted = self.sensor()  # a new process: the outcome is known from the datastore
        self.emulator.push_message(AL_USER, QUEUE, {"ingest_id": ingest["ingest_id"], "score": 0,
                                                    "submission": {"sid": ingest["ingest_id"],
                                                                   "metadata": {"ingest_id": ingest["ingest_id"]}}})
        restarted.poll()  # its late queue message
        assert len(self.payloads(COMPLETED)) == 1 and restarted.stats["duplicates"] == 1

    def kill_at_reconciled_dispatch(self, sensor):
        class Killed(BaseException):
            pass
        real_dispatch = self.sensor_service.dispatch

        def dying(*args, **kwargs):
            raise Killed()
        self.sensor_service.dispatch = dying
        with pytest.raises(Killed):
            sensor.poll()
        self.sensor_service.dispatch = real_dispatch
        self._killed = True

    def test_a_kill_before_a_reconciled_dispatch_fires_it_once_after_restart_flagged(self):
        ingest = self.lost_ingest("killed.bin")
        sensor = self.sensor()
        self.clock.advance(7201)
        self.kill_at_reconciled_dispatch(sensor)
        assert self.get_dispatched_triggers() == []
        restarted = self.sensor()
        restarted.poll()
        restarted._next_reconcile = 0
        restarted.poll()
        [payload] = self.payloads(COMPLETED)
        assert payload["ingest_id"] == ingest["ingest_id"] and payload["redelivered"] is True
        assert self.unsettled() == []

    def test_a_kill_around_an_overdue_report_never_repeats_it_unflagged(self):
        self.emulator.set(analysis_delay=None)
        self.ingest(b"never http://evil.com/killed-overdue", "never.bin")
        sensor = self.sensor()
        sensor.poll()
        self.clock.advance(7201 + 24 * 3600)
        real_done = Inbox.done

        class Killed(BaseException):
            pass

        def dying_done(inbox, page, ids):
            if page.triggers:
                raise Killed()  # dispatched, then killed before the outcome was marked done
            return real_done(inbox, page, ids)
        Inbox.done = dying_done
        try:
            with pytest.raises(Killed):
                sensor.poll()
        finally:
            Inbox.done = real_done
        self._killed = True
        restarted = self.sensor()
        restarted.poll()
        self.clock.advance(3600)
        restarted._next_reconcile = 0
        restarted.poll()
        first, again = self.payloads(OVERDUE)
        assert "redelivered" not in first and again["redelivered"] is True
        assert self.unsettled() == []

    def test_pending_records_outlive_a_sensor_stopped_for_weeks(self):
        real_set, ttls = self.sensor_service.set_value, {}

        def recording_set(name, value, ttl=None, **kwargs):
            ttls[name] = ttl
            return real_set(name, value, ttl=ttl, **kwargs)
        self.sensor_service.set_value = recording_set
        ingest = self.lost_ingest("weeks.bin")
        self.sensor_service.set_value = real_set
        [ttl] = [t for name, t in ttls.items() if name.startswith(PENDING_PREFIX)]
        assert ttl >= KEEP_SECONDS + 7200 - 5
        self.clock.advance(KEEP_SECONDS - 24 * 3600)  # stopped for four weeks
        self.sensor().poll()
        [payload] = self.payloads(COMPLETED)
        assert payload["ingest_id"] == ingest["ingest_id"] and payload["reconciled"] is True

    def test_the_clients_own_retry_of_a_lost_pop_loses_no_ingest(self):
        """The client retries a GET whose connection dropped: that pops the next page, and the
        page in the lost answer is gone. The ledger still holds those ingests."""
        ingests = [self.ingest("retry {} http://evil.com/r{}".format(n, n).encode(), "r{}.bin".format(n))
                   for n in range(6)]
        self.emulator.pump()
        self.emulator.set(drop_response_after_pop=1)
        config = pack_config(al_url=self.emulator.url, assemblyline={"retries": 3, "page_size": 3})
        sensor = self.sensor(config)
        sensor.poll()  # the first page of 3 dies with its answer; the client's retry pops the rest
        pops = [e for e in self.emulator.request_log if "/ingest/get_message_list/" in e["path"]]
        assert len(pops) >= 2 and pops[0]["status"] == 0
        assert len(self.payloads(COMPLETED)) == 3
        self.clock.advance(7201)
        sensor._next_reconcile = 0
        sensor.poll()
        ids = sorted(p["ingest_id"] for p in self.payloads(COMPLETED))
        assert ids == sorted(i["ingest_id"] for i in ingests)
        assert self.unsettled() == []

    # -- the ledger: settled without a delete per message ------------------------------
    def count_datastore_calls(self):
        calls = {"set_value": 0, "delete_value": 0, "get_value": 0, "list_values": 0}
        service = self.sensor_service
        for name in calls:
            def counted(*args, _name=name, _real=getattr(service, name), **kwargs):
                calls[_name] += 1
                return _real(*args, **kwargs)
            setattr(service, name, counted)
        return calls

    def test_dispatched_ingests_are_settled_by_the_done_pages_not_by_deletes(self):
        sensor = self.sensor()
        ledger = IngestLedger(self.sensor_service)
        calls = self.count_datastore_calls()
        for round_ in range(5):
            for n in range(20):
                self.ingest("round {} file {} http://evil.com/{}".format(round_, n, n).encode(),
                            "r{}f{}.bin".format(round_, n))
            self.ingest("AL-EMU:SKIP {}".format(round_).encode(), "skip{}.bin".format(round_))
            self.clock.advance(10)
            before = dict(calls)
            sensor.poll()
            assert calls["delete_value"] == before["delete_value"]  # none per message
            assert calls["set_value"] - before["set_value"] <= 3    # a page, its done mark, the lease
            assert self.unsettled() == []  # completions and failures alike
        assert len(self.payloads(COMPLETED)) == 100 and len(self.payloads(FAILED)) == 5
        assert len(ledger.pending()) == 105  # kept until they expire, never listed again:
        self.clock.advance(7200 + 3600 + 1)
        sensor._next_reconcile = 0
        self.emulator.clear_log()
        sensor.poll()  # the hours they were filed under are over and settled: the cursor moves on
        assert [e for e in self.emulator.request_log if "/search/" in e["path"]] == []
        cursor = self.sensor_service.get_value(CURSOR_KEY, local=False)
        assert cursor > max(r["key"][len(PENDING_PREFIX):].split(".")[0] for r in ledger.pending())
        listed = calls["list_values"]
        sensor._next_reconcile = 0
        sensor.poll()
        assert calls["list_values"] - listed <= 2  # only the hours from the cursor to now

    def test_a_lost_ingest_among_notified_ones_fires_on_the_first_reconcile_run(self):
        """Records of dispatched ingests are settled without a search and do not count
        against the per-run bound."""
        notified = [self.ingest("notified {} http://evil.com/n".format(n).encode(), "n{}.bin".format(n))
                    for n in range(45)]
        sensor = self.sensor()
        sensor.poll()
        assert len(self.payloads(COMPLETED)) == 45
        lost = self.ingest(b"lost among many http://evil.com/lost", "lost.bin")
        self.lose_queued_messages()
        self.clock.advance(7201)  # every record is overdue, the lost one has the latest deadline
        self.emulator.clear_log()
        sensor.poll()  # the first reconcile run after the deadline
        reconciled = [p for p in self.payloads(COMPLETED) if p.get("reconciled")]
        assert [p["ingest_id"] for p in reconciled] == [lost["ingest_id"]]
        searches = [e for e in self.emulator.request_log if "/search/" in e["path"]]
        assert len(searches) == 1  # only the lost one needed a search
        assert self.unsettled() == []
        assert {p["ingest_id"] for p in self.payloads(COMPLETED)} == {i["ingest_id"] for i in notified + [lost]}

    def test_searches_per_run_are_bounded_and_running_ones_do_not_crowd_out_lost_ones(self):
        self.emulator.set(analysis_delay=None)  # these keep running
        running = [self.ingest("running {}".format(n).encode(), "run{}.bin".format(n)) for n in range(20)]
        lost = [self.ingest("lost {}".format(n).encode(), "lost{}.bin".format(n)) for n in range(2)]
        for ingest in lost:
            self.emulator.delete_submission(ingest["ingest_id"])
        sensor = self.sensor()
        sensor.poll()
        self.clock.advance(7201)
        self.emulator.clear_log()
        sensor.poll()  # 22 overdue, 20 searched: the oldest deadlines, all still running
        assert self.get_dispatched_triggers() == []
        assert len([e for e in self.emulator.request_log if "/search/" in e["path"]]) == 20
        assert round(sensor._next_reconcile - self.clock()) == 60  # more wait: the next run comes sooner
        self.clock.advance(61)
        sensor.poll()  # records not checked yet go first
        assert sorted(p["ingest_id"] for p in self.payloads(OVERDUE)) == sorted(i["ingest_id"] for i in lost)
        assert all(p["sid"] is None and p["state"] is None for p in self.payloads(OVERDUE))
        assert self.unsettled() == [i["ingest_id"] for i in running]

    # -- datastore paging -----------------------------------------------------------
    def test_hundreds_of_pending_ingests_are_all_listed_and_reconciled(self):
        """st2 lists at most 100 keys per call; the ledger pages through all of them."""
        self.push(259)
        ledger = IngestLedger(self.sensor_service, clock=self.clock)
        for n in range(260):  # as the ingest actions record them; the last one gets no message
            ledger.record_pending("iid{:06d}".format(n), "{:064x}".format(n), "/drop/f{}.bin".format(n), QUEUE, 7200)
        assert len(ledger.pending()) == 260
        sensor = self.sensor()
        sensor.poll()
        assert len(self.payloads(COMPLETED)) == 259 and len(ledger.pending()) == 260
        self.clock.advance(7201)
        self.emulator.clear_log()
        sensor.poll()
        [overdue] = self.payloads(OVERDUE)  # the last by name and deadline, found on the first run
        assert overdue["ingest_id"] == "iid000259" and overdue["file_path"] == "/drop/f259.bin"
        assert len([e for e in self.emulator.request_log if "/search/" in e["path"]]) == 2  # by id, by sha256
        assert self.unsettled() == []

    def test_hundreds_of_stored_pages_are_all_recovered_after_a_restart(self):
        self.push(250)
        messages = self.emulator.queue(AL_USER, QUEUE)
        self.lose_queued_messages()
        inbox = Inbox(self.sensor_service, clock=self.clock)  # what a previous process left

        def stored(message):
            page = inbox.page([message])
            inbox.persist(page)
            return page

        for message in messages[:120]:
            inbox.done(stored(message), [message["ingest_id"]])
        for message in messages[120:] + [messages[3], messages[119]]:  # replays of dispatched ids too
            stored(message)
        assert len(list_all(self.sensor_service, "page.", local=True)) == 252  # paging: tests/test_datastore.py
        self.sensor().poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)] == ["iid{:06d}".format(n) for n in range(120, 250)]
        self.sensor().poll()  # and all of them were marked done
        assert len(self.payloads(COMPLETED)) == 130

    def test_two_processes_with_the_same_clock_never_overwrite_each_others_pages(self):
        frozen = lambda: 1700000000.0  # noqa: E731 - a coarse clock, and a fresh counter per process
        first = Inbox(self.sensor_service, clock=frozen)
        second = Inbox(self.sensor_service, clock=frozen)  # another sensor, or this one restarted
        pages = [first.page([{"ingest_id": "a"}]), second.page([{"ingest_id": "b"}])]
        for page in pages:
            first.persist(page)
        assert pages[0].key != pages[1].key
        recovered = Inbox(self.sensor_service).recover()
        assert sorted(m["ingest_id"] for p in recovered for m in p.messages) == ["a", "b"]

    # -- one active sensor per queue (StackStorm HA) -----------------------------------
    def test_a_second_sensor_process_stands_by_with_a_clear_message_and_takes_over_later(self):
        self.push(3)
        first = AssemblylineNotificationSensor(sensor_service=self.sensor_service, config=self.config,
                                               clock=self.clock)
        first.setup()
        second = self.sensor()  # another sensor container, same datastore and queue
        first.poll()
        self.push(2, start=3)
        second.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)] == ["iid{:06d}".format(n) for n in range(3)]
        errors = [line for level, line in self.log.lines if level == "ERROR"]
        assert len(errors) == 1 and "Another AssemblylineNotificationSensor" in errors[0]
        assert first._lease.instance in errors[0] and "sensor partitioning" in errors[0]
        second.poll()  # still standing by: one message, not one per poll
        assert len([1 for level, _ in self.log.lines if level == "ERROR"]) == 1
        first.poll()   # the holder goes on
        assert len(self.payloads(COMPLETED)) == 5
        self.push(1, start=5)
        self.clock.advance(LEASE_POLLS * 10 + 1)  # the holder dies without cleanup: its lease expires
        second.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)][-1] == "iid000005"
        assert any("Took over polling" in line for _, line in self.log.lines)

    def test_a_clean_stop_releases_the_queue_at_once(self):
        first = self.sensor()
        first.poll()
        first.cleanup()
        self.push(1)
        second = AssemblylineNotificationSensor(sensor_service=self.sensor_service, config=self.config,
                                                clock=self.clock)
        second.setup()
        second.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED)] == ["iid000000"]

    def test_a_lease_written_over_at_the_same_moment_goes_to_the_last_writer(self):
        from lib.sensor_lease import SensorLease
        mine = SensorLease(self.sensor_service, QUEUE, 30, clock=self.clock, instance="a")
        theirs = SensorLease(self.sensor_service, QUEUE, 30, clock=self.clock, instance="b")
        real_set = self.sensor_service.set_value

        def racing(name, value, **kwargs):  # b writes right after a, before a reads back
            real_set(name, value, **kwargs)
            if '"instance": "a"' in value:
                real_set(name, value.replace('"instance": "a"', '"instance": "b"'), **kwargs)
        self.sensor_service.set_value = racing
        try:
            assert mine.acquire()["instance"] == "b"
        finally:
            self.sensor_service.set_value = real_set
        assert theirs.acquire() is None and mine.acquire()["instance"] == "b"

    # -- dedupe memory ------------------------------------------------------------------
    def test_dedupe_memory_is_bounded_least_recent_first(self):
        inbox = Inbox(self.sensor_service, memory=3)
        for ingest_id in ("a", "b", "c"):
            inbox.remember(ingest_id)
        inbox.remember("a")  # remembered again: now the most recent
        inbox.remember("d")  # evicts "b"
        assert [i for i in "abcd" if inbox.seen(i)] == ["a", "c", "d"]

    def test_an_id_evicted_from_the_dedupe_memory_fires_again_when_replayed(self):
        """At least once: after a restart the memory holds the most recent dispatched ids only."""
        self.push(60)
        self.sensor().poll()
        restarted = self.sensor()
        restarted._inbox.memory = 20  # 10 messages (ingest_id and upload token each), loaded at its first poll
        self.push(1, start=5)
        self.push(1, start=55)
        restarted.poll()
        ids = [p["ingest_id"] for p in self.payloads(COMPLETED)]
        assert ids == ["iid{:06d}".format(n) for n in range(60)] + ["iid000005"]
        assert restarted.stats["duplicates"] == 1  # iid000055 was still remembered

    # -- reconciliation has its own schedule ----------------------------------------------
    def test_failing_reconciliation_backs_off_alone_and_never_slows_the_queue(self):
        lost = self.ingest(b"http://evil.com/lost-while-search-fails", "lost.bin")
        self.lose_queued_messages()
        sensor = self.sensor(pack_config(al_url=self.emulator.url, assemblyline={"retries": 1}))
        sensor.poll()  # the first run: nothing overdue yet
        self.clock.advance(7201)
        self.emulator.set(error_rate=1.0, error_status=503, fault_paths="/search/")
        self.emulator.clear_log()
        sensor.poll()
        [error] = [line for level, line in self.log.lines if level == "ERROR"]
        assert error.startswith("Reconciling overdue ingests failed (1 in a row, next try in 300 s)")
        assert sensor._retry_at == 0.0 and sensor.stats["errors"] == 0 and sensor.stats["reconcile_errors"] == 1
        self.push(3)
        self.emulator.clear_log()
        for _ in range(3):  # the queue is drained at every poll, search is not retried each time
            self.clock.advance(10)
            sensor.poll()
        assert len(self.payloads(COMPLETED)) == 3
        assert [e["path"] for e in self.emulator.request_log if "/search/" in e["path"]] == []
        self.emulator.set(error_status=403)
        self.clock.advance(300)
        sensor.poll()
        error = [line for level, line in self.log.lines if level == "ERROR"][-1]
        assert "(2 in a row, next try in 600 s)" in error and "HTTP 403" in error
        assert not [e for e in self.emulator.request_log if "login" in e["path"]]  # the client was kept
        self.emulator.set(error_rate=0.0)
        self.clock.advance(300)
        sensor.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED) if p.get("reconciled")] == []  # not due yet
        self.clock.advance(300)
        sensor.poll()
        assert [p["ingest_id"] for p in self.payloads(COMPLETED) if p.get("reconciled")] == [lost["ingest_id"]]
        assert ("INFO", "Reconciling overdue ingests works again after 2 failed attempts") in self.log.lines
        for _, line in self.log.lines:
            for secret in SECRETS:
                assert secret not in line
