"""The secrets sweep (tests/conftest.py) sees every channel it promises to check.

Each case leaks a marker on purpose, checks the sweep noticed, and clears its
findings so the test itself passes.
"""
import logging

import pytest

from st2common.runners.base_action import Action
from st2reactor.sensor.base import PollingSensor
from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper
from tests.helpers import LEAK_MARKER, TC_SECRET_KEY, TC_TOKEN


class LeakyAction(Action):
    def run(self, fail=False):
        if fail:
            raise RuntimeError("bad token " + TC_TOKEN)
        return True, {"echo": TC_SECRET_KEY}


class LeakySensor(PollingSensor):
    def setup(self):
        pass

    def poll(self):
        raise RuntimeError("cannot log in with " + LEAK_MARKER)

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass


def caught(sweep, where):
    found, sweep.found[:] = list(sweep.found), []
    assert len(found) == 1 and found[0].startswith(where), found


def test_debug_records_of_pack_loggers_are_seen(secret_sweep):
    logging.getLogger("lib.threatconnect").debug("Authorization: TC-Token %s", TC_TOKEN)
    assert logging.DEBUG in secret_sweep.levels
    caught(secret_sweep, "log record of lib.threatconnect (DEBUG)")


def test_exception_text_of_a_record_is_seen(secret_sweep):
    try:
        raise ValueError("key " + TC_SECRET_KEY)
    except ValueError:
        logging.getLogger("sensors.x").exception("poll failed")
    caught(secret_sweep, "log record of sensors.x (ERROR)")


def test_trigger_payloads_are_seen(secret_sweep):
    MockSensorService(MockSensorWrapper()).dispatch("pack.trigger", {"detail": LEAK_MARKER})
    caught(secret_sweep, "payload of trigger pack.trigger")


def test_action_results_and_exceptions_are_seen(secret_sweep):
    action = LeakyAction(config={})
    assert action.run() == (True, {"echo": TC_SECRET_KEY})
    caught(secret_sweep, "action LeakyAction result")
    with pytest.raises(RuntimeError):
        action.run(fail=True)
    caught(secret_sweep, "exception out of action LeakyAction")


def test_exceptions_out_of_poll_are_seen(secret_sweep):
    with pytest.raises(RuntimeError):
        LeakySensor(sensor_service=None, config={}).poll()
    caught(secret_sweep, "exception out of sensor LeakySensor.poll")
