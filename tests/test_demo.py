"""``make demo`` runs in a clean process exactly as the README says, and cleans up after itself.

Python 3.8 only: the demo drives the real orquesta 1.2.0 conductor.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import LEAK_MARKERS, TC_ACCESS_ID

pytest.importorskip("orquesta", reason="orquesta 1.2.0 imports on Python 3.8 only")

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo(tmp_path, *args, **kwargs):
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH="")
    return subprocess.Popen([sys.executable, "-m", "demo"] + list(args), cwd=PACK_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **kwargs)


def assert_no_secrets_in(*outputs):
    """The demo runs with tests/helpers.py's credentials: none may show in what it prints."""
    for output in outputs:
        assert not [m for m in LEAK_MARKERS + (TC_ACCESS_ID,) if m in output], "a secret in the demo output"


def left_behind(tmp_path):
    return [p for p in os.listdir(str(tmp_path)) if p.startswith("al-tc-demo-")]


def test_demo_sends_the_samples_to_threatconnect_and_says_what_it_did_not_send(tmp_path):
    process = demo(tmp_path, "--analysis-delay", "0.2")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert_no_secrets_in(out, err)
    for stage in range(1, 6):
        assert "[{}/5]".format(stage) in out
    assert "sensor polls: 4/4 analyses reported" in out
    reached = out.split("What reached ThreatConnect", 1)[1].split("Not sent, and why", 1)[0]
    for indicator in ("http://evil-invoice-cdn.com/payload/stage1.bin", "malware-stage2.ru",
                      "billing@evil-hr-portal.com", "http://bad-update-service.net/a.ps1"):
        assert indicator in reached
    assert "15 indicators in 3 groups" in reached
    assert "198.51.100.77" not in reached and "example.com" not in reached
    rejected = out.split("Not sent, and why", 1)[1]
    assert "disk_image.bin" in rejected and "over the 16384 byte limit" in rejected
    assert "in this run" in rejected  # the duplicate copy
    assert "meeting_notes.txt" in rejected and "below the rule's threshold" in rejected
    assert "filtered: private" in rejected
    assert left_behind(tmp_path) == []


def test_a_stalled_analysis_fails_the_demo_clearly_and_still_cleans_up(tmp_path):
    process = demo(tmp_path, "--analysis-delay", "600", "--timeout", "1")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert_no_secrets_in(out, err)
    assert "demo failed: Assemblyline reported 0 of 4 ingests within 1 s" in err
    assert "Traceback" not in err
    assert left_behind(tmp_path) == []


def test_ctrl_c_stops_the_emulators_and_removes_the_work_directory(tmp_path):
    process = demo(tmp_path, "--analysis-delay", "600", "--timeout", "60")
    deadline = time.monotonic() + 60
    line = ""
    while "sensor polls" not in line and time.monotonic() < deadline:
        line = process.stdout.readline()
    assert "sensor polls" in line
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert_no_secrets_in(line, out, err)
    assert "demo interrupted" in err and "Traceback" not in err
    assert left_behind(tmp_path) == []
