"""Test session set-up shared by every test module.

Mirrors what ``st2-run-pack-tests`` does: ``actions/``, ``actions/lib`` and
``sensors/`` go on ``sys.path``; and installs the st2 stand-in only when the real
StackStorm modules are not importable.
"""
import os
import sys

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

for _sub in ("sensors", os.path.join("actions", "lib"), "actions"):
    _path = os.path.join(PACK_DIR, _sub)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tests.st2_standin import install_if_missing  # noqa: E402

install_if_missing()


import pytest  # noqa: E402

from tests.emulators.assemblyline import AssemblylineEmulator  # noqa: E402
from tests.emulators.threatconnect import ThreatConnectEmulator  # noqa: E402
from tests.helpers import AL_APIKEY, AL_USER, TC_ACCESS_ID, TC_OWNER, TC_SECRET_KEY, TC_TOKEN  # noqa: E402


@pytest.fixture(scope="module")
def emulator():
    """A loopback Assemblyline for the module; analyses finish when a test says so."""
    with AssemblylineEmulator(user=AL_USER, apikey=AL_APIKEY, analysis_delay=None) as emu:
        yield emu


@pytest.fixture(scope="module")
def tc():
    """A loopback ThreatConnect for the module whose jobs complete on the first poll."""
    with ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY, token=TC_TOKEN,
                               owners=[TC_OWNER], queued_polls=0, running_polls=0) as emu:
        yield emu


# ------------------------------------------------------------------ secrets sweep
#
# After every test: no secret value (tests/helpers.py LEAK_MARKERS) in any log
# record of any level (message, arguments, exception and stack text), in any
# trigger payload dispatched through the sensor service stand-in, in any action
# result or exception out of an action's run(), or in any exception out of a
# sensor's poll(). The recording wraps the stand-in's (or real st2tests')
# classes from here, so they keep only the names real st2 has.

import logging  # noqa: E402

from st2common.runners.base_action import Action  # noqa: E402
from st2reactor.sensor.base import BaseSensor  # noqa: E402
from st2tests.mocks.sensor import MockSensorService  # noqa: E402

from tests.helpers import LEAK_MARKERS  # noqa: E402


class _Sweep(logging.Handler):
    """Keeps, for every record, the texts a log line could show."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found = []  # type: list
        self.levels = set()  # type: set  # levels of the records seen (the self-test reads it)

    def emit(self, record: logging.LogRecord) -> None:
        self.levels.add(record.levelno)
        try:
            texts = [record.getMessage()]
        except Exception:  # a bad format/args pair: check the parts
            texts = []
        texts += [str(record.msg), repr(record.args)]
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
        texts += [record.exc_text or "", record.stack_info or ""]
        self.check("log record of {} ({})".format(record.name, record.levelname), *texts)

    def check(self, where: str, *texts: object) -> None:
        for text in texts:
            text = str(text)
            for marker in LEAK_MARKERS:
                if marker in text:
                    self.found.append("{}: {!r}".format(where, text[:300]))
                    return


def _wrap(sweep: _Sweep, kind: str, method):
    def recorded(*args, **kwargs):
        try:
            outcome = method(*args, **kwargs)
        except BaseException as exc:
            sweep.check("exception out of {}".format(kind), exc, repr(exc))
            raise
        sweep.check("{} result".format(kind), repr(outcome))
        return outcome
    return recorded


@pytest.fixture(autouse=True)
def secret_sweep(monkeypatch):
    sweep = _Sweep()
    root = logging.getLogger()
    level = root.level
    root.addHandler(sweep)
    root.setLevel(logging.DEBUG)

    dispatch = MockSensorService.dispatch_with_context

    def dispatch_with_context(self, trigger, payload=None, trace_context=None):
        sweep.check("payload of trigger {}".format(trigger), repr(payload), repr(trace_context))
        return dispatch(self, trigger, payload=payload, trace_context=trace_context)

    action_init, sensor_init = Action.__init__, BaseSensor.__init__

    def action_init_recorded(self, *args, **kwargs):
        action_init(self, *args, **kwargs)
        self.run = _wrap(sweep, "action {}".format(type(self).__name__), self.run)

    def sensor_init_recorded(self, *args, **kwargs):
        sensor_init(self, *args, **kwargs)
        if callable(getattr(self, "poll", None)):
            self.poll = _wrap(sweep, "sensor {}.poll".format(type(self).__name__), self.poll)

    monkeypatch.setattr(MockSensorService, "dispatch_with_context", dispatch_with_context)
    monkeypatch.setattr(Action, "__init__", action_init_recorded)
    monkeypatch.setattr(BaseSensor, "__init__", sensor_init_recorded)
    try:
        yield sweep
    finally:
        root.removeHandler(sweep)
        root.setLevel(level)
    assert not sweep.found, "secret values leaked:\n" + "\n".join(sweep.found[:10])
