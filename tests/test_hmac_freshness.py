"""HMAC: every signed request carries a current Timestamp and a signature valid for it, retries included.

The emulator logs each request's Timestamp, its own clock at arrival and whether
the signature matches that Timestamp (``signature_ok``). With one fake wall clock
shared by the signer and the emulator, where the client's retry sleeps advance
it, "current" is exact: the Timestamp equals the arrival second.
"""
import time

import pytest

from lib.tc_batch_bodies import BatchJob
from lib.tc_http import build_session
from lib.tc_submit import start_job
from lib.threatconnect import ThreatConnectClient
from tests.emulators.threatconnect import DROP, ThreatConnectEmulator
from tests.helpers import TC_ACCESS_ID, TC_OWNER, TC_SECRET_KEY


class WallClock:
    def __init__(self):
        self.now = 1700000000.0
        self.sleeps = []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


SETTINGS = {"owner": TC_OWNER, "access_id": TC_ACCESS_ID, "secret_key": TC_SECRET_KEY, "retries": 3}


@pytest.fixture
def clock():
    return WallClock()


@pytest.fixture
def fake_time_emu(clock):
    with ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY, owners=[TC_OWNER],
                               clock=clock.time, queued_polls=0, running_polls=0) as emu:
        yield emu


def fake_time_client(emu, clock):
    settings = dict(SETTINGS, api_url=emu.url)
    return ThreatConnectClient(settings, session=build_session(settings, clock=clock.time),
                               sleep=clock.sleep, monotonic=clock.time, errors_retry_delay=1.0)


def assert_all_current_and_valid(log):
    assert log and all(e["auth"] == "hmac" for e in log)
    for entry in log:
        assert entry["signature_ok"] is True, entry
        assert entry["timestamp"] == str(int(entry["time"])), entry  # signed when sent


def test_status_retries_are_signed_afresh_after_each_wait(fake_time_emu, clock):
    emu, client = fake_time_emu, fake_time_client(fake_time_emu, clock)
    emu.fail_next(429, retry_after="7", method="POST", path=r"/v2/batch$")
    emu.fail_next(502, method="POST", path=r"/v2/batch$")
    batch_id = client.create_batch(client.batch_config())
    emu.fail_next(429, retry_after="3", method="POST", path=r"/v2/batch/\d+$")
    client.upload(batch_id, b'{"indicator":[]}')
    emu.fail_next(503, count=2, method="GET")
    emu.fail_next(500, method="GET")
    client.status(batch_id)
    log = emu.request_log()
    assert [e["status"] for e in log] == [429, 502, 201, 429, 202, 503, 503, 500, 200]
    assert clock.sleeps == [7.0, 1.0, 3.0, 0.5, 1.0, 2.0]
    assert_all_current_and_valid(log)
    stamps = [int(e["timestamp"]) for e in log]
    assert stamps[1] - stamps[0] == 7 and stamps[4] - stamps[3] == 3  # waited, then signed again
    assert stamps[-1] - stamps[5] == 3  # 0.5 + 1.0 + 2.0 s of backoff between first and last poll


def test_a_stale_signature_is_refused_once_then_signed_with_the_current_time(fake_time_emu, clock):
    emu = fake_time_emu
    settings = dict(SETTINGS, api_url=emu.url)
    stamps = iter([clock.now - 1000])  # the first signing happens with a clock 1000 s behind
    session = build_session(settings, clock=lambda: next(stamps, clock.now))
    ThreatConnectClient(settings, session=session, sleep=clock.sleep).indicator_types()
    first, second = emu.request_log()
    assert first["status"] == 401 and first["signature_ok"] is True  # valid, but out of the window
    assert second["status"] == 200
    assert_all_current_and_valid([second])


def test_an_upload_whose_answer_was_lost_is_checked_and_sent_again_with_fresh_signatures(
        fake_time_emu, clock):
    emu, client = fake_time_emu, fake_time_client(fake_time_emu, clock)
    emu.fail_next(DROP, method="POST", path=r"/v2/batch/\d+$")  # the body never arrives
    start_job(client, client.batch_config(), BatchJob(b'{"indicator":[]}', 0, 0))
    log = emu.request_log()
    assert [(e["method"], e["status"]) for e in log] == [
        ("POST", 201), ("POST", DROP), ("GET", 200), ("POST", 202)]
    assert_all_current_and_valid(log)
    assert int(log[3]["timestamp"]) - int(log[1]["timestamp"]) >= 1  # after the 1 s backoff


def test_retries_with_real_waits_carry_later_timestamps():
    with ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY, owners=[TC_OWNER]) as emu:
        client = ThreatConnectClient(dict(SETTINGS, api_url=emu.url))
        emu.fail_next(429, count=2, retry_after="1", method="GET")
        client.indicator_types()
        log = emu.request_log()
    assert [e["status"] for e in log] == [429, 429, 200]
    stamps = [int(e["timestamp"]) for e in log]
    assert stamps[0] < stamps[1] < stamps[2]  # 1 s apart at least: signed again each time
    assert all(e["signature_ok"] and abs(e["time"] - int(e["timestamp"])) < 1.0 for e in log)


def test_a_connection_retry_after_a_wait_is_signed_again():
    with ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY, owners=[TC_OWNER]) as emu:
        client = ThreatConnectClient(dict(SETTINGS, api_url=emu.url))
        emu.fail_next(DROP, count=2, method="GET")  # retried after 0.5 s, then after 1 s
        started = time.time()
        client.indicator_types()
        log = emu.request_log()
    assert [e["status"] for e in log] == [DROP, DROP, 200] and time.time() - started >= 1.0
    assert all(e["signature_ok"] for e in log)  # the signature stays valid for its Timestamp
    assert log[2]["timestamp"] != log[0]["timestamp"]  # signed again by the client's own loop
