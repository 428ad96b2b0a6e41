"""Every ThreatConnect action driven into failures, in both auth modes: a clear failed result, no secret.

Faults: rejected credentials (HMAC secret, access id, token), a 5xx answer, a
server echoing the credentials, a dropped connection, an unreachable server, a
read timeout and an unreachable proxy with a password. Bad values contain
``LEAKCHECK``, so the conftest sweep also checks logs and results for them.
"""
import json
import socket

import pytest

from st2tests.base import BaseActionTestCase
from tc_batch_create import TcBatchCreateAction
from tc_batch_errors import TcBatchErrorsAction
from tc_batch_status import TcBatchStatusAction
from tc_batch_upload import TcBatchUploadAction
from tc_batches_status import TcBatchesStatusAction
from tc_submit_indicators import TcSubmitIndicatorsAction
from tests.emulators.threatconnect import DROP
from tests.helpers import LEAK_MARKERS, TC_ACCESS_ID, TC_SECRET_KEY, TC_TOKEN, pack_config

HOST = {"type": "Host", "summary": "fail.bad.example", "rating": 3, "confidence": 60}

ACTIONS = [
    (TcBatchCreateAction, {}),
    (TcBatchUploadAction, {"batch_id": 1001, "indicators": [HOST]}),
    (TcBatchStatusAction, {"batch_id": 1001}),
    (TcBatchStatusAction, {"batch_id": 1001, "wait": True, "wait_timeout": 1}),
    (TcBatchErrorsAction, {"batch_id": 1001}),
    (TcBatchesStatusAction, {"batch_ids": [1001, 1002]}),
    (TcSubmitIndicatorsAction, {"indicators": [HOST]}),
]
SLOW_FAULT_ACTIONS = (TcBatchCreateAction, TcBatchStatusAction)
TOKEN_AUTH = {"api_token": TC_TOKEN, "access_id": None, "secret_key": None}
WRONG = "tc-wrong-LEAKCHECK"


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# fault name -> (auth settings, expected words in the result)
FAULTS = {
    "hmac-wrong-secret": ({"secret_key": WRONG}, ["HTTP 401", "Signature data did not match"]),
    "hmac-wrong-access-id": ({"access_id": "00000000-LEAKCHECK"}, ["HTTP 401", "Access Denied"]),
    "token-wrong": (dict(TOKEN_AUTH, api_token=WRONG), ["HTTP 401", "Unauthorized"]),
    "hmac-5xx": ({}, ["HTTP 503", "Injected fault"]),
    "token-5xx": (TOKEN_AUTH, ["HTTP 503", "Injected fault"]),
    "hmac-echoed-credentials": ({}, ["HTTP 400", "<redacted>"]),
    "token-echoed-credentials": (TOKEN_AUTH, ["HTTP 400", "<redacted>"]),
    "hmac-dropped-connection": ({}, ["cannot reach ThreatConnect"]),
    "token-unreachable": (TOKEN_AUTH, ["cannot reach ThreatConnect", "Connection refused"]),
    "hmac-unreachable": ({}, ["cannot reach ThreatConnect", "Connection refused"]),
    "token-read-timeout": (dict(TOKEN_AUTH, timeout=1), ["no answer within 1 s"]),
    "hmac-proxy-with-password": ({}, ["cannot reach ThreatConnect", "proxy error (check threatconnect.proxies)"]),
}


class TcActionFailuresTest(BaseActionTestCase):
    action_cls = TcBatchCreateAction

    @pytest.fixture(autouse=True)
    def _inject(self, tc):
        tc.clear_faults()
        tc.configure(queued_polls=0, running_polls=0, batch_disabled=False)
        self.tc = tc

    def config(self, fault, silent_url):
        auth, _ = FAULTS[fault]
        url = self.tc.url
        if fault.endswith("unreachable"):
            url = "http://127.0.0.1:{}/api".format(closed_port())
        elif fault.endswith("read-timeout"):
            url = silent_url
        settings = dict({"retries": 0}, **auth)
        if fault.endswith("proxy-with-password"):
            settings["proxies"] = {"http": "http://st2:proxy-pass-LEAKCHECK@127.0.0.1:{}".format(closed_port())}
        return pack_config(tc_url=url, threatconnect=settings)

    def arm(self, fault):
        if fault.endswith("5xx"):
            self.tc.fail_next(503, count=100)
        elif fault.endswith("echoed-credentials"):  # the credentials this client sends
            sent = (TC_TOKEN,) if fault.startswith("token") else (TC_ACCESS_ID, TC_SECRET_KEY)
            echo = "bad credentials " + " ".join(sent)
            self.tc.fail_next(400, count=100, body=json.dumps({"status": "Failure", "message": echo}))
        elif fault.endswith("dropped-connection"):
            self.tc.fail_next(DROP, count=100)

    def test_every_action_fails_cleanly_on_every_fault(self):
        with socket.socket() as silent:  # accepts connections, never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)
            silent_url = "http://127.0.0.1:{}/api".format(silent.getsockname()[1])
            checked = 0
            for fault, (_, words) in FAULTS.items():
                for cls, params in ACTIONS:
                    if fault.endswith("read-timeout") and cls not in SLOW_FAULT_ACTIONS:
                        continue  # each costs the 1 s timeout: a POST and a GET are enough
                    self.tc.clear_faults()
                    self.arm(fault)
                    self.action_cls = cls
                    outcome = self.get_action_instance(self.config(fault, silent_url)).run(**params)
                    where = "{} on {}".format(cls.__name__, fault)
                    assert isinstance(outcome, tuple) and outcome[0] is False, where
                    result = outcome[1]
                    assert result["error_type"] == "threatconnect" and "Traceback" not in result["error"], where
                    for word in words:
                        assert word in result["error"], (where, result["error"])
                    text = repr(result)
                    assert not [m for m in LEAK_MARKERS + (TC_ACCESS_ID,) if m in text], (where, text)
                    checked += 1
        assert checked == (len(FAULTS) - 1) * len(ACTIONS) + 3
