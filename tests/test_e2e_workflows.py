"""The workflows end to end: the real orquesta 1.2.0 conductor (Python 3.8) runs the pack's
real actions against the Assemblyline and ThreatConnect emulators.

The harness honours task and retry delays through a ``sleep`` hook: here a
"sleep" lets time pass in the emulators (analyses finish), so a poll loop or a
transient retry is exercised exactly as StackStorm would schedule it.
"""
import json
import math

import pytest

orquesta = pytest.importorskip("orquesta", reason="orquesta 1.2.0 imports on Python 3.8 only")

from ingest_file import IngestFileAction  # noqa: E402
from lib import ingest_status  # noqa: E402
from st2common.runners.utils import PackConfigDict  # noqa: E402
from st2tests.mocks.action import MockActionService, MockActionWrapper  # noqa: E402
from tests.helpers import TC_OWNER, assert_no_secrets, pack_config  # noqa: E402
from tests.workflow_harness import WorkflowHarness  # noqa: E402

PACK = "assemblyline_threatconnect"
MB = 1024 * 1024


def sample(index, extra=b""):
    """A harmless text file with IOCs the emulator's analysis turns into tags."""
    return (b"dropper %d\nbeacon http://evil-c2-%d.com/gate.php?id=%d\nfallback malware-%d.ru\n"
            b"mail ops%d@bad-actor.ru\nFAMILY=EMOTET\n" % (index, index, index, index, index)) + extra


@pytest.fixture(autouse=True)
def fresh(emulator, tc):
    emulator.reset(knobs=True)
    emulator.set(analysis_delay=None)
    tc.configure(queued_polls=0, running_polls=0, excluded_indicators=(), rate_5xx=0.0)
    tc.clear_faults()
    yield


@pytest.fixture
def drop(tmp_path):
    root = tmp_path / "quarantine"
    root.mkdir()
    return root


def config(emulator, tc, drop, **tc_settings):
    settings = dict({"retries": 0}, **tc_settings)
    return pack_config(al_url=emulator.url, tc_url=tc.url, roots=[str(drop)], threatconnect=settings)


def harness(raw_config, emulator, datastore=None):
    """A harness whose delays let the emulator finish every running analysis."""
    service = datastore or MockActionService(MockActionWrapper(pack=PACK, class_name="harness"))
    return WorkflowHarness(raw_config, action_service=service, sleep=lambda seconds: emulator.complete_all())


def ingest(raw_config, path):
    """Ingest one file with the pack's own action; returns its ingest_id."""
    action = IngestFileAction(config=PackConfigDict(PACK, raw_config),
                              action_service=MockActionService(MockActionWrapper(PACK, "IngestFileAction")))
    return action.run(path=str(path))["ingest_id"]


def analysed_sample(raw_config, emulator, drop, number):
    """Drop sample ``number``, ingest it and let the emulator finish its analysis; returns its ingest_id."""
    (drop / "a.txt").write_bytes(sample(number))
    ingest_id = ingest(raw_config, drop / "a.txt")
    emulator.complete_all()
    return ingest_id


def trigger_fields(emulator, ingest_id):
    record = emulator.submission(ingest_id)
    return {"sid": record["sid"], "ingest_id": ingest_id, "score": record["max_score"],
            "metadata": record["metadata"]}


def owner_indicators(tc):
    return tc.indicators(TC_OWNER)


def largest_document(run):
    """The largest JSON document StackStorm would store: a task result, a parameter set or the output."""
    documents = [run.output] + [t.result for t in run.tasks] + [t.params for t in run.tasks]
    return max(len(json.dumps(d, default=str)) for d in documents)


# -- submission_to_threatconnect -------------------------------------------------

def test_completed_submission_reaches_threatconnect_with_a_summary(emulator, tc, drop):
    raw = config(emulator, tc, drop)
    ingest_id = analysed_sample(raw, emulator, drop, 1)
    run = harness(raw, emulator).run(PACK + ".submission_to_threatconnect", trigger_fields(emulator, ingest_id))
    assert run.status == "succeeded", (run.errors, run.output)
    out = run.output
    assert out["failure"] is None and out["sid"] == ingest_id
    assert out["al_url"].endswith(ingest_id) and out["file_path"] == str(drop / "a.txt")
    assert out["counts_by_type"]["URL"] == 1 and out["counts_by_type"]["Host"] >= 2
    assert out["counts_by_type"]["EmailAddress"] == 1 and out["counts_by_type"]["File"] >= 1
    assert out["indicator_count"] == sum(out["counts_by_type"].values())
    assert len(out["batch_ids"]) == 1 and out["tc_error_count"] == 0
    assert out["tc_totals"]["success_count"] == out["indicator_count"] + 1  # + the submission's group
    stored = owner_indicators(tc)
    assert "http://evil-c2-1.com/gate.php?id=1" in stored and "malware-1.ru" in stored
    assert [g["xid"] for g in tc.groups(TC_OWNER).values()] == [out_group_xid(run)] == [out["group_xid"]]
    assert out["filtered"].get("private", 0) == 0 and out["filtered"]["tags_total"] >= out["indicator_count"]
    assert_no_secrets(json.dumps(run.output), *(json.dumps(t.result) for t in run.tasks))


def out_group_xid(run):
    return run.task("send").result["result"]["submissions"][0]["group_xid"]


def test_rerun_of_the_same_submission_adds_nothing(emulator, tc, drop):
    raw = config(emulator, tc, drop)
    ingest_id = analysed_sample(raw, emulator, drop, 2)
    fields = trigger_fields(emulator, ingest_id)
    first = harness(raw, emulator).run(PACK + ".submission_to_threatconnect", fields)
    before = (tc.counts(TC_OWNER), sorted(owner_indicators(tc)), sorted(tc.groups(TC_OWNER)))
    second = harness(raw, emulator).run(PACK + ".submission_to_threatconnect", fields)
    assert first.status == second.status == "succeeded"
    assert (tc.counts(TC_OWNER), sorted(owner_indicators(tc)), sorted(tc.groups(TC_OWNER))) == before
    assert second.output["tc_error_count"] == 0 and second.output["batch_ids"] != first.output["batch_ids"]


def test_threatconnect_partial_failure_is_reported_per_indicator(emulator, tc, drop):
    raw = config(emulator, tc, drop)
    ingest_id = analysed_sample(raw, emulator, drop, 3)
    tc.configure(excluded_indicators=("malware-3.ru",))
    run = harness(raw, emulator).run(PACK + ".submission_to_threatconnect", trigger_fields(emulator, ingest_id))
    assert run.status == "succeeded", run.errors  # the job completed: what TC refused is reported
    out = run.output
    assert out["tc_error_count"] == 1 and out["tc_totals"]["error_count"] == 1
    assert "exclusion list" in out["tc_errors"][0]["reason"]
    assert "malware-3.ru" in out["tc_errors"][0]["source"]
    assert out["tc_errors"][0]["batch_id"] == out["batch_ids"][0]
    assert "malware-3.ru" not in owner_indicators(tc) and "http://evil-c2-3.com/gate.php?id=3" in owner_indicators(tc)


def test_unknown_submission_fails_naming_the_step_and_cause(emulator, tc, drop):
    run = harness(config(emulator, tc, drop), emulator).run(
        PACK + ".submission_to_threatconnect", {"sid": "6Xb1RcTn2GqKxWvYzA3mQe"})
    assert run.status == "failed"
    failure = run.output["failure"]
    assert failure.startswith("send_to_threatconnect failed: ") and "6Xb1RcTn2GqKxWvYzA3mQe" in failure
    assert [t.task_id for t in run.tasks].count("send") == 1  # permanent: not retried
    assert run.output["batch_ids"] == [] and run.output["indicator_count"] == 0


def test_unreachable_assemblyline_is_retried_then_fails_with_its_cause(emulator, tc, drop):
    raw = pack_config(al_url="http://127.0.0.1:9", tc_url=tc.url, roots=[str(drop)],
                      assemblyline={"retries": 1, "timeout": 1}, threatconnect={"retries": 0})
    flow = harness(raw, emulator)
    run = flow.run(PACK + ".submission_to_threatconnect",
                   {"sid": "6Xb1RcTn2GqKxWvYzA3mQe", "retry_count": 2, "retry_delay": 5})
    assert run.status == "failed"
    assert [t.task_id for t in run.tasks].count("send") == 3  # one run plus retry_count retries
    assert ("send", 5) in flow.delays
    assert run.output["failure"].startswith("send_to_threatconnect failed: ")
    assert "Assemblyline" in run.output["failure"]
    assert_no_secrets(run.output["failure"])


def test_analysis_still_running_is_retried_until_it_completes(emulator, tc, drop):
    raw = config(emulator, tc, drop)
    (drop / "a.txt").write_bytes(sample(4))
    ingest_id = ingest(raw, drop / "a.txt")  # not completed: the first send finds it running
    run = harness(raw, emulator).run(PACK + ".submission_to_threatconnect", {"sid": ingest_id})
    assert run.status == "succeeded", run.output
    sends = [t for t in run.tasks if t.task_id == "send"]
    assert len(sends) == 2 and sends[0].result["result"]["error_type"] == "not_ready"
    assert "http://evil-c2-4.com/gate.php?id=4" in owner_indicators(tc)


def test_threatconnect_5xx_then_success_through_retry(emulator, tc, drop):
    raw = config(emulator, tc, drop)
    ingest_id = analysed_sample(raw, emulator, drop, 5)
    tc.fail_next(503, count=1)  # retries=0: the action's create call fails, transient
    run = harness(raw, emulator).run(PACK + ".submission_to_threatconnect", trigger_fields(emulator, ingest_id))
    assert run.status == "succeeded", run.output
    sends = [t for t in run.tasks if t.task_id == "send"]
    assert [s.status for s in sends] == ["failed", "succeeded"]
    assert sends[0].result["result"]["transient"] is True and "503" in sends[0].result["result"]["error"]
    assert run.output["tc_error_count"] == 0 and len(tc.jobs()) >= 1
    assert "malware-5.ru" in owner_indicators(tc)


def test_jobs_still_running_are_polled_on_an_interval(emulator, tc, drop):
    raw = config(emulator, tc, drop)
    ingest_id = analysed_sample(raw, emulator, drop, 6)
    tc.configure(queued_polls=1, running_polls=1)
    flow = harness(raw, emulator)
    run = flow.run(PACK + ".submission_to_threatconnect", dict(trigger_fields(emulator, ingest_id), poll_interval=7))
    assert run.status == "succeeded", run.output
    polls = [t for t in run.tasks if t.task_id == "wait_for_jobs"]
    assert [p.result["result"]["completed"] for p in polls] == [False, False, True]
    assert flow.delays.count(("wait_for_jobs", 7)) == 2


def test_jobs_that_never_complete_fail_after_max_polls(emulator, tc, drop):
    raw = config(emulator, tc, drop)
    ingest_id = analysed_sample(raw, emulator, drop, 7)
    tc.configure(stuck_running=True)
    try:
        run = harness(raw, emulator).run(PACK + ".submission_to_threatconnect",
                                         dict(trigger_fields(emulator, ingest_id), max_polls=2))
    finally:
        tc.configure(stuck_running=False)
    assert run.status == "failed"
    assert "not Completed after 2 polls" in run.output["failure"]
    assert run.output["batch_ids"] and str(run.output["batch_ids"][0]) in run.output["failure"]


# -- ingest_to_threatconnect -------------------------------------------------------

def bulk_files(drop, count):
    for index in range(count):
        (drop / "s{:03d}.txt".format(index)).write_bytes(sample(100 + index))


def test_bulk_fifty_files_in_ceil_items_over_limit_jobs(emulator, tc, drop):
    bulk_files(drop, 50)
    limit = 60
    raw = config(emulator, tc, drop, batch_max_items=limit)
    groups_before = len(tc.groups(TC_OWNER))
    flow = harness(raw, emulator)
    run = flow.run(PACK + ".ingest_to_threatconnect", {"directory": str(drop), "poll_interval": 3})
    assert run.status == "succeeded", (run.errors, run.output)
    out = run.output
    assert out["ingest_counts"]["ingested"] == 50 and out["analysis_counts"]["completed"] == 50
    assert len(out["submissions"]) == 50 and out["failure"] is None
    items = out["indicator_count"] + len(out["submissions"])  # indicators + one group per submission
    assert len(out["batch_ids"]) == math.ceil(items / limit)
    assert out["tc_totals"]["success_count"] == items and out["tc_error_count"] == 0
    stored = owner_indicators(tc)
    assert all("http://evil-c2-{0}.com/gate.php?id={0}".format(100 + i) in stored for i in range(50))
    assert len(tc.groups(TC_OWNER)) - groups_before == 50
    files = {f["path"]: f for f in out["files"]}
    assert files[str(drop / "s000.txt")]["status"] == "ingested"
    assert ("wait_for_analyses", 3) in flow.delays  # the first check found the analyses running


def test_bulk_rerun_adds_nothing(emulator, tc, drop):
    bulk_files(drop, 5)
    raw = config(emulator, tc, drop)
    first = harness(raw, emulator).run(PACK + ".ingest_to_threatconnect", {"directory": str(drop)})
    before = (tc.counts(TC_OWNER), sorted(owner_indicators(tc)), sorted(tc.groups(TC_OWNER)))
    # force: ingested again; Assemblyline answers from its cache with the earlier submissions
    second = harness(raw, emulator).run(PACK + ".ingest_to_threatconnect",
                                        {"directory": str(drop), "force": True, "cache_grace": 0})
    assert first.status == second.status == "succeeded", second.output
    assert second.output["analysis_counts"]["completed"] == 5
    assert all(entry["cached"] for entry in second.output["completed"])
    assert (tc.counts(TC_OWNER), sorted(owner_indicators(tc)), sorted(tc.groups(TC_OWNER))) == before


def test_bulk_from_a_list_of_paths_reports_each_file(emulator, tc, drop):
    bulk_files(drop, 3)
    outside = drop.parent / "outside.txt"
    outside.write_bytes(sample(9))
    paths = [str(drop / "s000.txt"), str(drop / "s001.txt"), str(outside)]
    run = harness(config(emulator, tc, drop), emulator).run(PACK + ".ingest_to_threatconnect", {"paths": paths})
    assert run.status == "succeeded", run.output
    files = {f["path"]: f for f in run.output["files"]}
    assert files[str(outside)]["status"] == "skipped" and "allowed" in files[str(outside)]["reason"]
    assert run.output["analysis_counts"] == {"completed": 2, "failed": 0, "overdue": 0, "waiting": 0, "total": 2}
    assert "http://evil-c2-9.com/gate.php?id=9" not in owner_indicators(tc)


def test_bulk_without_directory_or_paths_fails_clearly(emulator, tc, drop):
    run = harness(config(emulator, tc, drop), emulator).run(PACK + ".ingest_to_threatconnect", {})
    assert run.status == "failed"
    assert "give directory" in run.output["failure"] and run.tasks == [run.task("start")]


def test_bulk_ingest_lost_by_assemblyline_is_reported_overdue(emulator, tc, drop, monkeypatch):
    bulk_files(drop, 2)
    passed = {"seconds": 0.0}
    real_now = ingest_status.now
    monkeypatch.setattr(ingest_status, "now", lambda: real_now() + passed["seconds"])
    raw = pack_config(al_url=emulator.url, tc_url=tc.url, roots=[str(drop)],
                      assemblyline={"completion_deadline": 60}, threatconnect={"retries": 0})
    lost = []

    def lose_one_then_finish(seconds):
        if not lost:  # Assemblyline drops one ingest without any record (timeout, exhausted retries)
            victim = sorted(emulator.submissions())[0]
            emulator.delete_submission(victim)
            lost.append(victim)
        emulator.complete_all()
        passed["seconds"] += seconds

    flow = WorkflowHarness(raw, action_service=MockActionService(MockActionWrapper(PACK, "h")),
                           sleep=lose_one_then_finish)
    run = flow.run(PACK + ".ingest_to_threatconnect",
                   {"directory": str(drop), "poll_interval": 30, "cache_grace": 0})
    assert run.status == "succeeded", run.output
    assert run.output["analysis_counts"]["completed"] == 1
    assert [o["ingest_id"] for o in run.output["overdue"]] == lost
    assert len(run.output["submissions"]) == 1


def test_a_bulk_run_failing_midway_then_rerun_leaves_no_duplicate_in_threatconnect(emulator, tc, drop):
    """The first job's upload is processed by TC but its answer is lost (a proxy answers 400):
    the workflow fails midway. The rerun sends everything again: no duplicate group, indicator
    or Description."""
    for index in range(6):  # contents no other test ingested: no cache hit from elsewhere
        (drop / "m{:03d}.txt".format(index)).write_bytes(sample(900 + index))
    raw = config(emulator, tc, drop, batch_max_items=8)
    groups_before, indicators_before = set(tc.groups(TC_OWNER)), len(owner_indicators(tc))
    jobs_before = {job["id"] for job in tc.jobs()}
    tc.fail_next(400, count=1, method="POST", path=r"/v2/batch/\d+$", after=True,
                 body='{"status":"Failure","message":"upload refused"}')
    first = harness(raw, emulator).run(PACK + ".ingest_to_threatconnect", {"directory": str(drop), "retry_count": 0})
    assert first.status == "failed" and "400" in first.output["failure"]
    from lib.config import load_config
    from lib.threatconnect import ThreatConnectClient
    client = ThreatConnectClient(load_config(raw)["threatconnect"], sleep=lambda seconds: None)
    for job in tc.jobs():  # TC runs the job it accepted whatever the pack heard (the emulator on polls)
        if job["id"] not in jobs_before and job["status"] != "Completed":
            client.wait(job["id"])
    landed = len(owner_indicators(tc)) - indicators_before
    assert landed > 0  # TC did the work the pack never heard about
    rerun = harness(raw, emulator).run(PACK + ".ingest_to_threatconnect", {"directory": str(drop), "force": True,
                                                                         "cache_grace": 0})
    assert rerun.status == "succeeded", rerun.output
    groups = list(tc.groups(TC_OWNER).values())
    names = [g["name"] for g in groups]
    sids = {entry["sid"] for entry in rerun.output["completed"]}
    new = [g for xid, g in tc.groups(TC_OWNER).items() if xid not in groups_before]
    assert len(names) == len(set(names)) and len(new) == len(sids) == 6, [g["name"] for g in new]
    after = owner_indicators(tc)
    # every indicator once (some were already in TC from other tests' samples), none twice
    assert landed < len(after) - indicators_before <= rerun.output["indicator_count"]
    assert "http://evil-c2-905.com/gate.php?id=905" in after
    for record in after.values():
        assert len([a for a in record["attributes"] if a["type"] == "Description"]) == 1
