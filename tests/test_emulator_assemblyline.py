"""The Assemblyline emulator, exercised through the real ``assemblyline_client``."""
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import zipfile

import pytest
import requests
from assemblyline_client import ClientError, get_client

from tests.emulators.al_analysis import Rules, extract_iocs, verdict_for_score
from tests.emulators.assemblyline import AssemblylineEmulator

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(PACK_DIR, "tests", "fixtures", "samples")
USERS = {"st2": "key1:s3cret", "other": "k2:pw2"}
NQ = "st2_tc"


def sample(name):
    return os.path.join(SAMPLES, name)


def read_sample(name):
    with open(sample(name), "rb") as fh:
        return fh.read()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def emu():
    with AssemblylineEmulator(user=None, apikey=None, users=USERS) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(emu):
    emu.reset(knobs=True)
    yield
    emu.reset(knobs=True)


def connect(emu, user="st2", retries=3, timeout=10):
    return get_client(emu.url, apikey=(user, USERS[user]), retries=retries, timeout=timeout, verify=True)


@pytest.fixture
def client(emu):
    return connect(emu)


def ingest(client, content=None, fname="sample.txt", nq=NQ, **kw):
    kw.setdefault("submission_profile", "static")
    return client.ingest(content=content, fname=fname, nq=nq, **kw)["ingest_id"]


def raw(emu, method, path, user="st2", **kw):
    headers = kw.pop("headers", {})
    if user:
        headers.update({"X-USER": user, "X-APIKEY": USERS[user]})
    return requests.request(method, emu.url + path, headers=headers, timeout=5, **kw)


# ------------------------------------------------------------------------------ connect / auth
def test_connect_sequence_cookies_and_envelope(emu):
    client = connect(emu)
    log = [(e["method"], e["path"], e["status"]) for e in emu.request_log]
    assert log == [("GET", "/api/v3/auth/init/", 404), ("POST", "/api/v4/auth/login/", 200),
                   ("GET", "/api/", 200)]
    assert client._connection.current_user == "st2"
    assert {"session", "XSRF-TOKEN"} <= set(client._connection.session.cookies.keys())

    login = requests.post(emu.url + "/api/v4/auth/login/", json={"user": "st2", "apikey": "key1:s3cret"}, timeout=5)
    body = login.json()
    assert set(body) == {"api_response", "api_error_message", "api_server_version", "api_status_code"}
    assert {"username", "roles_limit", "session_duration"} <= set(body["api_response"])
    missing = requests.get(emu.url + "/api/v4/nope/", timeout=5).json()
    assert missing["api_status_code"] == 404 and missing["api_error_message"] == "Api does not exist (/api/v4/nope/)"
    assert set(missing) == set(body)


@pytest.mark.parametrize("user,key", [("st2", "key1:wrong"), ("st2", "nokey:s3cret"), ("ghost", "key1:s3cret")])
def test_bad_apikey_is_401_without_retry(emu, user, key):
    started = time.time()
    with pytest.raises(ClientError) as err:
        get_client(emu.url, apikey=(user, key), retries=1, timeout=5)
    assert err.value.status_code == 401 and "Invalid user or APIKey" in str(err.value)
    assert time.time() - started < 1


def test_unauthenticated_and_stateless_headers(emu):
    no_auth = raw(emu, "GET", "/api/v4/submission/abc/", user=None)
    assert no_auth.status_code == 401 and no_auth.json()["api_error_message"] == "Session not found"
    stale = raw(emu, "GET", "/api/v4/submission/abc/", user=None, cookies={"session": "bogus"})
    assert stale.status_code == 401 and stale.json()["api_error_message"] == "Session expired"
    stateless = raw(emu, "GET", "/api/v4/submission/abc/")
    assert stateless.status_code == 404
    assert stateless.json()["api_error_message"] == "Submission ID abc does not exists."
    wrong = raw(emu, "GET", "/api/", user=None, headers={"X-USER": "st2", "X-APIKEY": "key1:nope"})
    assert wrong.status_code == 401


# ------------------------------------------------------------------------------ ingest
def test_ingest_file_handle_params_and_metadata(emu, client):
    with open(sample("iocs.txt"), "rb") as fh:
        iid = client.ingest(fh=fh, fname="iocs.txt", nq=NQ, submission_profile="static", ingest_type="STACKSTORM",
                            params={"generate_alert": True, "priority": 900},
                            metadata={"st2_exec": "x1", "n": 5, "nested": {"flag": True}, "ingest_id": "spoof",
                                      "huge": "h" * 5000})["ingest_id"]
    assert re.match(r"^[0-9A-Za-z]{18,22}$", iid)
    msg = client.ingest.get_message(NQ)
    sub = msg["submission"]
    assert msg["ingest_id"] == iid and sub["sid"] == iid and msg["failure"] == "" and msg["score"] == 2300
    assert set(msg) == {"submission", "retries", "failure", "score", "extended_scan", "ingest_id", "ingest_time",
                        "notify_time"}
    assert {"sid", "time", "files", "metadata", "notification", "params", "scan_key", "errors", "results",
            "file_tree", "file_infos"} <= set(sub)
    meta = sub["metadata"]
    assert meta["ingest_id"] == iid and meta["type"] == "STACKSTORM" and meta["ts"]
    assert (meta["st2_exec"], meta["n"], meta["nested.flag"]) == ("x1", "5", "true")
    assert "huge" not in meta
    params = sub["params"]
    assert (params["priority"], params["submitter"], params["generate_alert"]) == (250, "st2", True)
    assert params["description"] == "[STACKSTORM] Inspection of file: iocs.txt"
    assert sub["files"] == [{"name": "iocs.txt", "size": len(read_sample("iocs.txt")),
                             "sha256": sha256(read_sample("iocs.txt"))}]
    assert sub["notification"] == {"queue": NQ, "threshold": None}


def test_root_level_alert_is_ignored(client):
    ingest(client, content=b"plain text", alert=True)
    assert client.ingest.get_message(NQ)["submission"]["params"]["generate_alert"] is False


def test_ingest_validation_errors(emu, client):
    def status_of(**kw):
        with pytest.raises(ClientError) as err:
            client.ingest(**kw)
        return err.value.status_code, str(err.value)

    code, text = status_of(content=b"x", fname="x.txt")
    assert code == 400 and text.startswith("You must specify a submission profile. One of: ['static'")
    assert status_of(content=b"x", fname="x.txt", submission_profile="nope") == (
        400, "Submission profile 'nope' does not exist")
    assert status_of(fh=io.BytesIO(b""), fname="e.txt", submission_profile="static") == (400, "File empty.")
    assert status_of(sha256="0" * 64, submission_profile="static")[0] == 404
    emu.set(max_file_size=10)
    assert status_of(content=b"x" * 11, fname="big", submission_profile="static") == (
        413, "File too big to be scanned (11 > 10).")
    emu.set(max_file_size=104857600, submission_customize=True)
    assert client.ingest(content=b"no profile needed", fname="ok.txt")["ingest_id"]


def test_ingest_known_sha256_and_url(emu, client):
    known = emu.add_file(b"stored content from http://evil.com")
    iid = client.ingest(sha256=known, nq=NQ, submission_profile="static")["ingest_id"]
    msg = client.ingest.get_message(NQ)
    assert msg["ingest_id"] == iid and msg["submission"]["files"][0]["sha256"] == known
    assert msg["submission"]["files"][0]["name"] == known
    client.ingest(url="http://bad.example.net/payload", nq=NQ, submission_profile="static")
    assert client.ingest.get_message(NQ)["score"] >= 1000


def test_raw_multipart_validation(emu):
    headers = {"X-USER": "st2", "X-APIKEY": USERS["st2"]}
    url = emu.url + "/api/v4/ingest/"
    body = {"json": json.dumps({"name": "a", "submission_profile": "static"})}
    no_bin = requests.post(url, files={"json": (None, body["json"])}, headers=headers, timeout=5)
    assert no_bin.status_code == 400
    bad_json = requests.post(url, files={"json": (None, "{nope"), "bin": ("a", b"abc")}, headers=headers, timeout=5)
    assert bad_json.status_code == 400
    bad_type = requests.post(url, data=b"abc", headers=dict(headers, **{"Content-Type": "text/plain"}), timeout=5)
    assert bad_type.json()["api_error_message"] == "Invalid content type"
    bad_nt = requests.post(url, json={"plaintext": "x", "name": "a", "submission_profile": "static",
                                      "notification_threshold": "high"}, headers=headers, timeout=5)
    assert bad_nt.json()["api_error_message"] == "notification_threshold should be and int"
    ok = requests.post(url, files={"json": (None, body["json"]), "bin": ('we"ird.txt', b"abc")}, headers=headers,
                       timeout=5)
    assert ok.status_code == 200 and ok.json()["api_response"]["ingest_id"]


def test_ingest_quota_errors(emu, client):
    emu.set(ingest_quota="daily")
    with pytest.raises(ClientError) as err:
        ingest(client, content=b"x")
    assert err.value.status_code == 503 and "daily" in str(err.value)
    emu.set(ingest_quota="concurrent")
    quick = connect(emu, retries=1)
    with pytest.raises(ClientError) as err:
        ingest(quick, content=b"x")
    assert err.value.status_code == 429  # 503 without "daily" is retried until exhausted


# ------------------------------------------------------------------------------ queues
def test_messages_are_popped_fifo_destructively_and_per_user(emu, client):
    ids = [ingest(client, content=("file %d" % i).encode()) for i in range(4)]
    other = connect(emu, "other")
    other_id = ingest(other, content=b"other user's file")
    assert set(emu.queues()) == {"nq-737432-st2_tc", emu.queue_key("other", NQ)}

    assert client.ingest.get_message(NQ)["ingest_id"] == ids[0]
    assert [m["ingest_id"] for m in client.ingest.get_message_list(NQ, page_size=2)] == ids[1:3]
    assert [m["ingest_id"] for m in client.ingest.get_message_list(NQ)] == ids[3:]
    assert client.ingest.get_message(NQ) is None and client.ingest.get_message_list(NQ) == []
    assert client.ingest.get_message("never_used") is None
    assert [m["ingest_id"] for m in other.ingest.get_message_list(NQ)] == [other_id]
    bad = raw(emu, "GET", "/api/v4/ingest/get_message_list/%s/?page_size=abc" % NQ)
    assert bad.status_code == 500


def test_notification_threshold_rule(emu, client):
    ingest(client, content=read_sample("clean.txt"), nt=500)
    ingest(client, content=b"http://evil.com", nt=500)
    ingest(client, content=b"skip me AL-EMU:SKIP", nt=500)
    messages = client.ingest.get_message_list(NQ)
    assert [(m["score"], m["failure"]) for m in messages] == [(1000, ""), (None, "Skipped")]
    assert messages[0]["submission"]["notification"] == {"queue": NQ, "threshold": 500}


def test_queue_expiry_by_plumber(emu, client):
    ingest(client, content=b"old news")
    emu.age_messages(86400)
    assert emu.run_plumber() == [emu.queue_key("st2", NQ)]
    assert client.ingest.get_message(NQ) is None
    ingest(client, content=b"fresh")
    emu.advance(1800)
    assert emu.queue("st2", NQ)  # younger than a day: kept
    emu.advance(86400)
    assert client.ingest.get_message(NQ) is None  # the plumber ran on its own schedule


# ------------------------------------------------------------------------------ results
def test_summary_tuples_and_map(emu, client):
    content = read_sample("iocs.txt")
    sid = ingest(client, content=content, fname="iocs.txt")
    summary = client.submission.summary(sid)
    sha = sha256(content)
    ioc = summary["tags"]["ioc"]
    assert summary["partial"] is False and summary["classification"] == "TLP:C"
    assert ioc["network.static.uri"] == [
        ["http://evil-c2.com/gate.php", "malicious", False, "TLP:C"],
        ["https://www.microsoft.com/en-us/download", "suspicious", True, "TLP:C"],
        ["http://cdn.example.com/update.bin", "info", False, "TLP:C"]]
    assert ["malware-drop.ru", "malicious", False, "TLP:C"] in ioc["network.static.domain"]
    assert ["192.168.1.20", "suspicious", True, "TLP:C"] in ioc["network.static.ip"]
    assert ["2001:db8::42", "suspicious", False, "TLP:C"] in ioc["network.static.ip"]
    assert ioc["network.email.address"] == [["admin@phish.net", "suspicious", False, "TLP:C"]]
    assert summary["tags"]["attribution"] == {"attribution.family": [["EMOTET", "malicious", False, "TLP:C"]]}
    assert "network.static.uri_path" not in ioc
    assert summary["map"]["network.static.domain__evil-c2.com"] == [sha]
    assert "attribution.family__EMOTET" in summary["map"][sha]
    assert summary["attack_matrix"]["command-and-control"][0][0] == "T1071"
    record = client.submission(sid)
    assert (record["state"], record["max_score"], record["file_count"], record["error_count"]) == (
        "completed", 2300, 1, 0)
    assert verdict_for_score(record["max_score"]) == "malicious"
    assert client.submission.is_completed(sid) is True


def test_partial_summary_while_running(emu, client):
    emu.set(analysis_delay=30)
    sid = ingest(client, content=b"http://evil.com")
    assert client.submission.is_completed(sid) is False
    assert client.submission(sid)["state"] == "submitted"
    assert client.submission.summary(sid)["partial"] is True
    assert client.ingest.get_message(NQ) is None
    emu.advance(30)
    assert client.submission.summary(sid)["partial"] is False
    assert client.ingest.get_message(NQ)["score"] == 1000
    with pytest.raises(ClientError) as err:
        client.submission("nope")
    assert err.value.status_code == 404 and str(err.value) == "Submission ID nope does not exists."


def test_full_result_with_zip_children(emu, client):
    inner = b"connect to http://malware.example.net/x FAMILY=QAKBOT\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("dir/evil.txt", inner)
        archive.write(sample("dropper.sh"), "dropper.sh")
    sid = ingest(client, content=buf.getvalue(), fname="bundle.zip")
    full = client.submission.full(sid)
    root = sha256(buf.getvalue())
    children = full["file_tree"][root]["children"]
    assert set(children) == {sha256(inner), sha256(read_sample("dropper.sh"))}
    stage2 = children[sha256(read_sample("dropper.sh"))]["children"]
    assert [c["name"] for c in stage2.values()] == [["stage2.sh"]]
    info = full["file_infos"][sha256(inner)]
    assert (info["md5"], info["sha1"], info["size"]) == (hashlib.md5(inner).hexdigest(),
                                                         hashlib.sha1(inner).hexdigest(), len(inner))
    assert re.match(r"^\d+:[^:]+:[^:]+$", info["ssdeep"]) and info["type"] == "text/plain"
    extract = [r for r in full["results"].values() if r["response"]["service_name"] == "Extract"
               and r["sha256"] == root][0]
    assert {e["name"] for e in extract["response"]["extracted"]} == {"evil.txt", "dropper.sh"}
    sections = [s for r in full["results"].values() if r["sha256"] == sha256(inner) for s in r["result"]["sections"]]
    tags = [t for s in sections for t in s["tags"]]
    assert {"type": "network.static.uri_path", "value": "/x", "short_type": "uri_path", "safelisted": False} in tags
    assert all(set(s) >= {"title_text", "body", "body_format", "heuristic", "tags"} for s in sections)
    summary = client.submission.summary(sid)
    assert summary["map"]["attribution.family__QAKBOT"] == [sha256(inner)]
    assert summary["tags"]["behavior"]["file.behavior"][0][0] == "Downloads and executes a second stage"
    assert full["max_score"] == 2000 and full["file_count"] == 4


def test_service_error_marker(client):
    sid = ingest(client, content=b"crash please AL-EMU:ERROR")
    record = client.submission(sid)
    assert record["state"] == "completed" and record["error_count"] == 1
    assert list(client.submission.full(sid)["errors"]) == record["errors"]


def test_cache_hit_and_inflight_duplicates(emu, client):
    first = ingest(client, content=b"http://evil.com again", metadata={"n": 1})
    second = ingest(client, content=b"http://evil.com again", metadata={"n": 2})
    fresh = ingest(client, content=b"http://evil.com again", params={"ignore_cache": True})
    msgs = client.ingest.get_message_list(NQ)
    assert [(m["ingest_id"], m["submission"]["sid"]) for m in msgs] == [(first, first), (second, first), (fresh, fresh)]
    assert msgs[1]["score"] == msgs[0]["score"] and msgs[1]["submission"]["metadata"]["n"] == "2"
    assert set(emu.submissions()) == {first, fresh}
    emu.set(always_create_submission=True)
    copied = ingest(client, content=b"http://evil.com again")
    msg = client.ingest.get_message(NQ)
    assert msg["submission"]["sid"] == copied and client.submission(copied)["params"]["psid"] == first

    emu.set(analysis_delay=None)
    a = ingest(client, content=b"in flight")
    b = ingest(client, content=b"in flight")
    assert client.ingest.get_message_list(NQ) == []
    assert emu.complete_all() == 1
    assert [m["submission"]["sid"] for m in client.ingest.get_message_list(NQ)] == [a, a]
    assert [t["outcome"] for t in emu.ingests()][-2:] == ["submitted", "duplicate"] and b


def test_skipped_and_too_large_failures(emu, client):
    ingest(client, content=b"AL-EMU:SKIP")
    ingest(client, content=b"AL-EMU:SKIP but keep", params={"never_drop": True})
    emu.set(max_scan_size=10)
    ingest(client, content=b"x" * 11)
    emu.set(max_scan_size=104857600, drop_rate=1.0)
    ingest(client, content=b"sampled away")
    msgs = client.ingest.get_message_list(NQ)
    assert [(m["failure"], m["score"]) for m in msgs] == [
        ("Skipped", None), ("", 0), ("File too large (11 > 10)", None), ("Skipped", None)]
    assert msgs[0]["submission"]["sid"] == msgs[0]["ingest_id"]
    with pytest.raises(ClientError):
        client.submission(msgs[0]["ingest_id"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client's stream thread uses setDaemon()
def test_search_submissions(emu, client):
    first = ingest(client, content=b"one", metadata={"case": "A"})
    second = ingest(client, content=b"two", metadata={"case": "A"})
    found = client.search.submission('metadata.ingest_id:"%s"' % first)
    assert (found["total"], found["offset"], found["rows"]) == (1, 0, 25)
    assert found["items"][0]["sid"] == first and "metadata" not in found["items"][0]
    picked = client.search.submission('metadata.case:"A"', fl="sid,state,max_score,metadata.ingest_id", rows=1,
                                      offset=1)
    assert picked["total"] == 2 and len(picked["items"]) == 1
    assert set(picked["items"][0]) == {"sid", "state", "max_score", "metadata"}
    query = "files.sha256:%s AND sid:%s" % (sha256(b"two"), second)
    assert [i["sid"] for i in client.search.submission(query)["items"]] == [second]
    assert client.search.submission("files.sha256:%s AND sid:%s" % (sha256(b"two"), first))["total"] == 0
    assert sorted(i["sid"] for i in client.search.stream.submission("metadata.case:A", fl="sid")) == sorted(
        [first, second])


# ------------------------------------------------------------------------------ faults
def test_error_rate_retries_then_gives_up(emu, client):
    emu.fail_next(2, 503)
    emu.fail_next(1, 502)
    assert client.ingest.get_message(NQ) is None
    assert [e["status"] for e in emu.request_log][-4:] == [503, 503, 502, 200]
    emu.set(error_rate=0.5, seed=3)
    for _ in range(5):
        assert client.ingest.get_message(NQ) is None
    assert 503 in [e["status"] for e in emu.request_log][-10:]
    emu.set(error_rate=1.0, fault_paths="/ingest/")
    with pytest.raises(ClientError) as err:
        client.ingest.get_message(NQ)
    assert err.value.status_code == 429


def test_delay_exceeds_client_timeout(emu):
    client = connect(emu, timeout=0.3)
    emu.set(delay=0.6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.ingest.get_message(NQ)


def test_drop_response_after_pop_loses_messages(emu, client):
    ingest(client, content=b"lost 1")
    ingest(client, content=b"lost 2")
    kept = ingest(client, content=b"kept")
    emu.set(drop_response_after_pop=1)  # the first pop's answer never arrives; the client retries
    assert [m["ingest_id"] for m in client.ingest.get_message_list(NQ, page_size=2)] == [kept]
    assert emu.queue("st2", NQ) == []
    assert [e["status"] for e in emu.request_log if "get_message_list" in e["path"]] == [0, 200]


def test_session_expiry_triggers_relogin(emu, client):
    emu.expire_sessions()
    assert client.ingest.get_message(NQ) is None
    emu.fail_next(1, "session_expired")
    assert client.ingest.get_message(NQ) is None
    emu.advance(3601)  # idle longer than session_duration
    assert client.ingest.get_message(NQ) is None
    statuses = [(e["path"], e["status"]) for e in emu.request_log][3:]
    assert statuses == [("/api/v4/ingest/get_message/st2_tc/", 401), ("/api/v3/auth/init/", 404),
                        ("/api/v4/auth/login/", 200), ("/api/v4/ingest/get_message/st2_tc/", 200)] * 3
    assert emu.request_log[3]["user"] is None


def test_quota_errors(emu, client):
    emu.fail_next(2, "concurrency")
    assert client.ingest.get_message(NQ) is None
    emu.fail_next(1, "daily")
    with pytest.raises(ClientError) as err:
        client.ingest.get_message(NQ)
    assert err.value.status_code == 503 and "daily" in str(err.value)
    emu.set(daily_quota_exceeded=True)
    with pytest.raises(ClientError):
        client.submission("x")


def test_concurrency_quota_is_enforced(emu):
    emu.set(api_quota=1, delay=0.3)
    statuses = []

    def call():
        statuses.append(raw(emu, "GET", "/api/").status_code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 503]
    message = [e for e in emu.request_log if e["status"] == 503]
    assert message


# ------------------------------------------------------------------------------ rules / CLI
def test_configurable_rules(emu, client):
    emu.set(malicious_keywords=("c2",), info_values=("corp.test",), safelist=("8.8.8.8",))
    sid = ingest(client, content=b"c2.example.com  portal.corp.test  8.8.8.8")
    ioc = client.submission.summary(sid)["tags"]["ioc"]
    assert ioc["network.static.domain"] == [["c2.example.com", "malicious", False, "TLP:C"]]
    assert ioc["network.static.ip"] == [["8.8.8.8", "suspicious", True, "TLP:C"]]
    assert Rules().h_type("network.static.domain", "portal.corp.test") == "suspicious"
    noise = "10.0.0.1 12:30:45 v1.2.3 readme.md a[::2] std::string aa:bb:cc:dd:ee:ff ::1"
    assert extract_iocs(noise) == [("network.static.ip", "10.0.0.1"), ("network.static.ip", "::1")]


def test_standalone_prints_ready_line():
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulators.assemblyline", "--port", "0", "--user", "st2",
                             "--apikey", "key1:s3cret", "--analysis-delay", "0"],
                            cwd=PACK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode().strip()
        match = re.match(r"^assemblyline emulator ready on (http://127\.0\.0\.1:\d+)$", line)
        assert match, line
        client = get_client(match.group(1), apikey=("st2", "key1:s3cret"), retries=3, timeout=5)
        assert client.ingest.get_message(NQ) is None
    finally:
        proc.kill()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
