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
        self.assertCommandMatchesExactlyOneFormatString(self.action_alias_db.format_strings, "al ingest /q/x")


class SubmissionResultsAliasTest(BaseActionAliasTestCase):
    action_alias_name = "get_submission_results"

    def test_both_formats(self):
        self.assertExtractedParametersMatch("al results {{ sid }}", "al results 4aBcD", {"sid": "4aBcD"})
        self.assertExtractedParametersMatch("al submission {{ sid }}", "al submission 4aBcD", {"sid": "4aBcD"})
        self.assertCommandMatchesExactlyOneFormatString(self.action_alias_db.format_strings, "al results x1")


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
        self.assertCommandMatchesExactlyOneFormatString(self.action_alias_db.format_strings,
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
