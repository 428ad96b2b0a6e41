"""The ThreatConnect client, mostly against the in-process emulator.

Credentials are recognisable strings so every test can check they never leak
into messages, reprs, logs or results.
"""
import gzip
import json
import logging
import re
import socket
import time
import tracemalloc

import pytest
import requests
import urllib3

from lib.errors import ConfigError, InputError, ThreatConnectError
from lib.tc_auth import HmacAuth, TokenAuth, hmac_signature
from lib.tc_batch_bodies import iter_jobs
from lib.tc_batch_config import validate_batch_config
from lib.tc_http import build_session, retry_after_seconds
from lib.tc_submit import submit
from lib.tc_http import connection_backoff, retryable_connection_error
from lib.threatconnect import ThreatConnectClient
from tests.emulators.threatconnect import BATCH_DISABLED_TEXT, PERMISSION_DENIED_TEXT
from tests.emulators.threatconnect import ThreatConnectEmulator
from tests.helpers import batch_adapter

ACCESS_ID = "ACCESSID-4f1c9e2a-LEAKCHECK"
SECRET_KEY = "SECRETKEY-b7d35a60-LEAKCHECK"
TOKEN = "APITOKEN-0c6e8f13-LEAKCHECK"
SECRETS = (ACCESS_ID, SECRET_KEY, TOKEN)
OWNER = "Example Org"

REF_ID = "12345678901234567890"
REF_SECRET = "ExampleSecretKey-NotReal"
TC = "https://app.threatconnect.com"

# Every row of the reference's worked-example table.
REFERENCE_ROWS = [
    ("/api/v2/indicators/hosts/example.com?owner=Common%20Community", "GET", 1513703787,
     "8bB0+j1qKbHMd/OJnxhJIR5J6jpcIFTA4B19CtGPteM="),
    ("/api/v2/indicators/hosts/example.com?owner=Common+Community", "GET", 1513703787,
     "22g4GJTbUhQ8010zUWegxkZ6/wSw7rWMA6olpgOIjl0="),
    ("/api/v2/batch", "POST", 1700000000, "U171Rsf1Z9ewmbWec+YsyWHQDimBWi3qerkXKghWdS8="),
    ("/api/v2/batch/12345", "POST", 1700000005, "Ro8GMoCZhrta9/Gsek12ylzaa2x8zTELxIDUgybZS4Q="),
    ("/api/v2/batch/12345?includeAdditional=true", "GET", 1700000030,
     "Q0AZ4q4OPrQ0NISiFelNpcpyXOYxPU3pvqvuaZAaaBA="),
    ("/api/v2/batch/12345/errors", "GET", 1700000060,
     "3OdVNcrzno6zB1cpY6/gKiJNcI23VTEMdsztXwSN+VI="),
    ("/api/v3/indicators?owner=Demo+Org", "POST", 1700000100,
     "NY/Ms2EOtGceJAjXAAkPa24oUnv7FvEm21sLlJlHafI="),
    ("/v2/batch", "POST", 1700000000, "KjkBhT+IuzC8/kMfYCAbEekonKpG4ooHSJ1kVWyMiuo="),
]

# The same requests as a caller builds them: literal URL or params=.
PREPARED_ROWS = [
    ("GET", TC + "/api/v2/indicators/hosts/example.com?owner=Common%20Community", None, 0),
    ("GET", TC + "/api/v2/indicators/hosts/example.com", {"owner": "Common Community"}, 1),
    ("POST", TC + "/api/v2/batch", None, 2),
    ("post", TC + "/api/v2/batch/12345", None, 3),
    ("GET", TC + "/api/v2/batch/12345", {"includeAdditional": "true"}, 4),
    ("GET", TC + "/api/v2/batch/12345/errors", None, 5),
    ("POST", TC + "/api/v3/indicators", {"owner": "Demo Org"}, 6),
]


class Recorder:
    """Injectable sleep and monotonic clock: sleeping advances the clock."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self):
        return self.now


@pytest.fixture
def emu():
    with ThreatConnectEmulator(access_id=ACCESS_ID, secret_key=SECRET_KEY, token=TOKEN,
                               owners=[OWNER, "Other Org"]) as emulator:
        yield emulator


@pytest.fixture
def rec():
    return Recorder()


def settings_for(url, auth="hmac", **extra):
    settings = {"api_url": url, "owner": OWNER}
    if auth == "hmac":
        settings.update(access_id=ACCESS_ID, secret_key=SECRET_KEY)
    else:
        settings["api_token"] = TOKEN
    settings.update(extra)
    return settings


def client_for(emu, rec, auth="hmac", session=None, **extra):
    return ThreatConnectClient(settings_for(emu.url, auth, **extra), session=session,
                               sleep=rec.sleep, monotonic=rec.monotonic,
                               errors_retry_delay=0.01)


def hosts(count, start=0, **fields):
    for i in range(start, start + count):
        item = {"type": "Host", "summary": "h{}.bad.example".format(i), "rating": 3,
                "confidence": 60}
        item.update(fields)
        yield item


def requests_to(emu, method, pattern):
    return [e for e in emu.request_log() if e["method"] == method and re.search(pattern, e["path"])]


def assert_no_secret(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# ----------------------------------------------------------------- HMAC / auth

@pytest.mark.parametrize("path,method,timestamp,signature", REFERENCE_ROWS)
def test_signature_reproduces_every_reference_row(path, method, timestamp, signature):
    assert hmac_signature(REF_SECRET, path, method, timestamp) == signature
    assert hmac_signature(REF_SECRET, path, method.lower(), str(timestamp)) == signature


@pytest.mark.parametrize("method,url,params,row", PREPARED_ROWS)
def test_hmac_auth_signs_the_prepared_path_url(method, url, params, row):
    path, _, timestamp, signature = REFERENCE_ROWS[row]
    request = requests.Request(method, url, params=params).prepare()
    assert request.path_url == path
    HmacAuth(REF_ID, REF_SECRET, clock=lambda: timestamp + 0.9)(request)
    assert request.headers["Timestamp"] == str(timestamp)
    assert request.headers["Authorization"] == "TC {}:{}".format(REF_ID, signature)


def test_token_auth_header_and_reprs_hide_secrets():
    request = requests.Request("GET", TC + "/api/v2/batch/1").prepare()
    TokenAuth(TOKEN)(request)
    assert request.headers["Authorization"] == "TC-Token " + TOKEN
    assert "Timestamp" not in request.headers
    assert_no_secret(repr(TokenAuth(TOKEN)), str(TokenAuth(TOKEN)),
                     repr(HmacAuth(ACCESS_ID, SECRET_KEY)), str(HmacAuth(ACCESS_ID, SECRET_KEY)))


def test_client_signs_with_api_prefix_and_query_as_sent(emu, rec):
    client = client_for(emu, rec)
    client.status(client.create_batch(client.batch_config()))
    paths = [e["path"] for e in emu.request_log()]
    assert paths == ["/api/v2/batch", "/api/v2/batch/1001?includeAdditional=true"]
    assert all(e["status"] < 300 and e["auth"] == "hmac" for e in emu.request_log())


def test_credentials_are_checked_and_reprs_hide_them(emu, rec):
    with pytest.raises(ConfigError):
        ThreatConnectClient({"api_url": emu.url, "owner": OWNER})
    with pytest.raises(ConfigError):
        ThreatConnectClient(settings_for(emu.url, api_token=TOKEN))
    for auth in ("hmac", "token"):
        client = client_for(emu, rec, auth=auth)
        assert_no_secret(repr(client), repr(client.session.auth))


# -------------------------------------------------------------------- session

def test_session_tls_proxies_and_connection_retry(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not really a CA")
    url = "https://tc.example/api"
    assert build_session(settings_for(url)).verify is True
    assert build_session(settings_for(url, ca_bundle=str(bundle))).verify == str(bundle)
    assert build_session(settings_for(url, verify_tls=False, ca_bundle=str(bundle))).verify \
        is False
    client = ThreatConnectClient(settings_for(url, proxies={"https": "http://proxy:3128"}))
    assert client.verify is True and client.proxies == {"https": "http://proxy:3128"}
    # urllib3 retries nothing (a replay would carry the first attempt's HMAC Timestamp)
    assert build_session(settings_for(url, retries=20)).get_adapter(url).max_retries.total == 0


def test_connection_failures_retried_by_the_client_loop_with_capped_backoff():
    refused = requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(
        None, "/api", urllib3.exceptions.NewConnectionError(None, "refused")))
    aborted = requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected")
    read_timeout = requests.exceptions.ReadTimeout("read timed out")
    tls = requests.exceptions.SSLError("certificate verify failed")
    for method in ("GET", "POST"):
        assert retryable_connection_error(refused, method)  # nothing reached the server
        assert retryable_connection_error(requests.exceptions.ConnectTimeout("x"), method)
        assert not retryable_connection_error(tls, method)
    assert retryable_connection_error(aborted, "GET") and retryable_connection_error(read_timeout, "GET")
    assert not retryable_connection_error(aborted, "POST")  # the server may have acted
    assert not retryable_connection_error(read_timeout, "POST")
    assert [connection_backoff(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_tls_verification_off_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="lib.tc_http"):
        build_session(settings_for("https://tc.example/api", verify_tls=False))
    assert "verification is off" in caplog.text


# ---------------------------------------------------------------- BatchConfig

GOOD_CONFIG = {"owner": OWNER, "haltOnError": False, "action": "Create",
               "attributeWriteType": "Singleton"}


@pytest.mark.parametrize("field,value", [
    ("haltOnError", "true"), ("haltOnError", 1), ("attributeWriteType", "Merge"),
    ("action", "Update"), ("owner", ""), ("owner", 5), ("version", "V1"),
    ("tagWriteType", "Singleton"), ("securityLabelWriteType", "append"),
    ("fileMergeMode", "Split"), ("hashCollisionMode", "Favor"),
    ("playbookTriggersEnabled", "false"), ("ownerName", "x"),
])
def test_batch_config_field_errors_name_the_field(field, value):
    with pytest.raises(InputError) as caught:
        validate_batch_config(dict(GOOD_CONFIG, **{field: value}))
    assert field in str(caught.value)


@pytest.mark.parametrize("field", ["owner", "haltOnError", "action", "attributeWriteType"])
def test_batch_config_required_fields(field):
    config = dict(GOOD_CONFIG)
    del config[field]
    with pytest.raises(InputError, match=field):
        validate_batch_config(config)


def test_batch_config_defaults_come_from_settings(emu, rec):
    client = client_for(emu, rec, halt_on_error=True, attribute_write_type="Append")
    config = client.batch_config("Delete", {"hashCollisionMode": "Split"})
    assert config == {"version": "V2", "owner": OWNER, "action": "Delete", "haltOnError": True,
                      "attributeWriteType": "Append", "tagWriteType": "Append",
                      "securityLabelWriteType": "Append", "hashCollisionMode": "Split"}


# ------------------------------------------------------------ calls and errors

def test_create_upload_status_errors_roundtrip(emu, rec):
    client = client_for(emu, rec)
    batch_id = client.create_batch(client.batch_config())
    body = json.dumps({"indicator": [{"type": "Host", "summary": "ok.example"},
                                     {"type": "Host", "summary": "Bad.Example"}]}).encode()
    assert client.upload(batch_id, body) == {"status": "Queued"}
    assert client.status(batch_id)["status"] == "Queued"
    with pytest.raises(ThreatConnectError) as running:
        client.errors(batch_id)
    assert running.value.status == 400 and "Batch still in Running state" in str(running.value)
    assert client.status(batch_id, include_additional=False) == {
        "id": batch_id, "status": "Running", "errorCount": 0, "successCount": 0,
        "unprocessCount": 0}
    final = client.status(batch_id)
    assert final["status"] == "Completed" and final["successIndicatorCount"] == 1
    errors = client.errors(batch_id)
    assert [e["errorReason"] for e in errors] == ["Invalid Host: must be lower case: Bad.Example"]
    upload = requests_to(emu, "POST", r"/1001$")[0]
    assert upload["content_type"] == "application/octet-stream"
    assert upload["content_encoding"] is None


def test_errors_404_means_none_and_is_retried_with_backoff_after_completion(emu, rec):
    client = client_for(emu, rec)
    clean = client.create_batch(client.batch_config())
    client.upload(clean, b'{"indicator":[{"type":"Host","summary":"a.example"}]}')
    assert client.wait(clean)[1]
    assert client.errors(clean) == []
    rec.sleeps.clear()
    assert client.errors(clean, just_completed=True) == []  # a late error file is waited for
    assert rec.sleeps == [0.01, 0.02, 0.04, 0.08]  # then 404 means none
    emu.configure(error_file_delay=1)
    dirty = client.create_batch(client.batch_config())
    client.upload(dirty, b'{"indicator":[{"type":"Host","summary":"B.example"}]}')
    client.wait(dirty)
    rec.sleeps.clear()
    assert len(client.errors(dirty, just_completed=True)) == 1
    assert rec.sleeps == [0.01]
    assert len(requests_to(emu, "GET", r"/errors$")) == 8  # clean: 1 + 5, dirty: 2


def test_gzip_upload_and_local_size_limit(emu, rec):
    client = client_for(emu, rec, batch_gzip=True, batch_max_bytes=1024)
    batch_id = client.create_batch(client.batch_config())
    body = json.dumps({"indicator": list(hosts(5))}, separators=(",", ":")).encode()
    client.upload(batch_id, body)
    assert emu.job(batch_id)["gzip"] and emu.job(batch_id)["upload_bytes"] == len(body)
    assert requests_to(emu, "POST", r"/1001$")[0]["content_encoding"] == "gzip"
    before = len(emu.request_log())
    with pytest.raises(InputError, match="batch_max_bytes"):
        client.upload(batch_id, b"x" * 1025)  # uncompressed size counts, even with gzip
    assert len(emu.request_log()) == before


def test_server_side_oversize_is_reported_with_tc_description(emu, rec):
    emu.configure(max_upload_bytes=100)
    client = client_for(emu, rec)
    batch_id = client.create_batch(client.batch_config())
    with pytest.raises(ThreatConnectError) as caught:
        client.upload(batch_id, json.dumps({"indicator": list(hosts(5))}).encode())
    assert caught.value.status == 400
    assert "File size greater than allowable limit of 100" in str(caught.value)


def test_plain_text_401_and_503_are_parsed_and_never_retried(emu, rec):
    client = client_for(emu, rec)
    emu.configure(batch_permission_denied=True)
    with pytest.raises(ThreatConnectError) as denied:
        client.create_batch(client.batch_config())
    assert denied.value.status == 401 and PERMISSION_DENIED_TEXT in str(denied.value)
    emu.configure(batch_permission_denied=False, batch_disabled=True)
    with pytest.raises(ThreatConnectError) as disabled:
        client.create_batch(client.batch_config())
    assert disabled.value.status == 503 and BATCH_DISABLED_TEXT in str(disabled.value)
    assert len(requests_to(emu, "POST", r"/v2/batch$")) == 2 and rec.sleeps == []


def test_unknown_owner_is_403(emu, rec):
    client = client_for(emu, rec, owner="Nobody Org")
    with pytest.raises(ThreatConnectError) as caught:
        client.create_batch(client.batch_config())
    assert caught.value.status == 403 and "Access Denied" in str(caught.value)


@pytest.mark.parametrize("settings,message", [
    ({"secret_key": "SECRETKEY-wrong-LEAKCHECK"}, "Signature data did not match"),
    ({"access_id": "ACCESSID-unknown-LEAKCHECK"}, "Access Denied"),
])
def test_bad_hmac_credentials_are_401(emu, rec, settings, message):
    client = client_for(emu, rec, **settings)
    with pytest.raises(ThreatConnectError) as caught:
        client.status(1001)
    assert caught.value.status == 401 and message in str(caught.value)
    assert "LEAKCHECK" not in str(caught.value)


def test_bad_token_is_401(emu, rec):
    client = client_for(emu, rec, auth="token", api_token="APITOKEN-wrong-LEAKCHECK")
    with pytest.raises(ThreatConnectError) as caught:
        client.indicator_types()
    assert caught.value.status == 401 and "Unauthorized" in str(caught.value)
    assert "LEAKCHECK" not in str(caught.value)


def test_stale_timestamp_is_signed_again_once(emu, rec):
    stamps = iter([time.time() - 1000])
    session = build_session(settings_for(emu.url), clock=lambda: next(stamps, time.time()))
    client = client_for(emu, rec, session=session)
    assert client.indicator_types()
    assert [e["status"] for e in emu.request_log()] == [401, 200]
    skewed = build_session(settings_for(emu.url), clock=lambda: time.time() + 301)
    with pytest.raises(ThreatConnectError, match="Timestamp out of acceptable time range"):
        client_for(emu, rec, session=skewed).indicator_types()
    assert [e["status"] for e in emu.request_log()] == [401, 200, 401, 401]


def test_429_retry_after_is_honoured_for_reads_and_uploads(emu, rec):
    client = client_for(emu, rec)
    emu.fail_next(429, retry_after="7", method="POST", path=r"/v2/batch$")
    batch_id = client.create_batch(client.batch_config())
    emu.fail_next(429, retry_after="3", method="POST", path=r"/v2/batch/\d+$")
    client.upload(batch_id, b'{"indicator":[]}')
    emu.fail_next(429, count=2, method="GET")  # no Retry-After: capped exponential backoff
    client.status(batch_id)
    assert rec.sleeps == [7.0, 3.0, 0.5, 1.0]
    assert len(requests_to(emu, "POST", r"/v2/batch/\d+$")) == 2


def test_429_retry_after_really_waits(emu):
    client = ThreatConnectClient(settings_for(emu.url))
    emu.fail_next(429, retry_after="1", method="GET")
    started = time.monotonic()
    client.indicator_types()
    assert time.monotonic() - started >= 1.0


def test_retry_after_beyond_the_cap_is_not_waited_for(emu, rec):
    client = client_for(emu, rec)
    emu.fail_next(429, retry_after="3600")
    with pytest.raises(ThreatConnectError) as caught:
        client.indicator_types()
    assert caught.value.status == 429 and rec.sleeps == []


def test_retry_after_http_date():
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10
    assert retry_after_seconds("120") == 120 and retry_after_seconds("soon") is None


def test_5xx_retry_policy_per_call(emu, rec):
    client = client_for(emu, rec, retries=2)
    emu.fail_next(502, method="POST", path=r"/v2/batch$")
    emu.fail_next(503, method="POST", path=r"/v2/batch$")  # JSON 503: transient, retried
    batch_id = client.create_batch(client.batch_config())
    emu.fail_next(500, method="POST", path=r"/v2/batch/\d+$")
    with pytest.raises(ThreatConnectError) as upload:
        client.upload(batch_id, b'{"indicator":[]}')
    assert upload.value.status == 500  # an upload is never replayed after a 5xx
    emu.fail_next(504, count=5, method="GET")
    with pytest.raises(ThreatConnectError) as status:
        client.status(batch_id)
    assert status.value.status == 504
    assert rec.sleeps == [0.5, 1.0, 0.5, 1.0]
    assert len(requests_to(emu, "POST", r"/v2/batch/\d+$")) == 1
    assert len(requests_to(emu, "GET", r"/v2/batch/")) == 3


def test_connection_refused_and_read_timeout(rec):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ThreatConnectClient(settings_for("http://127.0.0.1:{}/api".format(port),
                                              retries=1), sleep=rec.sleep)
    with pytest.raises(ThreatConnectError) as refused:
        client.indicator_types()
    assert refused.value.status is None and "cannot reach ThreatConnect" in str(refused.value)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = "http://127.0.0.1:{}/api".format(silent.getsockname()[1])
        client = ThreatConnectClient(settings_for(url, retries=1, timeout=0.3), sleep=rec.sleep)
        with pytest.raises(ThreatConnectError) as timed_out:
            client.status(5)
    assert "no answer within 0.3 s" in str(timed_out.value)
    assert_no_secret(str(refused.value), str(timed_out.value))


def test_redirects_and_non_json_answers_are_errors(emu, rec):
    client = client_for(emu, rec)
    emu.fail_next(301, body="", content_type="text/plain",
                  headers={"Location": "https://elsewhere.example/api"})
    with pytest.raises(ThreatConnectError, match="redirect to https://elsewhere.example/api"):
        client.indicator_types()
    emu.fail_next(200, body="<html>login</html>", content_type="text/html")
    with pytest.raises(ThreatConnectError, match="not JSON"):
        client.status(1)
    emu.fail_next(503, body="", content_type="text/plain")  # empty: transient, retried
    emu.fail_next(503, body="<html>busy</html>", content_type="text/html")  # proxy: retried
    assert client.indicator_types() and rec.sleeps == [0.5, 1.0]
    emu.fail_next(502, count=9, body="<html>bad gateway</html>", content_type="text/html")
    with pytest.raises(ThreatConnectError) as html:
        client.status(1)
    assert "<html>" not in str(html.value) and html.value.status == 502


def test_secrets_echoed_by_a_server_are_redacted(emu, rec):
    client = client_for(emu, rec)
    echo = json.dumps({"status": "Failure", "message": "bad key {} for {}".format(
        SECRET_KEY, ACCESS_ID)})
    emu.fail_next(400, body=echo)
    with pytest.raises(ThreatConnectError) as caught:
        client.indicator_types()
    assert "<redacted>" in str(caught.value)
    assert_no_secret(str(caught.value), repr(caught.value), json.dumps(caught.value.to_result()))


def test_create_and_upload_multipart(emu, rec):
    client = client_for(emu, rec)
    body = json.dumps({"indicator": list(hosts(3))}).encode()
    queued = client.create_and_upload(client.batch_config(), body)
    assert queued["status"] == "Queued"
    emu.configure(sync_save_limit=10)
    done = client.create_and_upload(client.batch_config(), body)
    assert done["status"] == "Completed" and done["successCount"] == 3
    assert done["successIndicatorCount"] == 3
    log = requests_to(emu, "POST", "createAndUpload")
    assert log[0]["path"] == "/api/v2/batch/createAndUpload?includeAdditional=true"
    assert log[0]["content_type"].startswith("multipart/form-data")


# -------------------------------------------------------------------- submit

def test_submit_splits_by_count_groups_first(emu, rec):
    client = client_for(emu, rec, batch_max_items=5)
    groups = [{"type": "Report", "name": "Run {}".format(i), "xid": "pack:run:{}".format(i)}
              for i in range(2)]
    indicators = hosts(18, associatedGroups=[{"groupXid": "pack:run:1"}])
    result = submit(client, indicators, groups=iter(groups))
    assert [(j["groups"], j["indicators"]) for j in result["jobs"]] == [
        (2, 3), (0, 5), (0, 5), (0, 5)]
    assert result["totals"] == {"items": 20, "success": 20, "error": 0, "unprocessed": 0,
                                "rejected": 0, "not_submitted": 0}
    assert result["errors"] == [] and result["unfinished"] == [] and result["stopped"] is None
    stored = emu.indicators(OWNER)
    assert len(stored) == 18 and set(emu.groups(OWNER)) == {"pack:run:0", "pack:run:1"}
    assert all(r["associatedGroups"] == ["pack:run:1"] for r in stored.values())
    assert [j["items"] for j in emu.jobs()] == [5, 5, 5, 5]


def test_submit_splits_by_bytes(emu, rec):
    client = client_for(emu, rec, batch_max_bytes=1024, batch_gzip=True)
    result = submit(client, hosts(60, tag=[{"name": "Assemblyline"}]))
    jobs = emu.jobs()
    assert len(jobs) > 5 and all(j["upload_bytes"] <= 1024 and j["gzip"] for j in jobs)
    assert sum(j["items"] for j in jobs) == 60 == result["totals"]["success"]
    assert len(emu.indicators(OWNER)) == 60


def test_submit_reports_every_error_and_continues(emu, rec):
    client = client_for(emu, rec, batch_max_items=4)
    items = list(hosts(10))
    items[2]["rating"] = 9
    items[7]["summary"] = "UPPER.example"
    result = submit(client, items)
    assert result["totals"]["success"] == 8 and result["totals"]["error"] == 2
    assert [(e["batch_id"], e["reason"]) for e in result["errors"]] == [
        (1001, "Invalid Host h2.bad.example: rating must be between 0 and 5"),
        (1002, "Invalid Host: must be lower case: UPPER.example")]
    assert json.loads(result["errors"][0]["source"])["summary"] == "h2.bad.example"


def test_submit_halt_on_error_stops_the_submission(emu, rec):
    client = client_for(emu, rec, batch_max_items=10, halt_on_error=True)
    items = list(hosts(25))
    items[3]["confidence"] = 101
    result = submit(client, items)
    assert result["jobs"] == [{"batch_id": 1001, "status": "Completed", "items": 10,
                               "groups": 0, "indicators": 10, "success_count": 3,
                               "error_count": 1, "unprocessed_count": 6}]
    assert result["totals"] == {"items": 10, "success": 3, "error": 1, "unprocessed": 6,
                                "rejected": 0, "not_submitted": 15}
    assert result["stopped"]["reason"] == "halt_on_error"
    assert len(emu.indicators(OWNER)) == 3 and len(emu.jobs()) == 1


def test_submit_delete_jobs(emu, rec):
    client = client_for(emu, rec, batch_max_items=4)
    submit(client, hosts(10), groups=[{"type": "Incident", "name": "i", "xid": "x1"}])
    result = submit(client, hosts(6), groups=[{"type": "Incident", "name": "i", "xid": "x1"}],
                            action="Delete")
    assert result["action"] == "Delete" and result["totals"]["success"] == 7
    assert sorted(emu.indicators(OWNER)) == ["h{}.bad.example".format(i) for i in range(6, 10)]
    assert emu.groups(OWNER) == {}
    again = submit(client, hosts(2), action="Delete")
    assert again["totals"]["error"] == 2
    assert all(e["reason"].startswith("Item not found") for e in again["errors"])
    assert all(j["config"]["action"] == "Delete" for j in emu.jobs()[3:])


def test_submit_poll_timeout_backs_off_and_reports_unfinished(emu, rec):
    emu.configure(stuck_running=True)
    client = client_for(emu, rec, batch_max_items=5, poll_timeout=100)
    result = submit(client, hosts(12))
    assert rec.sleeps == [1, 2, 4, 8, 16, 30, 30, 9]
    assert result["unfinished"] == [1001] and result["jobs"][0]["status"] == "Running"
    assert result["stopped"]["reason"] == "poll_timeout"
    assert result["totals"]["not_submitted"] == 7 and len(emu.jobs()) == 1


def test_submit_stops_on_a_fatal_reason(emu, rec):
    emu.configure(fatal_jobs=True)
    client = client_for(emu, rec, batch_max_items=5)
    result = submit(client, hosts(12))
    assert result["stopped"]["reason"] == "fatal_error"
    assert result["stopped"]["message"].startswith("Encountered an unexpected Exception")
    assert result["totals"]["unprocessed"] == 5 and result["totals"]["not_submitted"] == 7


def test_submit_reports_a_missing_error_file(emu, rec):
    emu.configure(error_file_delay=5)
    client = client_for(emu, rec)
    result = submit(client, [{"type": "Host", "summary": "Bad.example"}])
    assert result["totals"]["error"] == 1
    assert result["errors"][0]["reason"].startswith("ThreatConnect counted 1 errors")


def test_submit_rejects_unsendable_items_locally(emu, rec):
    client = client_for(emu, rec, batch_max_bytes=1024)
    items = [7, {"type": "Host", "summary": "nan.example", "rating": float("nan")},
             {"type": "Host", "summary": "big.example", "description": "x" * 2000},
             {"type": "Host", "summary": "fine.example"}]
    result = submit(client, items)
    assert result["totals"]["rejected"] == 3 and result["totals"]["success"] == 1
    assert [e["source"] for e in result["errors"]] == ["int", "nan.example", "big.example"]


def test_submit_failure_carries_the_partial_result(emu, rec):
    client = client_for(emu, rec, batch_max_items=2)
    emu.fail_next(500, count=10, method="POST", path=r"/v2/batch/1002$")  # outlasts the resends
    with pytest.raises(ThreatConnectError) as caught:
        submit(client, hosts(5))
    partial = caught.value.partial_result
    assert [(j["batch_id"], j["status"]) for j in partial["jobs"]] == [
        (1001, "Completed"), (1002, "Created")]
    assert partial["totals"]["success"] == 2


def test_submit_100k_by_count_and_bytes_loses_and_duplicates_nothing(emu, rec):
    emu.configure(queued_polls=0, running_polls=0)
    client = client_for(emu, rec, auth="token")

    def indicators():
        for i in range(50000):  # ~46 bytes each: the 25,000 item limit binds
            yield {"type": "Address", "summary": "10.{}.{}.{}".format(i >> 16, i >> 8 & 255,
                                                                      i & 255)}
        for i in range(50000):  # ~190 bytes each: the 2,000,000 byte limit binds
            yield {"type": "Host", "summary": "host-{}.bad.example".format(i), "rating": 3,
                   "confidence": 60, "tag": [{"name": "Assemblyline"}],
                   "attribute": [{"type": "Description", "value": "seen in run {}".format(i)}]}

    started = time.monotonic()
    result = submit(client, indicators())
    elapsed = time.monotonic() - started
    jobs = emu.jobs()
    assert [j["items"] for j in jobs][:2] == [25000, 25000]
    assert all(j["upload_bytes"] <= 2000000 for j in jobs)
    assert max(j["upload_bytes"] for j in jobs[2:]) > 1990000  # bytes bound these
    assert sum(j["items"] for j in jobs) == 100000 == result["totals"]["success"]
    assert [j["items"] for j in result["jobs"]] == [j["items"] for j in jobs]
    assert emu.counts(OWNER) == {"indicators": 100000, "groups": 0}
    assert result["totals"]["error"] == 0 and result["stopped"] is None
    print("\n100k indicators submitted in {:.1f} s ({} jobs)".format(elapsed, len(jobs)))


def test_submit_memory_stays_flat(rec):
    def peak(count):
        client = ThreatConnectClient(settings_for("https://tc.invalid/api",
                                                  batch_max_bytes=100000), sleep=rec.sleep)
        client.session.mount("https://", batch_adapter())
        tracemalloc.start()
        try:
            result = submit(client, hosts(count, tag=[{"name": "Assemblyline"}]))
            return tracemalloc.get_traced_memory()[1], result
        finally:
            tracemalloc.stop()

    small, _ = peak(4000)
    large, result = peak(20000)
    assert result["totals"]["success"] == 20000 and len(result["jobs"]) > 20
    assert large < small * 1.5 and large < 2000000  # ~one job body, whatever the input size


def test_serialisation_is_compact_and_streams(emu):
    rejected = []
    consumed = []

    def source():
        for item in hosts(10):
            consumed.append(item["summary"])
            yield item

    jobs = iter_jobs((), source(), 4, 2000000, rejected)
    first = next(jobs)
    assert len(consumed) == 5  # only one item past the first job was read
    assert b" " not in first.body and json.loads(first.body)["indicator"][0]["summary"] == \
        "h0.bad.example"
    assert [j.items for j in jobs] == [4, 2] and rejected == []


# ---------------------------------------------------------------------- leaks

def test_no_secret_in_messages_reprs_logs_or_results(emu, rec, caplog):
    caplog.set_level(logging.DEBUG)
    texts = []
    for auth in ("hmac", "token"):
        client = client_for(emu, rec, auth=auth, batch_max_items=3)
        texts += [repr(client), str(client.session.auth), repr(client.session.auth)]
        result = submit(client, hosts(7), groups=[{"type": "Report", "name": "r", "xid": "x"}])
        texts.append(json.dumps(result))
        emu.configure(batch_disabled=True)
        for call in (lambda: client.create_batch(client.batch_config()),
                     lambda: client.status(999999), lambda: client.upload(1, b"x" * 10 ** 7)):
            with pytest.raises((ThreatConnectError, InputError)) as caught:
                call()
            texts += [str(caught.value), repr(caught.value), json.dumps(caught.value.to_result())]
        emu.configure(batch_disabled=False)
    bad = client_for(emu, rec, secret_key=SECRET_KEY + "x")
    with pytest.raises(ThreatConnectError) as caught:
        bad.indicator_types()
    texts += [str(caught.value), caplog.text]
    assert "HTTP" in caplog.text  # the debug lines were captured
    assert_no_secret(*texts)


def test_error_file_gzip_without_header_is_inflated(emu, rec):
    client = client_for(emu, rec)
    raw = gzip.compress(json.dumps([{"errorReason": "r", "errorSource": "s"}]).encode())
    emu.fail_next(200, body=raw, content_type="application/octet-stream")
    assert client.errors(1) == [{"errorReason": "r", "errorSource": "s"}]


def test_submit_resends_an_upload_that_never_arrived(emu, rec):
    emu.configure(queued_polls=0, running_polls=0)
    client = client_for(emu, rec, retries=2)
    emu.fail_next(502, method="POST", path=r"/v2/batch/\d+$")  # before the server saw it
    result = submit(client, list(hosts(3)))
    assert result["totals"]["success"] == 3 and result["totals"]["error"] == 0
    assert len(requests_to(emu, "POST", r"/v2/batch/\d+$")) == 2  # the status said Created
    assert emu.counts(OWNER)["indicators"] == 3


def test_submit_does_not_resend_an_upload_whose_answer_was_lost(emu, rec):
    emu.configure(queued_polls=0, running_polls=0)
    client = client_for(emu, rec, retries=2)
    emu.fail_next(502, method="POST", path=r"/v2/batch/\d+$", after=True)  # accepted, answer lost
    result = submit(client, list(hosts(3, start=100, attribute=[
        {"type": "Description", "value": "once"}])), overrides={"attributeWriteType": "Append"})
    assert result["totals"]["success"] == 3
    assert len(requests_to(emu, "POST", r"/v2/batch/\d+$")) == 1  # status said Queued: not replayed
    stored = emu.indicators(OWNER)["h100.bad.example"]
    assert [a["value"] for a in stored["attributes"]] == ["once"]  # Append did not duplicate


def test_submit_gives_up_when_uploads_keep_failing(emu, rec):
    emu.configure(queued_polls=0, running_polls=0)
    client = client_for(emu, rec, retries=2)
    emu.fail_next(503, count=10, method="POST", path=r"/v2/batch/\d+$")
    with pytest.raises(ThreatConnectError) as failed:
        submit(client, list(hosts(2, start=200)))
    assert failed.value.status == 503
    assert len(requests_to(emu, "POST", r"/v2/batch/\d+$")) == 3  # first try + 2 resends
    assert failed.value.partial_result["jobs"][0]["status"] == "Created"
