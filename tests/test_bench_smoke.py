"""Each benchmark of bench/ runs once at a tiny size, so the benches cannot rot.

Timings are never asserted: only that a bench exits 0 and prints its ratio lines. The tcex
side of the indicator bench runs only where ``make bench`` built .venv/tcex; the pack's side
always runs. The end-to-end bench needs orquesta (Python 3.8).
"""
import os
import re
import subprocess
import sys

import pytest

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TCEX = os.path.join(PACK_DIR, ".venv", "tcex", "bin", "python")
RATIO = re.compile(r"^RATIO (\S+): -?\d+\.\d+", re.MULTILINE)
FIGURE = re.compile(r"^FIGURE (\S+): ", re.MULTILINE)


def run_bench(script, *args, timeout=240):
    done = subprocess.run([sys.executable, os.path.join(PACK_DIR, "bench", script)] + list(args),
                          cwd=PACK_DIR, env=dict(os.environ, PYTHONPATH=PACK_DIR),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, out + done.stderr.decode("utf-8", "replace")[-4000:]
    assert out.splitlines()[0].count("calibration loop") == 1, out  # the calibration comes first
    return set(RATIO.findall(out)), set(FIGURE.findall(out)), out


def test_indicator_bench_prints_its_ratios():
    args = ["--tags", "1500", "--repeat", "1", "--complete-indicators", "300",
            "--rss-indicators", "1000", "--tcex-first-poll", "0.1"]
    if not os.path.exists(TCEX):
        args.append("--no-tcex")
    ratios, figures, out = run_bench("bench_indicators.py", *args)
    assert "floor output identical to the pack's: True" in out
    assert "p2.build_validate_serialise.pack_vs_floor" in ratios
    assert "p2.peak_rss_mb_at_1k" in figures
    if os.path.exists(TCEX):
        assert {"p2.build_validate_serialise.pack_vs_tcex", "p2.to_completed.pack_vs_tcex"} <= ratios
    else:
        assert "B tcex: skipped" in out


def test_ceiling_bench_bisects_the_document_limit():
    _, figures, out = run_bench("bench_ceiling.py", "--limit", "400000")
    assert "ceiling.build_indicators_result_over_limit_at_indicators" in figures, out


def test_queue_bench_prints_its_ratio():
    ratios, figures, _ = run_bench("bench_queue.py", "--messages", "150", "--repeat", "1")
    assert "p1.queue_drain.pack_vs_receiver" in ratios
    assert {"p1.pack.messages_per_al_request", "p1.pack.datastore_writes_per_message",
            "p1.pack.datastore_deletes_per_message"} <= figures


def test_end_to_end_bench_prints_its_ratio():
    pytest.importorskip("orquesta", reason="orquesta 1.2.0 imports on Python 3.8 only")
    ratios, figures, _ = run_bench("bench_e2e.py", "--files", "4", "--repeat", "1",
                                   "--analysis-delay", "0.2")
    assert "p3.end_to_end.pack_vs_script" in ratios
    assert {"p3.pack.al_requests_per_file", "p3.pack.tc_jobs", "p3.script.tc_jobs"} <= figures
