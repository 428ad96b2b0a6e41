"""100,000 indicators through the bulk workflow stay references and counts in StackStorm.

StackStorm stores every task result, every action's parameters and the workflow
output as one database document each, capped at 16 MB. This drives
``ingest_to_threatconnect`` with the real orquesta conductor over 100 files of
1,000 indicators each and measures the largest such document.
"""
import math

import pytest

orquesta = pytest.importorskip("orquesta", reason="orquesta 1.2.0 imports on Python 3.8 only")

from tests.helpers import TC_OWNER  # noqa: E402
from tests.test_e2e_workflows import PACK, config, harness, largest_document  # noqa: E402

FILES = 100
HOSTS_PER_FILE = 500  # each line gives a URL and its Host: 1,000 indicators, plus the File
MB = 1024 * 1024


def write_files(drop):
    for number in range(FILES):
        lines = ["http://evil-b{}-{}.com/p".format(number, i) for i in range(HOSTS_PER_FILE)]
        (drop / "big{:03d}.txt".format(number)).write_text("\n".join(lines + ["FAMILY=EMOTET", ""]))


def test_a_hundred_thousand_indicators_publish_only_references_and_counts(emulator, tc, tmp_path):
    emulator.set(analysis_delay=None)
    drop = tmp_path / "quarantine"
    drop.mkdir()
    write_files(drop)
    raw = config(emulator, tc, drop)
    raw["mapping"] = {"max_indicators_per_submission": 2000}
    run = harness(raw, emulator).run(PACK + ".ingest_to_threatconnect", {"directory": str(drop)})
    assert run.status == "succeeded", (run.errors, run.output)
    out = run.output
    expected = FILES * (2 * HOSTS_PER_FILE + 1)
    assert out["indicator_count"] == expected and out["tc_error_count"] == 0
    assert out["tc_totals"]["success_count"] == expected + FILES  # + one group per file
    assert tc.counts(TC_OWNER) == {"indicators": expected, "groups": FILES}
    jobs = [j for j in tc.jobs() if j["id"] in out["batch_ids"]]
    uploaded = sum(j["upload_bytes"] for j in jobs)
    assert len(jobs) == len(out["batch_ids"]) and sum(j["items"] for j in jobs) == expected + FILES
    # as few jobs as the limits allow: the 2,000,000-byte upload cap decides here, not 25,000 items
    assert all(j["upload_bytes"] <= 2000000 for j in jobs)
    assert len(jobs) <= math.ceil(uploaded / 2000000) + 1
    largest = largest_document(run)
    assert largest < MB, largest  # 16 MB is the limit: far below it
    print("largest StackStorm document at {} indicators: {} bytes; {} TC jobs".format(
        expected, largest, len(out["batch_ids"])))
