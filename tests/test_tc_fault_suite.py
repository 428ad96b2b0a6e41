"""ThreatConnect faults, all at once: every indicator ends Completed in TC or reported.

One submission of 20,000 indicators in 10 jobs while the TC emulator answers 5 % of
requests 503 and 5 % 429 (bursts: several in a row happen), error files appear late, two
upload answers are lost after TC took the body, one after TC did not (the job still
``Created``), a create answer is lost after TC made the job, and one job stays Running past
``poll_timeout``. Then the same submission runs again (a workflow retried after a failure
midway). Counted: indicators in TC, indicators reported (item errors, rejected, not
submitted, in an unfinished job), jobs TC holds that the results do not name.
"""
import json

import pytest

from lib.errors import ThreatConnectError
from lib.tc_submit import submit
from tests.test_threatconnect_client import OWNER, client_for, emu, hosts, rec  # noqa: F401 - fixtures

COUNT, PER_JOB = 20000, 2000


def items():
    for n, item in enumerate(hosts(COUNT)):
        if n % 997 == 5:
            item["rating"] = 9  # TC refuses it: an item error with its reason
        yield item


def reported_summaries(result):
    return {json.loads(e["source"])["summary"] for e in result["errors"] if e.get("source")}


def submit_through_faults(emu, rec):  # noqa: F811 - pytest fixtures
    client = client_for(emu, rec, batch_max_items=PER_JOB, retries=8, poll_timeout=600)
    try:
        return submit(client, items())
    except ThreatConnectError as error:  # retries exhausted: what was done is in partial_result
        return dict(error.partial_result, failed=str(error))


def test_every_indicator_completes_or_is_reported_and_no_job_is_left_unnamed(emu, rec):  # noqa: F811
    emu.configure(rate_5xx=0.05, status_5xx=503, rate_429=0.05, retry_after="1", error_file_delay=2,
                  queued_polls=1, running_polls=2, stuck_batches=(1004,))
    emu.fail_next(502, method="POST", path=r"/v2/batch$", after=True)        # create answer lost: job made
    emu.fail_next(502, count=2, method="POST", path=r"/v2/batch/\d+$", after=True)  # body taken, answer lost
    emu.fail_next(502, method="POST", path=r"/v2/batch/\d+$")                # refused: job still Created
    emu.fail_next(503, count=4, method="GET")                                 # a burst of 5xx on reads
    emu.fail_next(429, count=4, retry_after="2", method="GET")               # and of 429s
    first = submit_through_faults(emu, rec)
    log = emu.request_log()
    faults = {status: sum(1 for e in log if e["status"] == status) for status in (429, 502, 503)}
    print("\nTC fault suite, first run: faults {}, requests {}, jobs in TC {}, warnings {}, "
          "stopped {}".format(faults, len(log), len(emu.jobs()), first["warnings"], first["stopped"]))
    assert faults[429] >= 4 and faults[503] >= 4 and faults[502] >= 4 and "failed" not in first

    stored = set(emu.indicators(OWNER))
    everything = {i["summary"] for i in hosts(COUNT)}
    unfinished_items = sum(j["items"] for j in first["jobs"] if j["batch_id"] in first["unfinished"])
    accounted = (len(stored) + len(reported_summaries(first)) + first["totals"]["not_submitted"]
                 + first["totals"]["rejected"] + unfinished_items)
    assert first["stopped"]["reason"] == "poll_timeout" and first["unfinished"] == [1004]
    assert accounted == COUNT, "an indicator neither in TC nor reported"
    named = {j["batch_id"] for j in first["jobs"]}
    unnamed = [j for j in emu.jobs() if j["id"] not in named]
    # a job TC holds that the result does not name is an empty one from a retried create,
    # and the result says so
    assert all(j["status"] == "Created" and not j["items"] for j in unnamed)
    warned = sum(int(w.split(" may hold ")[1].split()[0]) for w in first["warnings"] if " may hold " in w)
    assert len(unnamed) == 1 and warned >= len(unnamed)

    # the retried workflow: the stuck job finished meanwhile, the rest goes through
    emu.configure(stuck_batches=(), rate_5xx=0.0, rate_429=0.0)
    again = submit_through_faults(emu, rec)
    stored = emu.indicators(OWNER)
    bad = {i["summary"] for n, i in enumerate(hosts(COUNT)) if n % 997 == 5}
    assert set(stored) == everything - bad
    assert reported_summaries(again) == bad
    assert again["stopped"] is None and again["unfinished"] == []
    # nothing duplicated by the faults or the rerun: each indicator is stored once, with
    # one rating, and the jobs of the rerun carry each item once
    assert len(stored) == COUNT - len(bad)
    assert sum(j["items"] for j in again["jobs"]) == COUNT
    print("TC fault suite, rerun: stored {}, reported with a reason {}, jobs {}".format(
        len(stored), len(reported_summaries(again)), len(again["jobs"])))
