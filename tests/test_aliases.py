"""Every chatops format, pinned."""
import os

import jinja2
import yaml

from st2tests.base import BaseActionAliasTestCase

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def render_result(alias_file, status, result):
    meta = yaml.safe_load(open(os.path.join(PACK_DIR, "aliases", alias_file)))
    template = jinja2.Environment().from_string(meta["result"]["format"])
    return template.render(execution={"status": status, "result": {"result": result}})


class IngestFileAliasTest(BaseActionAliasTestCase):
    action_alias_name = "ingest_file"
    fmt = "al ingest {{ path }}( priority {{ priority }})?"

    def test_path_only(self):
        self.assertExtractedParametersMatch(self.fmt, "al ingest /var/quarantine/a.exe",
                                            {"path": "/var/quarantine/a.exe", "priority": None})

    def test_path_with_priority_and_quotes(self):
        self.assertExtractedParametersMatch(self.fmt, 'al ingest "/var/quarantine/a b.exe" priority 200',
                                            {"path": "/var/quarantine/a b.exe", "priority": "200"})

    def test_extra_key_value_pairs(self):
        self.assertExtractedParametersMatch(self.fmt, "al ingest /q/a.exe deep_scan=true",
                                            {"path": "/q/a.exe", "priority": None, "deep_scan": "true"})

    def test_exactly_one_format_matches(self):
        self.assertCommandMatchesExactlyOneFormatString(self.action_alias_db.get_format_strings(), "al ingest /q/x")


class SubmissionResultsAliasTest(BaseActionAliasTestCase):
    action_alias_name = "get_submission_results"

    def test_both_formats(self):
        self.assertExtractedParametersMatch("al results {{ sid }}", "al results 4aBcD", {"sid": "4aBcD"})
        self.assertExtractedParametersMatch("al submission {{ sid }}", "al submission 4aBcD", {"sid": "4aBcD"})
        self.assertCommandMatchesExactlyOneFormatString(self.action_alias_db.get_format_strings(), "al results x1")


class CheckConfigAliasTest(BaseActionAliasTestCase):
    action_alias_name = "check_config"

    def test_format(self):
        self.assertExtractedParametersMatch("al check config", "al check config", {})


def test_result_formats_render_success_and_failure():
    text = render_result("get_submission_results.yaml", "succeeded", {
        "sid": "s1", "al_url": "https://al/submission/s1", "state": "completed", "partial": False,
        "max_score": 1000, "verdict": "malicious", "files": [{}], "truncated": {"tags": 0},
        "tags": [{"group": "ioc", "safelisted": False, "type": "network.static.domain", "value": "evil.com",
                  "h_type": "malicious"},
                 {"group": "ioc", "safelisted": True, "type": "network.static.ip", "value": "10.0.0.1",
                  "h_type": "info"}]})
    assert "verdict *malicious*, 1 file(s), 2 tag(s)" in text
    assert "network.static.domain `evil.com` (malicious)" in text and "10.0.0.1" not in text
    assert render_result("ingest_file.yaml", "failed", {"error": "Refused '/x': no such file"}) == \
        "Ingest failed: Refused '/x': no such file"
    ok = render_result("check_config.yaml", "succeeded", {"threatconnect_auth": "token", "settings": {
        "assemblyline": {"url": "https://al", "user": "st2"},
        "threatconnect": {"api_url": "https://tc/api", "owner": "Org"}}})
    assert ok == "Configuration is valid: Assemblyline https://al as st2, ThreatConnect https://tc/api " \
                 "(token auth, owner Org)."


class BuildIndicatorsAliasTest(BaseActionAliasTestCase):
    action_alias_name = "build_indicators"

    def test_format(self):
        self.assertExtractedParametersMatch("al indicators {{ sid }}", "al indicators 4aBcD", {"sid": "4aBcD"})
        self.assertCommandMatchesExactlyOneFormatString(self.action_alias_db.get_format_strings(),
                                                        "al indicators 4aBcD")


def test_build_indicators_result_format():
    counts = {"Host": 1, "Address": 0, "URL": 1, "EmailAddress": 0, "File": 1, "safelisted": 2,
              "below_h_type": 3, "private": 1}
    text = render_result("build_indicators.yaml", "succeeded", {
        "sid": "s1", "group_xid": "x:report:s1:abc", "counts": counts, "overflow": 0,
        "rejected": [{"value": "bad..host", "reason": "invalid_host"}],
        "warnings": ["submission results are partial; re-run when complete"],
        "indicators": [{"type": "Host", "summary": "evil.com", "rating": 4, "confidence": 80},
                       {"type": "URL", "summary": "http://evil.com/x", "rating": 3, "confidence": 60},
                       {"type": "File", "summary": "a : b", "rating": 4, "confidence": 80}]})
    assert text.startswith("Submission s1 would send 3 indicator(s) to group `x:report:s1:abc`: "
                           "1 Host, 0 Address, 1 URL, 0 EmailAddress, 1 File. Left out: 2 safelisted, "
                           "3 below threshold, 1 private, 1 invalid.")
    assert "• Host `evil.com` (rating 4, confidence 80)" in text
    assert "⚠ submission results are partial" in text
    assert render_result("build_indicators.yaml", "failed", {"error": "sid must be an Assemblyline submission ID"}) \
        == "Building indicators failed: sid must be an Assemblyline submission ID"


def render_workflow_result(alias_file, status, output, parameters, errors=None):
    """Orquesta executions carry {"output": ..., "errors": [...]} as their result."""
    meta = yaml.safe_load(open(os.path.join(PACK_DIR, "aliases", alias_file)))
    template = jinja2.Environment().from_string(meta["result"]["format"])
    result = {"output": output}
    if errors is not None:
        result["errors"] = errors
    return template.render(execution={"status": status, "result": result, "parameters": parameters})


class _AliasLoader(BaseActionAliasTestCase):
    """Defined here so the pack path is found from this file, as st2tests does; has no tests."""


def all_format_strings():
    """Every alias's format strings, loaded the way the alias test case loads one (real st2 or stand-in)."""
    strings = []
    for file_name in sorted(os.listdir(os.path.join(PACK_DIR, "aliases"))):
        case = _AliasLoader()
        case.action_alias_name = yaml.safe_load(open(os.path.join(PACK_DIR, "aliases", file_name)))["name"]
        case.setUp()
        strings.extend(case.action_alias_db.get_format_strings())
    return strings


class SubmissionToThreatConnectAliasTest(BaseActionAliasTestCase):
    action_alias_name = "submission_to_threatconnect"

    def test_formats(self):
        for fmt, command in (("al send {{ sid }} to threatconnect", "al send 4aBcD to threatconnect"),
                             ("al send {{ sid }} to tc", "al send 4aBcD to tc")):
            self.assertExtractedParametersMatch(fmt, command, {"sid": "4aBcD"})
            self.assertCommandMatchesExactlyOneFormatString(self.action_alias_db.get_format_strings(), command)

    def test_extra_parameters_pass_through(self):
        self.assertExtractedParametersMatch("al send {{ sid }} to tc", "al send 4aBcD to tc max_polls=5",
                                            {"sid": "4aBcD", "max_polls": "5"})


class IngestToThreatConnectAliasTest(BaseActionAliasTestCase):
    action_alias_name = "ingest_to_threatconnect"

    def test_formats(self):
        self.assertExtractedParametersMatch("al bulk {{ directory }} to threatconnect",
                                            "al bulk /var/quarantine/today to threatconnect",
                                            {"directory": "/var/quarantine/today"})
        self.assertExtractedParametersMatch("al bulk {{ directory }} to tc", 'al bulk "/q/with space" to tc force=true',
                                            {"directory": "/q/with space", "force": "true"})


class TcBatchStatusAliasTest(BaseActionAliasTestCase):
    action_alias_name = "tc_batch_status"

    def test_format(self):
        self.assertExtractedParametersMatch("al tc batch {{ batch_id }}", "al tc batch 1234", {"batch_id": "1234"})


def test_each_command_matches_one_format_across_all_aliases():
    # chatops picks the alias whose format matches; two matches is an error for the user
    parser_case = BaseActionAliasTestCase()
    formats = all_format_strings()
    for command in ("al send 4aBcD to threatconnect", "al send 4aBcD to tc", "al bulk /q to threatconnect",
                    "al tc batch 12", "al ingest /q/a.exe", "al results 4aBcD", "al indicators 4aBcD",
                    "al check config"):
        parser_case.assertCommandMatchesExactlyOneFormatString(formats, command)


SUBMISSION_OUTPUT = {
    "sid": "4aBcD", "al_url": "https://al.example/submission/4aBcD", "verdict": "malicious", "score": 1000,
    "indicator_count": 3, "counts_by_type": {"URL": 1, "Host": 2}, "batch_ids": [41],
    "rejected_count": 2, "rejected_by_reason": {"private": 1, "invalid_host": 1},
    "tc_error_count": 1, "tc_errors": [{"source": "evil.example", "reason": "Indicator is on an exclusion list",
                                        "batch_id": 41}], "failure": None}


def test_submission_to_threatconnect_result_formats():
    text = render_workflow_result("submission_to_threatconnect.yaml", "succeeded", SUBMISSION_OUTPUT,
                                  {"sid": "4aBcD"})
    assert text.splitlines() == [
        "Submission <https://al.example/submission/4aBcD|4aBcD> (malicious, score 1000): 3 indicator(s) in "
        "ThreatConnect, batch 41 (2 Host, 1 URL).",
        "Rejected 2: 1 invalid_host, 1 private.",
        "ThreatConnect refused 1:",
        "• evil.example: Indicator is on an exclusion list"]
    clean = dict(SUBMISSION_OUTPUT, rejected_count=0, tc_error_count=0, tc_errors=[])
    assert render_workflow_result("submission_to_threatconnect.yaml", "succeeded", clean, {"sid": "4aBcD"}) == \
        "Submission <https://al.example/submission/4aBcD|4aBcD> (malicious, score 1000): 3 indicator(s) in " \
        "ThreatConnect, batch 41 (2 Host, 1 URL)."
    failed = render_workflow_result("submission_to_threatconnect.yaml", "failed",
                                    dict(SUBMISSION_OUTPUT, failure="send failed: unknown submission 4aBcD"),
                                    {"sid": "4aBcD"})
    assert failed == "Sending `4aBcD` to ThreatConnect failed: send failed: unknown submission 4aBcD"
    # a workflow that failed before rendering its output still says why
    bare = render_workflow_result("submission_to_threatconnect.yaml", "failed", None, {"sid": "4aBcD"},
                                  errors=[{"message": "Execution timed out."}])
    assert bare == "Sending `4aBcD` to ThreatConnect failed: Execution timed out."
    assert render_workflow_result("submission_to_threatconnect.yaml", "failed", None, {"sid": "x"}) == \
        "Sending `x` to ThreatConnect failed: see the execution"


def test_ingest_to_threatconnect_result_formats():
    output = {"ingest_counts": {"ingested": 4, "skipped": 2, "failed": 1, "seen": 7},
              "skipped_by_reason": {"too_large": 1, "duplicate": 1},
              "analysis_counts": {"completed": 3, "failed": 0, "overdue": 1},
              "indicator_count": 12, "counts_by_type": {"Host": 10, "File": 2}, "batch_ids": [7, 8],
              "rejected_count": 1, "tc_error_count": 0, "failure": None}
    text = render_workflow_result("ingest_to_threatconnect.yaml", "succeeded", output, {"directory": "/q"})
    assert text.splitlines() == [
        "Ingested 4 file(s), skipped 2 (1 duplicate, 1 too_large), 1 failed to upload. "
        "Analyses: 3 completed, 0 failed, 1 overdue.",
        "ThreatConnect: 12 indicator(s) in 2 batch job(s) 7, 8 (2 File, 10 Host); 1 rejected."]
    failed = render_workflow_result("ingest_to_threatconnect.yaml", "failed",
                                    dict(output, failure="ingest failed: Refused '/etc': not under allowed roots"),
                                    {"directory": "/etc"})
    assert failed == "Bulk ingest of `/etc` failed: ingest failed: Refused '/etc': not under allowed roots"


def test_tc_batch_status_result_formats():
    done = render_result("tc_batch_status.yaml", "succeeded", {
        "batch_id": 41, "status": "Completed", "completed": True, "success_count": 9, "error_count": 1,
        "unprocessed_count": 0})
    assert done == "ThreatConnect batch 41: Completed, 9 saved, 1 refused, 0 unprocessed."
    running = render_result("tc_batch_status.yaml", "succeeded", {"batch_id": 41, "status": "Running",
                                                                   "completed": False})
    assert running == "ThreatConnect batch 41: Running (not finished; ask again later)."
    assert render_result("tc_batch_status.yaml", "failed", {"error": "ThreatConnect batch 99 not found"}) == \
        "Batch status failed: ThreatConnect batch 99 not found"


class DeadLettersAliasTest(BaseActionAliasTestCase):
    action_alias_name = "list_dead_letters"

    def test_format(self):
        self.assertExtractedParametersMatch("al dead letters", "al dead letters", {})
        self.assertCommandMatchesExactlyOneFormatString(self.action_alias_db.get_format_strings(), "al dead letters")


def test_dead_letters_result_format_renders_each_case():
    none = render_result("list_dead_letters.yaml", "succeeded", {"count": 0, "not_listed": 0, "dead_letters": []})
    assert none == "No dead letters: every notification became a trigger."
    some = render_result("list_dead_letters.yaml", "succeeded", {"count": 3, "not_listed": 1, "dead_letters": [
        {"ingest_id": "i1", "reason": "malformed: score is not a finite number (nan)"},
        {"ingest_id": None, "reason": "malformed: message is a str, not an object"}]})
    assert some.splitlines() == ["3 dead letter(s) (1 not listed):",
                                 "- i1: malformed: score is not a finite number (nan)",
                                 "- no ingest_id: malformed: message is a str, not an object"]
    failed = render_result("list_dead_letters.yaml", "failed", {"error": "list_dead_letters: unknown parameter x"})
    assert failed == "list_dead_letters: unknown parameter x"
