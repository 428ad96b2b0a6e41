"""lib.tc_submit on its own: start_job, job_errors and is_fatal, against the TC emulator.

(``submit`` end to end: tests/test_threatconnect_client.py.)
"""
import pytest

from lib.errors import ThreatConnectError
from lib.tc_batch_bodies import iter_jobs
from lib.tc_submit import FATAL_REASONS, is_fatal, job_errors, start_job
from lib.threatconnect import ThreatConnectClient
from tests.emulators.threatconnect import ThreatConnectEmulator

TOKEN = "APITOKEN-5d1e-SUBMITTEST"
OWNER = "Example Org"


@pytest.fixture
def emu():
    with ThreatConnectEmulator(token=TOKEN, owners=[OWNER]) as emulator:
        yield emulator


def client_for(emu):
    return ThreatConnectClient({"api_url": emu.url, "owner": OWNER, "api_token": TOKEN},
                               sleep=lambda seconds: None, errors_retry_delay=0.01)


def one_job(*summaries):
    items = [{"type": "Host", "summary": s, "rating": 3, "confidence": 60} for s in summaries]
    jobs = list(iter_jobs([], items, 100, 100000, []))
    assert len(jobs) == 1
    return jobs[0]


def test_start_job_reports_the_batch_id_before_uploading_once(emu):
    client = client_for(emu)
    seen = []
    batch_id = start_job(client, client.batch_config(), one_job("a.example"),
                         lambda created: seen.append((created, client.status(created)["status"])))
    assert seen == [(batch_id, "Created")]  # the job existed, nothing uploaded yet
    status, completed = client.wait(batch_id)
    assert completed and status["successCount"] == 1


def test_start_job_failure_after_create_still_named_the_job(emu):
    client = client_for(emu)
    emu.fail_next(403, method="POST", path=r"/v2/batch/\d+$")
    seen = []
    with pytest.raises(ThreatConnectError):
        start_job(client, client.batch_config(), one_job("a.example"), seen.append)
    assert len(seen) == 1 and isinstance(seen[0], int)


def test_job_errors_reshape_the_error_file(emu):
    client = client_for(emu)
    batch_id = start_job(client, client.batch_config(), one_job("Upper.example", "ok.example"))
    status, _ = client.wait(batch_id)
    errors = job_errors(client, batch_id, status["errorCount"])
    assert errors and all(set(e) == {"reason", "source", "batch_id"} for e in errors)
    assert all(e["batch_id"] == batch_id and isinstance(e["reason"], str) for e in errors)


@pytest.mark.parametrize("reason", [r.upper() for r in FATAL_REASONS] + [
    "Encountered an unexpected exception while processing batch job 42"])
def test_whole_job_failures_are_fatal_whatever_their_case(reason):
    assert is_fatal(reason)


def test_an_ordinary_error_is_not_fatal():
    assert not is_fatal("Invalid indicator summary: Upper.example")
