"""The ThreatConnect emulator on its own: auth, endpoints, validation, store, knobs, CLI.

Most tests call ``emu.handle`` directly (no sockets, fast); a few go over HTTP.
HMAC checks use the reference's worked examples verbatim.
"""
import gzip
import json
import os
import subprocess
import sys
import threading

import pytest
import requests

from tests.emulators.threatconnect import (BATCH_DISABLED_TEXT, PERMISSION_DENIED_TEXT,
                                           ThreatConnectEmulator)

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF_ID = "12345678901234567890"
REF_SECRET = "ExampleSecretKey-NotReal"
TOKEN = "emulator-test-token"
OWNER = "Example Org"
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
OTHER256 = "a" * 64

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
]
NO_API_SIGNATURE = "KjkBhT+IuzC8/kMfYCAbEekonKpG4ooHSJ1kVWyMiuo="  # of "/v2/batch:POST:1700000000"
CONFIG = {"owner": OWNER, "haltOnError": False, "action": "Create",
          "attributeWriteType": "Append"}


class Clock:
    def __init__(self, now=1700000000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def emu(clock):
    # Not started: handle() is called directly unless a test starts it.
    return ThreatConnectEmulator(access_id=REF_ID, secret_key=REF_SECRET, token=TOKEN,
                                 owners=[OWNER, "Other Org"], clock=clock)


def call(emu, method, path, body=b"", headers=None):
    """(status, headers, parsed body) of one token-authenticated request."""
    all_headers = {"Authorization": "TC-Token " + TOKEN}
    all_headers.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    status, answer_headers, payload = emu.handle(method, path, all_headers, body)
    if answer_headers.get("Content-Encoding") == "gzip":
        payload = gzip.decompress(payload)
    try:
        parsed = json.loads(payload.decode()) if payload else None
    except ValueError:
        parsed = payload.decode()
    return status, answer_headers, parsed


def create(emu, **config):
    status, _, body = call(emu, "POST", "/api/v2/batch", dict(CONFIG, **config))
    assert status == 201, body
    return body["data"]["batchId"]


def upload(emu, batch_id, content, headers=None):
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    all_headers = {"Content-Type": "application/octet-stream"}
    all_headers.update(headers or {})
    return call(emu, "POST", "/api/v2/batch/{}".format(batch_id), raw, all_headers)


def status_of(emu, batch_id, additional=True):
    path = "/api/v2/batch/{}{}".format(batch_id, "?includeAdditional=true" if additional else "")
    code, _, body = call(emu, "GET", path)
    assert code == 200
    return body["data"]["batchStatus"]


def run(emu, indicators=(), groups=(), extra=None, **config):
    """Create, upload and poll one job to completion; returns (status, errors)."""
    batch_id = create(emu, **config)
    content = {"indicator": list(indicators), "group": list(groups)}
    content.update(extra or {})
    assert upload(emu, batch_id, content)[0] == 202
    for _ in range(10):
        status = status_of(emu, batch_id)
        if status["status"] == "Completed":
            break
    code, _, errors = call(emu, "GET", "/api/v2/batch/{}/errors".format(batch_id))
    return status, (errors if code == 200 else [])


def host(name, **fields):
    return dict({"type": "Host", "summary": name}, **fields)


# ---------------------------------------------------------------------- auth

def hmac_headers(signature, timestamp):
    return {"Authorization": "TC {}:{}".format(REF_ID, signature), "Timestamp": str(timestamp)}


@pytest.mark.parametrize("path,method,timestamp,signature", REFERENCE_ROWS)
def test_reference_signatures_are_accepted(emu, clock, path, method, timestamp, signature):
    clock.now = timestamp
    status, _, body = emu.handle(method, path, hmac_headers(signature, timestamp), b"{}")
    assert status not in (401, 403), body  # authenticated; the resource may not exist


def test_signature_without_api_prefix_is_rejected(emu, clock):
    status, _, body = emu.handle("POST", "/api/v2/batch",
                                 hmac_headers(NO_API_SIGNATURE, 1700000000), b"{}")
    assert status == 401
    assert json.loads(body) == {"status": "Failure",
                                "message": "Signature data did not match expected result"}
    status, _, _ = emu.handle("POST", "/v2/batch", hmac_headers(NO_API_SIGNATURE, 1700000000),
                              b"{}")
    assert status == 404  # nothing is served outside /api


@pytest.mark.parametrize("path,method", [
    ("/api/v2/indicators/hosts/example.com?owner=Common+Community", "GET"),  # + vs %20
    ("/api/v2/indicators/hosts/example.com?owner=Common%20Community", "POST"),  # method
    ("/api/v2/indicators/hosts/example.com", "GET"),  # query dropped
])
def test_anything_not_signed_exactly_is_rejected(emu, clock, path, method):
    clock.now = 1513703787
    headers = hmac_headers(REFERENCE_ROWS[0][3], 1513703787)
    status, _, body = emu.handle(method, path, headers, b"")
    assert status == 401 and b"Signature data did not match" in body


@pytest.mark.parametrize("skew,accepted", [(300, True), (-300, True), (301, False),
                                           (-301, False)])
def test_timestamp_window(emu, clock, skew, accepted):
    path, method, timestamp, signature = REFERENCE_ROWS[2]
    clock.now = timestamp + skew
    status, _, body = emu.handle(method, path, hmac_headers(signature, timestamp), b"{}")
    if accepted:
        assert status == 400  # authenticated; "{}" is not a valid config
    else:
        assert status == 401 and b"Timestamp out of acceptable time range" in body


@pytest.mark.parametrize("headers,status,message", [
    ({}, 403, "Access Denied"),
    ({"Authorization": "TC other-id:abc", "Timestamp": "1700000000"}, 401, "Access Denied"),
    ({"Authorization": "TC-Token wrong"}, 401, "Unauthorized"),
    ({"Authorization": "Bearer x"}, 401, "Access Denied"),
    ({"Authorization": "TC {}:x".format(REF_ID)}, 401, "Timestamp out of acceptable"),
])
def test_authentication_failures(emu, headers, status, message):
    code, answer_headers, body = emu.handle("GET", "/api/v2/types/indicatorTypes", headers, b"")
    assert code == status and answer_headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "Failure" and message in json.loads(body)["message"]


def test_token_only_emulator_refuses_hmac(clock):
    emu = ThreatConnectEmulator(token=TOKEN, clock=clock)
    path, method, timestamp, signature = REFERENCE_ROWS[2]
    assert emu.handle(method, path, hmac_headers(signature, timestamp), b"{}")[0] == 401


# ------------------------------------------------------------------- create

@pytest.mark.parametrize("field", ["owner", "haltOnError", "action", "attributeWriteType"])
def test_create_requires_fields(emu, field):
    config = dict(CONFIG)
    del config[field]
    status, _, body = call(emu, "POST", "/api/v2/batch", config)
    assert status == 400 and field in body["message"]


@pytest.mark.parametrize("field,value", [
    ("action", "Update"), ("attributeWriteType", "Merge"), ("tagWriteType", "Singleton"),
    ("securityLabelWriteType", "x"), ("fileMergeMode", "x"), ("hashCollisionMode", "x"),
    ("version", "V3"), ("haltOnError", "yes"), ("playbookTriggersEnabled", 1),
])
def test_create_validates_enums_and_booleans(emu, field, value):
    status, _, body = call(emu, "POST", "/api/v2/batch", dict(CONFIG, **{field: value}))
    assert status == 400 and field in body["message"]


def test_create_accepts_string_booleans_and_answers_batch_id(emu):
    status, headers, body = call(emu, "POST", "/api/v2/batch", dict(
        CONFIG, haltOnError="true", playbookTriggersEnabled="false", version="V2"))
    assert status == 201 and body == {"status": "Success", "data": {"batchId": 1001}}
    assert emu.job(1001)["config"]["haltOnError"] is True


def test_create_unknown_owner_is_403(emu):
    status, _, body = call(emu, "POST", "/api/v2/batch", dict(CONFIG, owner="Nobody"))
    assert status == 403 and body["status"] == "Failure"


def test_create_plain_text_refusals(emu):
    emu.configure(batch_permission_denied=True)
    status, headers, body = call(emu, "POST", "/api/v2/batch", CONFIG)
    assert (status, headers["Content-Type"], body) == (401, "text/plain", PERMISSION_DENIED_TEXT)
    emu.configure(batch_permission_denied=False, batch_disabled=True)
    status, headers, body = call(emu, "POST", "/api/v2/batch", CONFIG)
    assert (status, headers["Content-Type"], body) == (503, "text/plain", BATCH_DISABLED_TEXT)
    assert "available.  Ensure" in body


# ------------------------------------------------------------------- upload

def test_upload_answers_queued_json(emu):
    batch_id = create(emu)
    status, headers, body = upload(emu, batch_id, {"indicator": [host("a.example")]})
    assert (status, headers["Content-Type"], body) == (202, "application/json",
                                                       {"status": "Queued"})
    assert upload(emu, batch_id, {"indicator": []})[0] == 400  # only once
    assert upload(emu, 99, {"indicator": []})[0] == 404


def test_upload_size_limit_uncompressed_and_wire(emu):
    emu.configure(max_upload_bytes=1000)
    content = json.dumps({"indicator": [host("h{}.example".format(i)) for i in range(40)]})
    status, _, body = upload(emu, create(emu), content.encode())
    assert status == 400
    assert body == {"status": "Invalid",
                    "description": "File size greater than allowable limit of 1000"}
    packed = gzip.compress(content.encode())
    assert upload(emu, create(emu), packed, {"Content-Encoding": "gzip"})[0] == 400
    emu.configure(upload_limit_basis="wire")
    batch_id = create(emu)
    assert upload(emu, batch_id, packed, {"Content-Encoding": "gzip"})[0] == 202
    assert emu.job(batch_id)["gzip"] and emu.job(batch_id)["items"] == 40


def test_upload_rejects_more_than_25000_items(emu):
    batch_id = create(emu)
    content = {"indicator": [{"type": "Mutex", "summary": "m{}".format(i)}
                             for i in range(25001)]}
    status, _, body = upload(emu, batch_id, content)
    assert status == 400 and body["status"] == "Invalid" and "25000" in body["description"]
    status, _, _ = upload(emu, batch_id, {"indicator": content["indicator"][:25000]})
    assert status == 202


def test_upload_content_type_must_be_octet_stream(emu):
    status, _, _ = upload(emu, create(emu), {"indicator": []},
                          {"Content-Type": "application/json"})
    assert status == 400


def test_invalid_json_completes_with_a_fatal_error(emu):
    batch_id = create(emu, haltOnError=True)
    assert upload(emu, batch_id, b'{"indicator": [')[0] == 202
    for _ in range(3):
        status = status_of(emu, batch_id)
    assert (status["status"], status["errorCount"], status["unprocessCount"]) == (
        "Completed", 1, 0)
    code, _, errors = call(emu, "GET", "/api/v2/batch/{}/errors".format(batch_id))
    assert errors[0]["errorReason"].startswith(
        "Encountered an unexpected Exception while processing batch job. Invalid JSON")


# ------------------------------------------------------------ status/errors

def test_lifecycle_by_polls_with_full_envelope(emu):
    batch_id = create(emu)
    assert status_of(emu, batch_id, additional=False) == {
        "id": batch_id, "status": "Created", "errorCount": 0, "successCount": 0,
        "unprocessCount": 0}
    upload(emu, batch_id, {"indicator": [host("a.example"), host("B.example")],
                           "group": [{"type": "Event", "name": "e", "xid": "e1"}]})
    seen = [status_of(emu, batch_id)["status"] for _ in range(4)]
    assert seen == ["Queued", "Running", "Completed", "Completed"]
    code, _, body = call(emu, "GET", "/api/v2/batch/{}?includeAdditional=true".format(batch_id))
    assert body["status"] == "Success" and body["data"]["batchStatus"] == {
        "id": batch_id, "status": "Completed", "errorCount": 1, "successCount": 2,
        "unprocessCount": 0, "successIndicatorCount": 1, "errorIndicatorCount": 1,
        "successGroupCount": 1, "errorGroupCount": 0}


def test_lifecycle_by_clock(emu, clock):
    emu.configure(timing="clock", queued_seconds=2, running_seconds=3)
    batch_id = create(emu)
    upload(emu, batch_id, {"indicator": [host("a.example")]})
    seen = []
    for _ in range(4):
        seen.append(status_of(emu, batch_id)["status"])
        clock.now += 2
    assert seen == ["Queued", "Running", "Running", "Completed"]


def test_error_file_endpoint(emu):
    batch_id = create(emu)
    upload(emu, batch_id, {"indicator": [host("B.example")]})
    status, _, body = call(emu, "GET", "/api/v2/batch/{}/errors".format(batch_id))
    assert (status, body) == (400, {"status": "Invalid",
                                    "description": "Batch still in Running state"})
    emu.configure(error_file_delay=2)
    while status_of(emu, batch_id)["status"] != "Completed":
        pass
    path = "/api/v2/batch/{}/errors".format(batch_id)
    assert [call(emu, "GET", path)[0] for _ in range(2)] == [404, 404]
    code, headers, raw = emu.handle("GET", path, {"Authorization": "TC-Token " + TOKEN}, b"")
    assert code == 200 and headers == {"Content-Type": "application/octet-stream",
                                       "Content-Encoding": "gzip"}
    assert json.loads(gzip.decompress(raw)) == [{
        "errorReason": "Invalid Host: must be lower case: B.example",
        "errorSource": '{"type":"Host","summary":"B.example"}'}]
    clean = create(emu)
    upload(emu, clean, {"indicator": [host("a.example")]})
    while status_of(emu, clean)["status"] != "Completed":
        pass
    assert call(emu, "GET", "/api/v2/batch/{}/errors".format(clean))[0] == 404


def test_results_endpoint_filters(emu):
    status, _ = run(emu, [host("B.example"), host("a.example", associatedGroups=[
        {"groupXid": "missing"}])])
    path = "/api/v2/batch/1001/results"
    assert len(call(emu, "GET", path)[2]) == 2
    code, _, body = call(emu, "GET", path + "?code=0x1009")
    assert code == 200 and [r["errorReason"][:11] for r in body] == ["Association"]
    assert len(call(emu, "GET", path + "?contains=lower&severity=error")[2]) == 1
    assert call(emu, "GET", path + "?severity=warn")[0] == 404


def test_create_and_upload_multipart_over_http(emu):
    emu.start()
    try:
        session = requests.Session()
        session.headers["Authorization"] = "TC-Token " + TOKEN
        files = {"config": ("config", json.dumps(CONFIG), "application/json"),
                 "content": ("content", json.dumps({"indicator": [host("a.example")]}),
                             "application/octet-stream")}
        answer = session.post(emu.url + "/v2/batch/createAndUpload", files=files)
        assert answer.status_code == 201
        assert answer.json()["data"]["batchStatus"] == {
            "id": 1001, "status": "Queued", "errorCount": 0, "successCount": 0,
            "unprocessCount": 0}
        emu.configure(sync_save_limit=5)
        answer = session.post(emu.url + "/v2/batch/createAndUpload?includeAdditional=true",
                              files=files)
        assert answer.json()["data"]["batchStatus"]["status"] == "Completed"
        assert answer.json()["data"]["batchStatus"]["successIndicatorCount"] == 1
        missing = session.post(emu.url + "/v2/batch/createAndUpload",
                               files={"config": files["config"]})
        assert missing.status_code == 400
    finally:
        emu.stop()


def test_indicator_types(emu):
    status, _, body = call(emu, "GET", "/api/v2/types/indicatorTypes")
    assert status == 200 and body["data"]["resultCount"] == 10
    assert {t["name"] for t in body["data"]["indicatorType"]} >= {"Address", "Registry Key"}


# --------------------------------------------------------------- validation

VALID_INDICATORS = [
    host("xn--sterreich-z7a.icom.museum"),
    {"type": "Host", "hostName": "evil_sub.example"},
    {"type": "URL", "text": "http://badguy.example/x?y=1"},
    {"type": "URL", "summary": "http://badguy.example/z",
     "associatedIndicators": [{"summary": "badguy.example", "indicatorType": "Host"}]},
    {"type": "URL", "summary": "https://10.0.0.1:8443/a"},
    {"type": "URL", "summary": "http://[2001:db8::1]/"},
    {"type": "Address", "ip": "10.0.0.1"},
    {"type": "Address", "summary": "2001:db8::1"},
    {"type": "EmailAddress", "address": "bad.guy@evil.example"},
    {"type": "ASN", "summary": "ASN12345"},
    {"type": "CIDR", "summary": "10.0.0.0/8"},
    {"type": "CIDR", "Block": "abc:def:10:0:0:0:0:0/48"},
    {"type": "Mutex", "summary": "Global\\evil"},
    {"type": "Registry Key", "summary": "HKEY_LOCAL_MACHINE\\Software\\Evil"},
    {"type": "User Agent", "summary": "EvilBot/1.0"},
    {"type": "File", "sha256": SHA256},
    {"type": "File", "summary": "{} : {}".format(MD5, SHA256)},
    host("rated.example", rating=3.0, confidence=0),
    host("full.example", rating=5, confidence=100, tag=[{"name": "t"}],
         securityLabel=[{"name": "TLP:AMBER"}], attribute=[{"type": "Description",
                                                           "value": "v", "displayed": True}],
         xid="ignored", description="kept"),
]

INVALID_INDICATORS = [
    (host("Bad.example"), "lower case"),
    (host("bücher.example"), "ASCII"),
    (host("-bad.example"), "valid host"),
    (host("bad..example"), "valid host"),
    ({"type": "URL", "summary": "badguy.example/x"}, "protocol"),
    ({"type": "URL", "summary": "http://Bad.example/"}, "lower case"),
    ({"type": "URL", "summary": "http://bücher.example/"}, "ASCII"),
    ({"type": "URL", "summary": "http://a.example/x y"}, "protocol"),
    ({"type": "EmailAddress", "summary": "nobody"}, "EmailAddress"),
    ({"type": "Address", "ip": "300.1.1.1"}, "Address"),
    ({"type": "Address", "summary": "2001:db8::g"}, "Address"),
    ({"type": "ASN", "summary": "12345"}, "ASN"),
    ({"type": "CIDR", "summary": "10.0.0.0/33"}, "CIDR"),
    ({"type": "CIDR", "summary": "abc:def:10::/48"}, "uncompressed"),
    ({"type": "CIDR", "summary": "abc:def:010:0:0:0:0:0/48"}, "leading zeros"),
    ({"type": "Registry Key", "summary": "HKLM\\Software"}, "HKEY_"),
    ({"type": "File", "md5": MD5[:-1]}, "bad md5"),
    ({"type": "File", "sha1": "z" * 40}, "bad sha1"),
    ({"type": "File", "summary": "{} : {}".format(MD5, MD5)}, "File summary"),
    ({"type": "File"}, "no md5"),
    ({"type": "Nope", "summary": "x"}, "Invalid indicator type"),
    ({"type": "Host"}, "no hostName or summary"),
    (host(" a.example"), "whitespace"),
    (host("r.example", rating=6), "rating must be between 0 and 5"),
    (host("r.example", rating="3"), "rating must be a number"),
    (host("r.example", rating=True), "rating must be a number"),
    (host("c.example", confidence=50.5), "whole number"),
    (host("c.example", confidence=-1), "confidence must be between"),
    (host("t.example", tag=[{"nom": "x"}]), "tag needs a name"),
    (host("t.example", attribute=[{"type": "Description"}]), "type and a value"),
    (host("t.example", associatedGroups=[{"xid": "x"}]), "needs a groupXid"),
    (host("t.example", associatedGroups=[{"groupXid": "nowhere"}]), "Association error"),
    ("just a string", "not a JSON object"),
    ({"type": "URL", "summary": "http://a.example/x", "associatedIndicators": {"summary": "a.example"}},
     "associatedIndicators must be an array"),
    ({"type": "URL", "summary": "http://a.example/x",
      "associatedIndicators": [{"summary": "a.example", "indicatorType": "Domain"}]}, "known indicatorType"),
    ({"type": "URL", "summary": "http://a.example/x",
      "associatedIndicators": [{"summary": "A.example", "indicatorType": "Host"}]}, "lower case"),
]


@pytest.mark.parametrize("item", VALID_INDICATORS)
def test_valid_indicators_are_saved(emu, item):
    status, errors = run(emu, [item])
    assert (status["successCount"], errors) == (1, [])


@pytest.mark.parametrize("item,reason", INVALID_INDICATORS)
def test_invalid_indicators_are_errors(emu, item, reason):
    status, errors = run(emu, [item])
    assert status["errorCount"] == 1 and status["errorIndicatorCount"] == 1
    assert reason in errors[0]["errorReason"]
    assert emu.indicators(OWNER) == {}


@pytest.mark.parametrize("group,reason", [
    ({"type": "Report", "xid": "r"}, "name is required"),
    ({"type": "Report", "name": "r"}, "xid is required"),
    ({"type": "Blog", "name": "b", "xid": "b"}, "Invalid group type"),
    ({"type": "Email", "name": "e", "xid": "e", "subject": "s", "header": "h"},
     "body is required"),
    ({"type": "Signature", "name": "s", "xid": "s", "fileName": "a.yar", "fileType": "YARA"},
     "fileText is required"),
    ({"type": "Document", "name": "d", "xid": "d", "malware": True}, "password"),
    ({"type": "Incident", "name": "i", "xid": "i", "status": "Done"}, "unknown status"),
    ({"type": "Report", "name": "r", "xid": "r", "associatedGroupXid": ["nowhere"]},
     "Association error"),
])
def test_invalid_groups_are_errors(emu, group, reason):
    status, errors = run(emu, groups=[group])
    assert status["errorGroupCount"] == 1 and reason in errors[0]["errorReason"]
    assert emu.groups(OWNER) == {}


def test_group_xid_resolves_in_the_job_or_the_owner(emu):
    report = {"type": "Report", "name": "Run 1", "xid": "pack:1", "publishDate": "2024-01-01"}
    status, _ = run(emu, [host("a.example", associatedGroups=[{"groupXid": "pack:1"}])],
                    [report])
    assert status["successCount"] == 2
    status, _ = run(emu, [host("b.example", associatedGroups=[{"groupXid": "pack:1"}])])
    assert status["successCount"] == 1
    status, _ = run(emu, [host("c.example", associatedGroups=[{"groupXid": "pack:1"}])],
                    owner="Other Org")
    assert status["errorCount"] == 1  # no cross-owner references
    assert emu.indicators(OWNER)["b.example"]["associatedGroups"] == ["pack:1"]
    assert emu.groups(OWNER)["pack:1"]["fields"] == {"publishDate": "2024-01-01"}


def test_association_array(emu):
    links = [{"ref_1": "a.example", "type_1": "Host", "ref_2": "g1", "type_2": "Incident"},
             {"ref_1": "a.example", "type_1": "Host", "ref_2": "http://a.example/x",
              "type_2": "URL", "associationType": "URL Host"},
             {"ref_1": "zz.example", "type_1": "Host", "ref_2": "g1", "type_2": "Incident"}]
    status, errors = run(emu, [host("a.example"), {"type": "URL", "text": "http://a.example/x"}],
                         [{"type": "Incident", "name": "i", "xid": "g1"}],
                         extra={"association": links})
    assert status["successCount"] == 3 and status["errorCount"] == 1
    assert "zz.example not found" in errors[0]["errorReason"]
    assert emu.indicators(OWNER)["a.example"]["associatedGroups"] == ["g1"]


def test_halt_on_error_leaves_the_rest_unprocessed(emu):
    items = [host("h{}.example".format(i)) for i in range(10)]
    items[4] = host("H4.example")
    status, errors = run(emu, items, [{"type": "Event", "name": "e", "xid": "e"}],
                         haltOnError=True)
    assert (status["successCount"], status["errorCount"], status["unprocessCount"]) == (5, 1, 5)
    assert len(errors) == 1 and len(emu.indicators(OWNER)) == 4


# ---------------------------------------------------------------- merge rules

def attrs(*pairs):
    return [{"type": t, "value": v} for t, v in pairs]


@pytest.mark.parametrize("mode,expected", [
    ("Append", [("A", "1"), ("B", "2"), ("A", "1"), ("A", "3")]),
    ("Replace", [("A", "1"), ("A", "3")]),
    ("Singleton", [("B", "2"), ("A", "1"), ("A", "3")]),
    ("Static", [("A", "1"), ("B", "2")]),
])
def test_attribute_write_types(emu, mode, expected):
    run(emu, [host("a.example", attribute=attrs(("A", "1"), ("B", "2")))])
    run(emu, [host("a.example", attribute=attrs(("A", "1"), ("A", "3")))],
        attributeWriteType=mode)
    assert emu.indicators(OWNER)["a.example"]["attributes"] == attrs(*expected)


@pytest.mark.parametrize("mode,tags", [("Append", ["t1", "t2", "t3"]), ("Replace", ["t2", "t3"]),
                                       (None, ["t2", "t3"])])
def test_tag_and_label_write_types(emu, mode, tags):
    first = host("a.example", tag=[{"name": "t1"}, {"name": "t2"}],
                 securityLabel=[{"name": "TLP:RED"}], rating=1)
    run(emu, [first])
    again = host("a.example", tag=[{"name": "t2"}, {"name": "t3"}],
                 securityLabel=[{"name": "TLP:AMBER"}], rating=4)
    config = {"tagWriteType": mode, "securityLabelWriteType": mode} if mode else {}
    run(emu, [again], **config)
    record = emu.indicators(OWNER)["a.example"]
    assert record["tags"] == tags and record["rating"] == 4
    assert record["securityLabels"] == (["TLP:RED", "TLP:AMBER"] if mode == "Append"
                                        else ["TLP:AMBER"])


def test_file_hashes_merge_into_a_superset(emu):
    run(emu, [{"type": "File", "md5": MD5}])
    run(emu, [{"type": "File", "md5": MD5.upper(), "sha256": SHA256}])
    run(emu, [{"type": "File", "summary": "{} : {}".format(SHA1, SHA256)}])
    files = emu.indicators(OWNER, "File")
    summary = "{} : {} : {}".format(MD5, SHA1, SHA256).upper()
    assert list(files) == [summary]
    assert files[summary]["hashes"] == {"md5": MD5.upper(), "sha1": SHA1.upper(),
                                        "sha256": SHA256.upper()}


@pytest.mark.parametrize("mode,sha256s", [
    ("FavorIncoming", [OTHER256]), ("FavorExisting", [SHA256]), ("IgnoreIncoming", [SHA256]),
    ("Split", [SHA256, OTHER256])])
def test_hash_collision_modes(emu, mode, sha256s):
    run(emu, [{"type": "File", "md5": MD5, "sha256": SHA256}])
    run(emu, [{"type": "File", "md5": MD5, "sha256": OTHER256}], hashCollisionMode=mode)
    found = sorted(r["hashes"]["sha256"] for r in emu.indicators(OWNER, "File").values())
    assert found == sorted(h.upper() for h in sha256s)


def test_file_merge_mode_folds_or_distributes(emu):
    run(emu, [{"type": "File", "md5": MD5}, {"type": "File", "sha256": SHA256}])
    run(emu, [{"type": "File", "md5": MD5, "sha256": SHA256, "tag": [{"name": "x"}]}],
        fileMergeMode="Distribute", tagWriteType="Append")
    assert len(emu.indicators(OWNER, "File")) == 2
    assert all(r["tags"] == ["x"] for r in emu.indicators(OWNER, "File").values())
    run(emu, [{"type": "File", "md5": MD5, "sha256": SHA256}])
    assert list(emu.indicators(OWNER, "File")) == ["{} : {}".format(MD5, SHA256).upper()]


def test_delete_removes_matches(emu):
    run(emu, [host("a.example", associatedGroups=[{"groupXid": "g"}]), host("b.example"),
              {"type": "File", "md5": MD5, "sha256": SHA256}],
        [{"type": "Threat", "name": "t", "xid": "g"}, {"type": "Threat", "name": "u",
                                                      "xid": "h"}])
    status, errors = run(emu, [host("a.example"), {"type": "File", "sha256": SHA256},
                               host("missing.example")],
                         [{"type": "Threat", "name": "t", "xid": "g"}], action="Delete")
    assert (status["successCount"], status["errorCount"]) == (3, 1)
    assert "Item not found" in errors[0]["errorReason"]
    assert list(emu.indicators(OWNER)) == ["b.example"] and list(emu.groups(OWNER)) == ["h"]


# ------------------------------------------------------------------- knobs

def test_fault_rates_and_queue(emu):
    emu.configure(rate_429=1.0, retry_after="5")
    status, headers, _ = call(emu, "GET", "/api/v2/types/indicatorTypes")
    assert status == 429 and headers["Retry-After"] == "5"
    emu.configure(rate_429=0.0, rate_5xx=1.0, status_5xx=502)
    assert call(emu, "GET", "/api/v2/types/indicatorTypes")[0] == 502
    emu.configure(rate_5xx=0.3)
    codes = [call(emu, "GET", "/api/v2/types/indicatorTypes")[0] for _ in range(200)]
    assert 30 < codes.count(502) < 90 and codes.count(200) == 200 - codes.count(502)
    emu.configure(rate_5xx=0.0)
    emu.fail_next(500, count=2, method="POST")
    assert [call(emu, "POST", "/api/v2/batch", CONFIG)[0] for _ in range(3)] == [500, 500, 201]
    with pytest.raises(ValueError):
        emu.configure(no_such_knob=1)


def test_stuck_job_stays_running_until_released(emu):
    emu.configure(stuck_running=True)
    batch_id = create(emu)
    upload(emu, batch_id, {"indicator": [host("a.example")]})
    assert {status_of(emu, batch_id)["status"] for _ in range(10)} == {"Queued", "Running"}
    emu.configure(stuck_running=False)
    assert status_of(emu, batch_id)["status"] == "Completed"


def test_request_log(emu):
    batch_id = create(emu)
    upload(emu, batch_id, gzip.compress(b'{"indicator":[]}'), {"Content-Encoding": "gzip"})
    log = emu.request_log()
    assert [(e["method"], e["path"], e["status"], e["auth"]) for e in log] == [
        ("POST", "/api/v2/batch", 201, "token"), ("POST", "/api/v2/batch/1001", 202, "token")]
    assert log[1]["content_encoding"] == "gzip" and log[1]["bytes"] > 0
    emu.clear_log()
    assert emu.request_log() == []


def test_concurrent_requests_and_knob_changes_over_http(emu):
    emu.start()
    failures = []

    def worker():
        session = requests.Session()
        session.headers["Authorization"] = "TC-Token " + TOKEN
        for _ in range(15):
            answer = session.post(emu.url + "/v2/batch", json=CONFIG)
            if answer.status_code not in (201, 500):
                failures.append(answer.status_code)

    try:
        threads = [threading.Thread(target=worker) for _ in range(6)]
        for thread in threads:
            thread.start()
        for rate in (0.5, 0.0, 0.2, 0.0):
            emu.configure(rate_5xx=rate)
        for thread in threads:
            thread.join()
    finally:
        emu.stop()
    assert failures == [] and len(emu.request_log()) == 90
    created = [e for e in emu.request_log() if e["status"] == 201]
    assert len(emu.jobs()) == len(created)


def test_standalone_cli_prints_one_ready_line():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators.threatconnect", "--host", "127.0.0.1",
         "--port", "0", "--access-id", REF_ID, "--secret-key", REF_SECRET, "--token", TOKEN,
         "--owner", OWNER, "--owner", "Second Org"],
        cwd=PACK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    killer = threading.Timer(20, process.kill)
    killer.start()
    try:
        line = process.stdout.readline()
        assert line.startswith("ThreatConnect emulator ready at http://127.0.0.1:")
        url = line.split(" at ", 1)[1].strip()
        assert url.endswith("/api") and not url.endswith(":0/api")
        answer = requests.post(url + "/v2/batch", json=dict(CONFIG, owner="Second Org"),
                               headers={"Authorization": "TC-Token " + TOKEN})
        assert answer.status_code == 201
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
        killer.cancel()
    assert (out, err, process.returncode) == ("", "", 0)
