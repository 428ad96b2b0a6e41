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
from lib.ingest import FileIngester
from lib.ledger import IngestLedger
from notification_sensor import AssemblylineNotificationSensor
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
        sensor = AssemblylineNotificationSensor(sensor_service=self.sensor_service,
                                                config=config or self.config, clock=self.clock)
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

    def payloads(self, trigger):
        return [d["payload"] for d in self.get_dispatched_triggers() if d["trigger"] == trigger]

    def push(self, count, start=0):
        """Queue ``count`` messages of the real shape (taken from a real ingest)."""
        template_ingest = self.ingest(b"template http://evil.com/x", "template.bin")
        IngestLedger(self.sensor_service).resolve(template_ingest["ingest_id"])
        template = self.emulator.queue(AL_USER, QUEUE)[0]
        self.emulator.state.queues.clear()
        encoded = json.dumps(template)
        for n in range(start, start + count):
            message = json.loads(encoded)
            message["ingest_id"] = message["submission"]["sid"] = "iid{:06d}".format(n)
            message["submission"]["metadata"]["ingest_id"] = message["ingest_id"]
            self.emulator.push_message(AL_USER, QUEUE, message)

    # -- setup ------------------------------------------------------------------
    def test_setup_is_network_free_and_takes_the_interval_from_config(self):
        sensor = self.sensor()
        assert sensor.get_poll_interval() == 10
        assert self.emulator.request_log == []

    def test_invalid_config_is_logged_and_poll_does_nothing(self):
        sensor = self.sensor(config={"assemblyline": {"url": "ftp://x"}})
        sensor.poll()
        assert self.get_dispatched_triggers() == []
        assert self.log.lines[0][0] == "ERROR" and "is not configured" in self.log.lines[0][1]

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
        assert self.sensor_service.datastore_service.write_count <= 2 * 200 + 5  # per page, not per message

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

        def broken(*args, **kwargs):
            raise RuntimeError("datastore unavailable")
        self.sensor_service.datastore_service.set_value = broken
        sensor.poll()
        assert sensor.stats["errors"] == 1
        assert "RuntimeError: datastore unavailable" in self.log.lines[-1][1]
        assert self.get_dispatched_triggers() == []  # nothing dispatched unpersisted

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
        assert IngestLedger(self.sensor_service).pending() == []

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
        assert [r["ingest_id"] for r in IngestLedger(self.sensor_service).pending()] == [running["ingest_id"]]
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
        assert IngestLedger(self.sensor_service).pending() == []
        assert len(self.payloads(COMPLETED)) == 1
