"""check_config: both services' connectivity and credentials, each failure naming its settings."""
import socket

import pytest

from check_config import CheckConfigAction
from st2tests.base import BaseActionTestCase
from tests.helpers import TC_OWNER, TC_TOKEN, assert_no_secrets, pack_config

AL_CREDENTIALS = ["assemblyline.user", "assemblyline.api_key"]
TC_HMAC = ["threatconnect.access_id", "threatconnect.secret_key"]


def closed_port_url(path=""):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return "http://127.0.0.1:{}{}".format(probe.getsockname()[1], path)


TOKEN_AUTH = {"api_token": TC_TOKEN, "access_id": None, "secret_key": None}


class CheckConfigConnectionsTest(BaseActionTestCase):
    action_cls = CheckConfigAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, tc):
        emulator.set(delay=0)
        self.al, self.tc = emulator, tc

    def run_check(self, al_url=None, tc_url=None, assemblyline=None, threatconnect=None):
        config = pack_config(al_url=al_url or self.al.url, tc_url=tc_url or self.tc.url,
                             assemblyline=dict({"retries": 1, "timeout": 2}, **(assemblyline or {})),
                             threatconnect=dict({"retries": 0, "timeout": 2}, **(threatconnect or {})))
        outcome = self.get_action_instance(config).run()
        assert_no_secrets(outcome)
        return outcome

    def failed(self, **kwargs):
        ok, result = self.run_check(**kwargs)
        assert ok is False and result["error_type"] == "connection" and result["valid"] is True
        return result

    def test_both_services_pass_in_both_tc_auth_modes(self):
        for threatconnect in ({}, TOKEN_AUTH):
            result = self.run_check(threatconnect=threatconnect)
            assert result["connections"] == {
                "assemblyline": {"ok": True, "url": self.al.url, "user": "st2"},
                "threatconnect": {"ok": True, "url": self.tc.url, "owner": TC_OWNER}}
        assert any(e["path"] == "/api/v2/owners" and e["auth"] == "token" and e["status"] == 200
                   for e in self.tc.request_log())

    def test_wrong_al_api_key_or_user_names_them_and_tc_is_still_checked(self):
        for wrong in ({"api_key": "st2key:al-wrong-LEAKCHECK"}, {"user": "nobody"}):
            result = self.failed(assemblyline=wrong)
            check = result["connections"]["assemblyline"]
            assert check["settings"] == AL_CREDENTIALS and "Invalid user or APIKey" in check["error"]
            assert result["error"].startswith("check assemblyline.user / assemblyline.api_key: ")
            assert result["connections"]["threatconnect"]["ok"] is True
            assert result["transient"] is False

    def test_wrong_tc_secret_or_access_id_names_them(self):
        for wrong, words in (({"secret_key": "tc-wrong-LEAKCHECK"}, "Signature data did not match"),
                             ({"access_id": "99999999999999999999"}, "Access Denied")):
            check = self.failed(threatconnect=wrong)["connections"]["threatconnect"]
            assert check["settings"] == TC_HMAC and words in check["error"]
            assert "check threatconnect.access_id / threatconnect.secret_key: " in check["error"]

    def test_wrong_tc_token_names_the_token_setting(self):
        check = self.failed(threatconnect=dict(TOKEN_AUTH, api_token="tc-wrong-LEAKCHECK")
                            )["connections"]["threatconnect"]
        assert check["settings"] == ["threatconnect.api_token"] and "HTTP 401" in check["error"]

    def test_wrong_tc_owner_names_the_owner_and_what_is_accessible(self):
        result = self.failed(threatconnect={"owner": "Nobody Org"})
        check = result["connections"]["threatconnect"]
        assert check["settings"] == ["threatconnect.owner"]
        assert check["error"] == ("check threatconnect.owner: threatconnect.owner 'Nobody Org' is not "
                                  "among the owners this API user can access (Example Org)")
        assert result["connections"]["assemblyline"]["ok"] is True

    def test_unreachable_urls_name_the_url_settings_of_both(self):
        result = self.failed(al_url=closed_port_url(), tc_url=closed_port_url("/api"))
        checks = result["connections"]
        assert checks["assemblyline"]["settings"] == ["assemblyline.url"]
        assert checks["threatconnect"]["settings"] == ["threatconnect.api_url"]
        assert "cannot reach ThreatConnect" in checks["threatconnect"]["error"]
        assert "check assemblyline.url: " in result["error"] and "check threatconnect.api_url: " in result["error"]
        assert result["transient"] is True  # unreachable may be temporary

    def test_a_tc_url_that_is_not_threatconnect_names_api_url(self):
        check = self.failed(tc_url=self.al.url + "/api")["connections"]["threatconnect"]  # AL answers
        assert check["settings"] == ["threatconnect.api_url"] and "HTTP 404" in check["error"]

    def test_an_al_that_does_not_answer_in_time_names_url_and_timeout(self):
        self.al.set(delay=1.5)
        check = self.failed(assemblyline={"timeout": 1})["connections"]["assemblyline"]
        assert check["settings"] == ["assemblyline.url", "assemblyline.timeout"]
        assert "no answer within 1 s" in check["error"]

    def test_both_failures_are_reported_at_once(self):
        result = self.failed(assemblyline={"api_key": "st2key:al-wrong-LEAKCHECK"},
                             threatconnect={"owner": "Nobody Org"})
        assert result["error"].count("check ") == 2
        assert "assemblyline.api_key" in result["error"] and "threatconnect.owner" in result["error"]

    def test_without_connection_checks_nothing_is_contacted(self):
        self.tc.clear_log()
        result = self.get_action_instance(pack_config(al_url=closed_port_url(), tc_url=closed_port_url("/api"))
                                          ).run(check_connections=False)
        assert result["valid"] is True and "connections" not in result
