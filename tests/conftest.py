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
