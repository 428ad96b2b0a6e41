"""build_indicators end to end: AL emulator -> action -> TC emulator accepts every item."""
import hashlib
import json

import jsonschema
import pytest
import yaml

from st2tests.base import BaseActionTestCase

from build_indicators import BuildIndicatorsAction
from get_submission_results import GetSubmissionResultsAction
from ingest_file import IngestFileAction
from lib.threatconnect import ThreatConnectClient
from lib.config import load_config
from lib.tc_submit import submit
from tests.helpers import TC_OWNER as OWNER, assert_no_secrets, pack_config
from tests.conftest import PACK_DIR

SAMPLE = (b"MZ\x90\x00 dropper\nGET http://evil-c2.top/gate.php?id=1 HTTP/1.1\n"
          b"Host: evil-c2.top\nbeacon 185.220.101.47 and 10.1.2.3\nmail ops@bad-actor.ru\n"
          b"FAMILY=EMOTET\nupdate via windowsupdate.com\n")


def output_schema():
    with open("{}/actions/build_indicators.yaml".format(PACK_DIR), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["output_schema"]


class BuildIndicatorsActionTest(BaseActionTestCase):
    action_cls = BuildIndicatorsAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, tc, tmp_path, caplog):
        al = emulator
        al.reset(knobs=True)
        self.al, self.tc, self.caplog = al, tc, caplog
        self.drop = tmp_path / "quarantine"
        self.drop.mkdir()
        self.config = pack_config(al_url=al.url, tc_url=tc.url, roots=[str(self.drop)],
                                  assemblyline={"ui_url": "https://al.example.org"})

    def tearDown(self):
        assert_no_secrets(*(r.getMessage() for r in self.caplog.records))
        super().tearDown()

    def analysed_sid(self, content=SAMPLE, name="dropper.exe"):
        path = self.drop / name
        path.write_bytes(content)
        ingested = IngestFileAction(config=self.config, action_service=self.action_service).run(
            path=str(path))
        self.al.complete_all()
        return [i for i in self.al.ingests() if i["ingest_id"] == ingested["ingest_id"]][0]["sid"]

    def test_sid_to_indicators_that_threatconnect_accepts(self):
        sid = self.analysed_sid()
        built = self.get_action_instance(self.config).run(sid=sid)
        jsonschema.validate(built, output_schema())
        by_type = {}
        for indicator in built["indicators"]:
            by_type.setdefault(indicator["type"], []).append(indicator["summary"])
        assert by_type["Host"] == ["bad-actor.ru", "evil-c2.top"]
        assert by_type["URL"] == ["http://evil-c2.top/gate.php?id=1"]
        assert by_type["EmailAddress"] == ["ops@bad-actor.ru"]
        assert by_type["Address"] == ["185.220.101.47"]  # 10.1.2.3 is safelisted and private
        file_summary = " : ".join((hashlib.md5(SAMPLE).hexdigest(), hashlib.sha1(SAMPLE).hexdigest(),
                                   hashlib.sha256(SAMPLE).hexdigest()))
        assert by_type["File"] == [file_summary]
        assert "windowsupdate.com" not in json.dumps(built["indicators"])
        assert built["counts"]["safelisted"] >= 1
        group = built["groups"][0]
        assert group["xid"] == built["group_xid"] and group["type"] == "Report" and sid in group["xid"]
        for indicator in built["indicators"]:
            assert indicator["associatedGroups"] == [{"groupXid": group["xid"]}]
            names = [t["name"] for t in indicator["tag"]]
            assert names[0] == "Assemblyline" and "EMOTET" in names
            assert "https://al.example.org/submission/" + sid in indicator["attribute"][0]["value"]

        client = ThreatConnectClient.from_config(load_config(self.config))
        aggregate = submit(client, built["indicators"], built["groups"])
        assert aggregate["totals"]["error"] == 0 and aggregate["totals"]["rejected"] == 0
        assert aggregate["totals"]["success"] == len(built["indicators"]) + 1
        stored = self.tc.indicators(OWNER)
        assert stored["evil-c2.top"]["associatedGroups"] == [group["xid"]]
        assert stored[file_summary.upper()]["hashes"]["sha256"] == hashlib.sha256(SAMPLE).hexdigest().upper()
        assert group["xid"] in self.tc.groups(OWNER)

        # Re-running the same analysis updates in place: nothing duplicated.
        before = self.tc.counts(OWNER)
        again = self.get_action_instance(self.config).run(sid=sid)
        assert again == built
        submit(client, again["indicators"], again["groups"])
        after = self.tc.counts(OWNER)
        assert after == before
        assert len(self.tc.indicators(OWNER)["evil-c2.top"]["attributes"]) == 1

    def test_each_extracted_file_is_rated_by_its_own_score(self):
        """A benign file inside a malicious archive is not a rated, family-tagged File."""
        import base64
        benign = b"quarterly numbers, nothing to see\n"
        evil = b"second stage http://evil-stage.top/x\nFAMILY=TRICKBOT\n"
        archive = b"FAMILY=EMOTET\n" + b"".join(
            b"EXTRACT:%s:%s\n" % (name, base64.b64encode(body)) for name, body in
            ((b"notes.txt", benign), (b"stage2.bin", evil)))
        sid = self.analysed_sid(archive, "bundle.bin")
        config = dict(self.config, mapping={"include_extracted_files": True})
        results = GetSubmissionResultsAction(config=config, action_service=self.action_service).run(sid=sid)
        scores = {f["name"]: f["score"] for f in results["files"]}
        assert scores["notes.txt"] < 300 <= scores["stage2.bin"] and scores["bundle.bin"] >= 1000
        built = self.get_action_instance(config).run(sid=sid)
        files = {i["sha256"] for i in built["indicators"] if i["type"] == "File"}
        assert hashlib.sha256(benign).hexdigest() not in files
        assert hashlib.sha256(evil).hexdigest() in files and hashlib.sha256(archive).hexdigest() in files
        assert built["counts"]["file_below_min_score"] == 1

    def test_results_parameter_gives_the_same_as_sid(self):
        sid = self.analysed_sid()
        fetched = GetSubmissionResultsAction(config=self.config,
                                             action_service=self.action_service).run(sid=sid)
        from_results = self.get_action_instance(self.config).run(results=fetched)
        assert from_results == self.get_action_instance(self.config).run(sid=sid)

    def test_running_submission_is_built_with_a_warning(self):
        path = self.drop / "slow.exe"
        path.write_bytes(SAMPLE)
        self.al.set(analysis_delay=3600)
        ingested = IngestFileAction(config=self.config, action_service=self.action_service).run(
            path=str(path))
        sid = [i for i in self.al.ingests() if i["ingest_id"] == ingested["ingest_id"]][0]["sid"]
        built = self.get_action_instance(self.config).run(sid=sid)
        assert any("partial" in warning for warning in built["warnings"])

    def test_unknown_sid_is_a_404(self):
        ok, result = self.get_action_instance(self.config).run(sid="doesNotExist1234")
        assert ok is False and result["status"] == 404 and result["error_type"] == "assemblyline"
        jsonschema.validate(result, output_schema())

    def test_bad_mapping_config_names_the_key(self):
        config = dict(self.config, mapping={"rating_table": {"evil": {"rating": 9}}})
        ok, result = self.get_action_instance(config).run(results={"sid": "abc", "tags": []})
        assert ok is False and result["error_type"] == "config"
        assert "mapping.rating_table" in result["error"]


@pytest.mark.parametrize("params, message", [
    ({}, "give exactly one of 'sid'"),
    ({"sid": "abc", "results": {"sid": "abc"}}, "give exactly one of 'sid'"),
    ({"results": {"error": "Assemblyline error (HTTP 404): gone", "error_type": "assemblyline"}},
     "'results' is a failed action's result"),
    ({"results": {"sid": "abc", "tags": "not a list"}}, "'tags' must be a list"),
    ({"results": {"tags": []}}, "'sid' must be an Assemblyline submission id"),
    ({"sid": "../etc"}, "sid must be an Assemblyline submission ID"),
    ({"sid": "  "}, "sid must be an Assemblyline submission ID"),
])
def test_bad_input_is_a_clear_failure(params, message):
    config = pack_config()
    ok, result = BuildIndicatorsAction(config=config).run(**params)
    assert ok is False and result["error_type"] == "input"
    assert message in result["error"]



def test_unknown_and_missing_parameters_are_named_for_every_action():
    from ingest_file import IngestFileAction as Ingest
    ok, result = BuildIndicatorsAction(config=pack_config()).run(sid="abc", colour="red")
    assert ok is False and result["error_type"] == "input"
    assert result["error"].startswith("build_indicators: unknown parameter colour (known: max_tags, results, sid)")
    ok, result = Ingest(config=pack_config()).run()
    assert ok is False and result["error"] == "ingest_file: missing required parameter path"
