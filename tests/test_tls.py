"""TLS against HTTPS variants of both emulators, with a self-signed certificate made here.

Verification is on by default and refuses the certificate with a message naming
the settings; ``ca_bundle`` set to the certificate works; ``verify_tls: false``
works and warns once per client. Each runs with the CA-bundle environment
variables unset and set (``requests`` lets them override a session's
``verify``; the pack's settings must win).
"""
import logging
import warnings

import certifi
import pytest
import requests
from urllib3.exceptions import InsecureRequestWarning

from check_config import CheckConfigAction
from lib.assemblyline import AssemblylineService, quote_query_value
from lib.config import load_config
from lib.errors import AssemblylineError, ThreatConnectError
from lib.tc_submit import submit
from lib.threatconnect import ThreatConnectClient
from st2tests.base import BaseActionTestCase
from tc_submit_indicators import TcSubmitIndicatorsAction
from tests.emulators.assemblyline import AssemblylineEmulator
from tests.emulators.threatconnect import ThreatConnectEmulator
from tests.emulators.tls import make_certificate, server_context
from tests.helpers import (AL_APIKEY, AL_USER, TC_ACCESS_ID, TC_OWNER, TC_SECRET_KEY, TC_TOKEN,
                           assert_no_secrets, pack_config)

CA_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="module")
def https_al(certificate):
    with AssemblylineEmulator(user=AL_USER, apikey=AL_APIKEY, analysis_delay=None,
                              tls=server_context(certificate)) as emu:
        yield emu


@pytest.fixture(scope="module")
def https_tc(certificate):
    with ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY, token=TC_TOKEN,
                               owners=[TC_OWNER], queued_polls=0, running_polls=0,
                               tls=server_context(certificate)) as emu:
        yield emu


def set_ca_env(monkeypatch, present):
    for name in CA_ENV:
        if present:
            monkeypatch.setenv(name, certifi.where())  # a real bundle without our certificate
        else:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["ca-env-unset", "ca-env-set"])
def ca_env(request, monkeypatch):
    set_ca_env(monkeypatch, request.param == "ca-env-set")


@pytest.fixture
def ca_env_set(monkeypatch):
    set_ca_env(monkeypatch, True)


def al_settings(emu, **extra):
    return load_config(pack_config(al_url=emu.url, assemblyline=dict({"retries": 1}, **extra)))["assemblyline"]


def tc_settings(emu, **extra):
    return load_config(pack_config(tc_url=emu.url, threatconnect=extra))["threatconnect"]


def hosts(count):
    return [{"type": "Host", "summary": "tls{}.bad.example".format(i), "rating": 3, "confidence": 60}
            for i in range(count)]


def tls_warnings(caplog, logger):
    return [r for r in caplog.records if r.name == logger and "verification is off" in r.getMessage()]


# ------------------------------------------------------------------ Assemblyline

def test_al_refuses_a_self_signed_server_by_default(https_al, ca_env):
    service = AssemblylineService(al_settings(https_al))
    with pytest.raises(AssemblylineError) as refused:
        service.client  # noqa: B018 (logs in)
    text = str(refused.value)
    assert "login failed: TLS with {} failed: certificate verify failed".format(https_al.url) in text
    assert "assemblyline.ca_bundle" in text and "assemblyline.verify_tls" in text
    assert "Traceback" not in text and "HTTPSConnectionPool" not in text
    assert_no_secrets(text, refused.value.to_result())


def test_al_with_the_ca_bundle_logs_in_and_searches(https_al, certificate, ca_env):
    service = AssemblylineService(al_settings(https_al, ca_bundle=certificate.cert))
    assert service.search_submissions("metadata.ingest_id:" + quote_query_value("none"), fl="sid") == []


def test_al_without_verification_works_and_warns_once(https_al, ca_env, caplog):
    caplog.set_level(logging.WARNING)
    service = AssemblylineService(al_settings(https_al, verify_tls=False))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            assert service.search_submissions("metadata.ingest_id:" + quote_query_value("x"), fl="sid") == []
        service.reset()  # a fresh login on the same service: no second warning
        service.search_submissions("metadata.ingest_id:" + quote_query_value("y"), fl="sid")
    assert len(tls_warnings(caplog, "lib.assemblyline")) == 1
    assert not [w for w in seen if issubclass(w.category, InsecureRequestWarning)]


# ----------------------------------------------------------------- ThreatConnect

@pytest.mark.parametrize("auth", ["hmac", "token"])
def test_tc_refuses_a_self_signed_server_by_default(https_tc, ca_env, auth):
    extra = {"api_token": TC_TOKEN, "access_id": None, "secret_key": None} if auth == "token" else {}
    client = ThreatConnectClient(tc_settings(https_tc, **extra))
    with pytest.raises(ThreatConnectError) as refused:
        client.indicator_types()
    text = str(refused.value)
    assert "TLS error (check threatconnect.verify_tls / ca_bundle)" in text and refused.value.status is None
    assert "Traceback" not in text and "HTTPSConnectionPool" not in text
    assert_no_secrets(text, refused.value.to_result())


def test_tc_with_the_ca_bundle_reads_and_submits(https_tc, certificate, ca_env):
    client = ThreatConnectClient(tc_settings(https_tc, ca_bundle=certificate.cert))
    assert client.indicator_types() and TC_OWNER in client.owners()
    result = submit(client, hosts(3))
    assert result["totals"]["success"] == 3 and result["stopped"] is None


def test_tc_without_verification_works_and_warns_once_per_client(https_tc, ca_env, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        client = ThreatConnectClient(tc_settings(https_tc, verify_tls=False))
        for _ in range(3):
            client.indicator_types()
        assert submit(client, hosts(2))["totals"]["success"] == 2
        assert len(tls_warnings(caplog, "lib.tc_http")) == 1
        ThreatConnectClient(tc_settings(https_tc, verify_tls=False)).indicator_types()
        assert len(tls_warnings(caplog, "lib.tc_http")) == 2  # once per client
        assert not [w for w in seen if issubclass(w.category, InsecureRequestWarning)]
        # the recorder does see urllib3's warning for a request that is not the pack's
        requests.get(https_tc.url.replace("127.0.0.1", "localhost") + "/v2/owners", verify=False, timeout=5)
    assert [w for w in seen if issubclass(w.category, InsecureRequestWarning)]


# ------------------------------------------------------------------------ actions

class TlsActionsTest(BaseActionTestCase):
    action_cls = CheckConfigAction

    @pytest.fixture(autouse=True)
    def _inject(self, https_al, https_tc, certificate, ca_env_set):
        self.al, self.tc, self.cert = https_al, https_tc, certificate.cert

    def config(self, **tls):
        return pack_config(al_url=self.al.url, tc_url=self.tc.url,
                           assemblyline=dict({"retries": 1}, **tls), threatconnect=tls)

    def test_check_config_names_the_tls_settings_of_both_services(self):
        ok, result = self.get_action_instance(self.config()).run()
        assert ok is False and result["error_type"] == "connection"
        checks = result["connections"]
        assert checks["assemblyline"]["settings"] == ["assemblyline.ca_bundle", "assemblyline.verify_tls"]
        assert checks["threatconnect"]["settings"] == ["threatconnect.ca_bundle", "threatconnect.verify_tls"]
        assert "certificate verify failed" in result["error"]
        assert_no_secrets(result)

    def test_check_config_passes_with_the_ca_bundle_and_without_verification(self):
        for tls in ({"ca_bundle": self.cert}, {"verify_tls": False}):
            result = self.get_action_instance(self.config(**tls)).run()
            assert result["connections"]["assemblyline"]["ok"] is True, result
            assert result["connections"]["threatconnect"] == {"ok": True, "url": self.tc.url, "owner": TC_OWNER}

    def test_a_tc_action_fails_cleanly_on_tls_then_works_with_the_bundle(self):
        self.action_cls = TcSubmitIndicatorsAction
        ok, result = self.get_action_instance(self.config()).run(indicators=hosts(1))
        assert ok is False and "check threatconnect.verify_tls / ca_bundle" in result["error"]
        result = self.get_action_instance(self.config(ca_bundle=self.cert)).run(indicators=hosts(2))
        assert result["totals"]["success"] == 2
