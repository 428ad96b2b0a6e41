"""ThreatConnect batch actions end to end against the TC emulator."""
import logging

import pytest

from st2tests.base import BaseActionTestCase

from tc_batch_create import TcBatchCreateAction
from tc_batch_errors import TcBatchErrorsAction
from tc_batch_status import TcBatchStatusAction
from tc_batch_upload import TcBatchUploadAction
from tc_submit_indicators import TcSubmitIndicatorsAction
from tests.helpers import TC_OWNER as OWNER, TC_SECRET_KEY, TC_TOKEN, assert_no_secrets, pack_config


def host(n):
    return {"type": "Host", "summary": "evil{}.example.com".format(n), "rating": 3, "confidence": 60,
            "tag": [{"name": "Assemblyline"}]}


class TcActionCase(BaseActionTestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, tc, caplog):
        tc.configure(queued_polls=0, running_polls=0, batch_disabled=False, error_file_delay=0)
        tc.clear_faults()
        self.tc = tc
        self.caplog = caplog
        caplog.set_level(logging.DEBUG)

    def action(self, **threatconnect):
        return self.get_action_instance(pack_config(tc_url=self.tc.url, threatconnect=threatconnect))

    def tearDown(self):
        assert_no_secrets(*(r.getMessage() for r in self.caplog.records))
        super().tearDown()


class BatchStepsTest(TcActionCase):
    action_cls = TcBatchCreateAction

    def run_action(self, cls, **params):
        self.action_cls = cls
        return self.action().run(**params)

    def test_create_upload_status_errors(self):
        created = self.run_action(TcBatchCreateAction, attribute_write_type="Append", halt_on_error=False)
        assert created["config"] == {"version": "V2", "owner": OWNER, "action": "Create", "haltOnError": False,
                                     "attributeWriteType": "Append", "tagWriteType": "Append",
                                     "securityLabelWriteType": "Append"}
        batch_id = created["batch_id"]
        bad = {"type": "Address", "summary": "999.1.1.1"}
        uploaded = self.run_action(TcBatchUploadAction, batch_id=batch_id, indicators=[host(1), host(2), bad])
        assert uploaded == {"batch_id": batch_id, "status": "Queued", "items": 3,
                            "bytes": uploaded["bytes"]} and uploaded["bytes"] > 100
        status = self.run_action(TcBatchStatusAction, batch_id=batch_id, wait=True)
        assert status["status"] == "Completed" and status["completed"] is True
        assert status["success_count"] == 2 and status["error_count"] == 1
        assert status["success_indicator_count"] == 2
        errors = self.run_action(TcBatchErrorsAction, batch_id=batch_id)
        assert errors["error_count"] == 1 and errors["errors_not_listed"] == 0
        assert "999.1.1.1" in str(errors["errors"][0]["source"])
        assert set(self.tc.indicators(OWNER)) >= {"evil1.example.com", "evil2.example.com"}

    def test_status_without_wait_reports_the_current_state(self):
        self.tc.configure(queued_polls=5)
        batch_id = self.run_action(TcBatchCreateAction)["batch_id"]
        self.run_action(TcBatchUploadAction, batch_id=batch_id, indicators=[host(3)])
        status = self.run_action(TcBatchStatusAction, batch_id=batch_id)
        assert status["completed"] is False and status["status"] in ("Queued", "Running")

    def test_errors_of_a_clean_job_are_empty(self):
        batch_id = self.run_action(TcBatchCreateAction)["batch_id"]
        self.run_action(TcBatchUploadAction, batch_id=batch_id, indicators=[host(4)])
        self.run_action(TcBatchStatusAction, batch_id=batch_id, wait=True)
        assert self.run_action(TcBatchErrorsAction, batch_id=batch_id)["errors"] == []

    def test_upload_refuses_what_does_not_fit_one_job(self):
        self.action_cls = TcBatchUploadAction
        ok, result = self.action(batch_max_items=2).run(batch_id=1, indicators=[host(n) for n in range(3)])
        assert ok is False and result["error_type"] == "input"
        assert "3 items need 2 batch jobs" in result["error"] and "tc_submit_indicators" in result["error"]
        ok, result = self.action().run(batch_id=1)
        assert result["error"] == "nothing to upload: indicators and groups are empty"

    def test_invalid_batch_config_is_refused_before_sending(self):
        self.action_cls = TcBatchCreateAction
        self.tc.clear_log()
        ok, result = self.action().run(action="Update")
        assert ok is False and result["error"] == "BatchConfig field action must be one of Create, Delete"
        assert self.tc.request_log() == []

    def test_batch_api_disabled_is_reported_plainly(self):
        self.tc.configure(batch_disabled=True)
        self.action_cls = TcBatchCreateAction
        ok, result = self.action().run()
        assert ok is False and result["status"] == 503
        assert "Batch job api is not available" in result["error"]

    def test_unknown_batch_is_an_error_with_its_status(self):
        self.action_cls = TcBatchStatusAction
        ok, result = self.action().run(batch_id=999999)
        assert ok is False and result["status"] in (400, 404) and "999999" in result["error"]


class SubmitIndicatorsTest(TcActionCase):
    action_cls = TcSubmitIndicatorsAction

    def test_every_batch_config_override_reaches_the_job(self):
        result = self.action().run(indicators=[host(90)], owner=OWNER, halt_on_error=True,
                                   attribute_write_type="Replace", tag_write_type="Replace",
                                   security_label_write_type="Replace", file_merge_mode="Distribute",
                                   hash_collision_mode="Split")
        config = [job for job in self.tc.jobs() if job["id"] == result["jobs"][0]["batch_id"]][0]["config"]
        assert {k: config[k] for k in ("owner", "haltOnError", "attributeWriteType", "tagWriteType",
                                       "securityLabelWriteType", "fileMergeMode", "hashCollisionMode")} == {
            "owner": OWNER, "haltOnError": True, "attributeWriteType": "Replace", "tagWriteType": "Replace",
            "securityLabelWriteType": "Replace", "fileMergeMode": "Distribute", "hashCollisionMode": "Split"}

    def test_a_bad_override_is_refused_before_sending(self):
        before = len(self.tc.jobs())
        ok, result = self.action().run(indicators=[host(91)], file_merge_mode="Sometimes")
        assert ok is False and result["error_type"] == "input" and "fileMergeMode" in result["error"]
        assert len(self.tc.jobs()) == before

    def test_chunks_runs_and_summarises(self):
        group = {"type": "Report", "name": "AL submission s1", "xid": "al:s1", "fileName": "a.exe"}
        indicators = [dict(host(n), associatedGroups=[{"groupXid": "al:s1"}]) for n in range(10, 25)]
        indicators.append({"type": "EmailAddress", "summary": "not-an-email"})
        result = self.action(batch_max_items=4).run(indicators=indicators, groups=[group], max_errors=5)
        assert result["totals"] == {"items": 17, "success": 16, "error": 1, "unprocessed": 0, "rejected": 0,
                                    "not_submitted": 0}
        assert [job["items"] for job in result["jobs"]] == [4, 4, 4, 4, 1]
        assert len(result["errors"]) == 1 and result["errors_not_listed"] == 0
        assert self.tc.groups(OWNER)["al:s1"]["name"] == "AL submission s1"
        assert all("al:s1" in str(self.tc.indicators(OWNER)["evil{}.example.com".format(n)])
                   for n in range(10, 25))

    def test_error_list_is_bounded_but_counted(self):
        bad = [{"type": "Address", "summary": "300.0.0.{}".format(n)} for n in range(30)]
        result = self.action().run(indicators=bad, max_errors=3)
        assert result["totals"]["error"] == 30
        assert len(result["errors"]) == 3 and result["errors_not_listed"] == 27

    def test_halt_on_error_stops_with_the_rest_unprocessed(self):
        items = [host(30), {"type": "Address", "summary": "1.2.3"}, host(31), host(32)]
        result = self.action().run(indicators=items, halt_on_error=True)
        assert result["stopped"]["reason"] == "halt_on_error"
        assert result["totals"]["error"] == 1 and result["totals"]["unprocessed"] == 2

    def test_delete_removes_matches(self):
        self.action().run(indicators=[host(40), host(41)])
        assert "evil40.example.com" in self.tc.indicators(OWNER)
        result = self.action().run(indicators=[host(40)], action="Delete")
        assert result["action"] == "Delete" and result["totals"]["success"] == 1
        assert "evil40.example.com" not in self.tc.indicators(OWNER)
        assert "evil41.example.com" in self.tc.indicators(OWNER)

    def test_token_auth_works_too(self):
        config = pack_config(tc_url=self.tc.url)
        config["threatconnect"] = {"api_url": self.tc.url, "owner": OWNER, "api_token": TC_TOKEN}
        result = self.get_action_instance(config).run(indicators=[host(50)])
        assert result["totals"]["success"] == 1

    def test_wrong_secret_is_a_401_without_secrets(self):
        config = pack_config(tc_url=self.tc.url)
        config["threatconnect"]["secret_key"] = TC_SECRET_KEY + "-wrong"
        ok, result = self.get_action_instance(config).run(indicators=[host(51)])
        assert ok is False and result["status"] == 401
        assert_no_secrets(result)
        assert TC_SECRET_KEY + "-wrong" not in str(result)

    def test_failure_midway_reports_what_was_accepted(self):
        second_job = max([job["id"] for job in self.tc.jobs()] + [1000]) + 2
        # an upload failing on every resend (the job stays Created) stops the submission
        self.tc.fail_next(500, count=10, method="POST", path=r"^/api/v2/batch/{}$".format(second_job))
        ok, result = self.action(batch_max_items=2).run(indicators=[host(n) for n in range(60, 64)])
        assert ok is False and result["status"] == 500 and "upload batch {}".format(second_job) in result["error"]
        partial = result["partial"]
        assert [job["status"] for job in partial["jobs"]] == ["Completed", "Created"]
        assert partial["totals"]["success"] == 2
