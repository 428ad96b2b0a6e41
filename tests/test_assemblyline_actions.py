"""Assemblyline side end to end: the real assemblyline-client against the emulator."""
import io
import json
import logging
import os
import socket
import zipfile

import pytest

from st2tests.base import BaseActionTestCase

from get_submission_results import GetSubmissionResultsAction
from ingest_directory import IngestDirectoryAction
from ingest_file import IngestFileAction
from lib.assemblyline import AssemblylineService
from lib.config import load_config
from lib.errors import AssemblylineError
from lib.ledger import PENDING_PREFIX, IngestLedger
from tests.helpers import AL_APIKEY, AL_USER, assert_no_secrets, pack_config, quarantine_dir

SAMPLE = (b"MZ\x90\x00 dropper\nGET http://evil-c2.top/gate.php?id=1 HTTP/1.1\n"
          b"Host: evil-c2.top\nbeacon 203.0.113.66 and 10.1.2.3\nmail ops@bad-actor.ru\n"
          b"FAMILY=EMOTET\nupdate via windowsupdate.com\n")


@pytest.fixture(autouse=True)
def fresh(emulator):
    emulator.reset(knobs=True)
    emulator.clear_log()
    emulator.set(analysis_delay=None)
    yield


@pytest.fixture
def drop(tmp_path):
    return quarantine_dir(tmp_path, SAMPLE)


def settings(emulator, **al):
    return load_config(pack_config(al_url=emulator.url, assemblyline=al))["assemblyline"]


# -- client factory ------------------------------------------------------------

def test_client_arguments_are_explicit_and_verify_by_default(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    al = load_config(pack_config(assemblyline={"ca_bundle": str(bundle), "proxies": {"https": "http://p:3128"}}))
    args = AssemblylineService(al["assemblyline"]).client_arguments()
    assert args == {"server": "https://al.example.org", "apikey": (AL_USER, AL_APIKEY), "verify": str(bundle),
                    "timeout": 5.0, "retries": 2, "proxies": {"https": "http://p:3128"}}
    plain = AssemblylineService(load_config(pack_config())["assemblyline"]).client_arguments()
    assert plain["verify"] is True and plain["proxies"] is None
    off = AssemblylineService(load_config(pack_config(assemblyline={"verify_tls": False}))["assemblyline"])
    assert off.client_arguments()["verify"] is False


def test_tls_verification_off_logs_one_warning_without_secrets(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    service = AssemblylineService(settings(emulator, verify_tls=False))
    assert caplog.records == []  # building the service is not connecting
    assert service.client is service.client  # logged in once, warned once
    service.reset()
    service.client  # a rebuilt client (e.g. the sensor after failures) does not repeat it
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.name, r.getMessage()) for r in warnings] == [
        ("lib.assemblyline", "TLS certificate verification is off for Assemblyline (assemblyline.verify_tls is false)")]
    assert_no_secrets(caplog.text)


def test_tls_verification_on_logs_no_warning(emulator, tmp_path, caplog):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    caplog.set_level(logging.WARNING)
    AssemblylineService(settings(emulator)).client
    AssemblylineService(settings(emulator, ca_bundle=str(bundle))).client
    assert caplog.records == []


def test_login_and_lazy_connection(emulator):
    service = AssemblylineService(settings(emulator))
    assert emulator.request_log == []  # nothing on the network until used
    assert service.client is service.client
    paths = [entry["path"] for entry in emulator.request_log]
    assert paths[:3] == ["/api/v3/auth/init/", "/api/v4/auth/login/", "/api/"]


def test_bad_api_key_is_a_401_without_the_secret(emulator):
    service = AssemblylineService(settings(emulator, api_key="st2key:wrong-secret-123"))
    with pytest.raises(AssemblylineError) as caught:
        service.client
    assert caught.value.status == 401
    assert str(caught.value).startswith("Assemblyline error (HTTP 401): login failed:")
    assert "wrong-secret-123" not in str(caught.value)


def test_unreachable_server_fails_fast_with_a_clear_message():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    al = load_config(pack_config(al_url="http://127.0.0.1:{}".format(port), assemblyline={"retries": 1}))
    with pytest.raises(AssemblylineError) as caught:
        AssemblylineService(al["assemblyline"]).client
    assert caught.value.status == 429
    assert "Max retry reached" in str(caught.value)


def test_tls_failure_is_reported_with_status_495(emulator):
    url = emulator.url.replace("http://", "https://")
    with pytest.raises(AssemblylineError) as caught:
        AssemblylineService(settings(emulator, url=url, retries=1)).client
    assert caught.value.status == 495  # TLS spoken to a plain HTTP server
    assert "TLS with {} failed: wrong version number (check assemblyline.ca_bundle".format(url) \
        in str(caught.value) and "HTTPSConnectionPool" not in str(caught.value)


def test_timeout_is_mapped(emulator):
    emulator.set(delay=1.5)
    with pytest.raises(AssemblylineError, match=r"no answer within 1 s \(assemblyline.timeout\)"):
        AssemblylineService(settings(emulator, timeout=1, retries=1)).client


# -- ingest_file ---------------------------------------------------------------

class IngestFileTest(BaseActionTestCase):
    action_cls = IngestFileAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, drop):
        self.emulator, self.drop = emulator, drop

    def action(self, **overrides):
        return self.get_action_instance(pack_config(al_url=self.emulator.url, roots=[str(self.drop)], **overrides))

    def test_ingests_with_queue_profile_metadata_and_params(self):
        path = str(self.drop / "dropper.exe")
        result = self.action().run(path=path, metadata={"case": "INC-42", "tries": 2}, priority=400 - 200,
                                   deep_scan=True, services_excluded=["Dynamic Analysis"],
                                   generate_alert=True, never_drop=True)
        assert set(result) == {"ingest_id", "sha256", "size", "queue", "file_path"}
        assert result["queue"] == "st2_threatconnect" and result["size"] == len(SAMPLE)
        [ingest] = self.emulator.ingests()
        assert ingest["ingest_id"] == result["ingest_id"] and ingest["queue"] == "st2_threatconnect"
        assert ingest["metadata"]["file_path"] == path
        assert ingest["metadata"]["sha256"] == result["sha256"] == ingest["sha256"]
        assert ingest["metadata"]["hostname"] == socket.gethostname()
        assert ingest["metadata"]["case"] == "INC-42" and ingest["metadata"]["tries"] == "2"
        params = ingest["params"]
        assert params["priority"] == 200 and params["deep_scan"] is True and params["generate_alert"] is True
        assert params["never_drop"] is True and params["type"] == "STACKSTORM"
        assert params["services"]["excluded"] == ["Dynamic Analysis"]

    def test_records_the_pending_ingest_for_the_sensor(self):
        result = self.action().run(path=str(self.drop / "dropper.exe"))
        [stored] = IngestLedger(self.action_service).pending()
        raw = self.action_service.get_value(stored["key"], local=False)
        assert stored["key"].startswith(PENDING_PREFIX) and stored["key"].endswith("." + stored["token"])
        record = json.loads(raw)
        assert record["sha256"] == result["sha256"] and record["queue"] == "st2_threatconnect"
        assert record["deadline"] - record["ingested_at"] == 7200
        assert [r["ingest_id"] for r in IngestLedger(self.action_service).pending()] == [result["ingest_id"]]

    def test_queue_override(self):
        result = self.action().run(path=str(self.drop / "dropper.exe"), notification_queue="other_queue")
        assert result["queue"] == "other_queue" == self.emulator.ingests()[0]["queue"]

    def test_refusals_never_reach_assemblyline(self):
        outside = self.drop.parent / "outside.bin"
        outside.write_bytes(b"x")
        os.symlink(str(outside), str(self.drop / "link.bin"))
        os.mkfifo(str(self.drop / "pipe"))
        for path, reason in ((str(outside), "it is outside the allowed roots"),
                             (str(self.drop / "link.bin"), "it is a symbolic link"),
                             (str(self.drop / "pipe"), "it is a FIFO"),
                             (str(self.drop) + "/../outside.bin", "the path must not contain '..'")):
            ok, result = self.action().run(path=path)
            assert ok is False and result["error_type"] == "unsafe_path"
            assert reason in result["error"]
        assert self.emulator.ingests() == []

    def test_bad_metadata_is_refused_by_name(self):
        ok, result = self.action().run(path=str(self.drop / "dropper.exe"), metadata={"note": "x" * 5000})
        assert ok is False and result["error_type"] == "input"
        assert "metadata value of 'note' is over 4096 characters" in result["error"]
        ok, result = self.action().run(path=str(self.drop / "dropper.exe"), metadata={"ingest_id": "mine"})
        assert "set by Assemblyline itself" in result["error"]

    def test_server_limits_surface_with_their_status(self):
        self.emulator.set(max_file_size=10)
        ok, result = self.action().run(path=str(self.drop / "dropper.exe"))
        assert ok is False and result["status"] == 413 and "File too big to be scanned" in result["error"]
        self.emulator.set(max_file_size=104857600)
        ok, result = self.action().run(path=str(self.drop / "dropper.exe"), submission_profile="nope")
        assert ok is False and result["status"] == 400 and "Submission profile 'nope' does not exist" in result["error"]

    def test_oversize_is_refused_before_upload(self):
        ok, result = self.action(ingest={"max_file_size": 16}).run(path=str(self.drop / "dropper.exe"))
        assert ok is False and "over the 16 byte limit" in result["error"]
        assert [e for e in self.emulator.request_log if e["path"] == "/api/v4/ingest/"] == []

    def test_datastore_failure_after_ingest_is_a_warning_not_a_failure(self):
        def broken(*args, **kwargs):
            raise RuntimeError("datastore down")
        self.action_service.set_value = broken
        result = self.action().run(path=str(self.drop / "dropper.exe"))
        assert result["ingest_id"] and "not recorded in the datastore (RuntimeError)" in result["warning"]


# -- ingest_directory ----------------------------------------------------------

def build_tree(root):
    (root / "sub").mkdir()
    (root / "sub" / "dup.exe").write_bytes(SAMPLE)  # same content as dropper.exe
    (root / "note.txt").write_bytes(b"contact admin@bad-actor.ru")
    (root / "skip.log").write_bytes(b"log line")
    (root / ".cache").write_bytes(b"hidden")
    (root / "empty.bin").write_bytes(b"")
    os.symlink("/etc/hostname", str(root / "escape"))


class IngestDirectoryTest(BaseActionTestCase):
    action_cls = IngestDirectoryAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, drop):
        self.emulator, self.drop = emulator, drop
        build_tree(drop)

    def action(self, **ingest):
        return self.get_action_instance(pack_config(
            al_url=self.emulator.url, roots=[str(self.drop)], drop_directory=str(self.drop), ingest=ingest))

    def test_walks_dedupes_and_reports_every_file(self):
        result = self.action(concurrency=3).run(exclude=["*.log"])
        assert result["counts"] == {"seen": 7, "ingested": 2, "skipped": 5, "failed": 0}
        assert result["skipped_by_reason"] == {
            "duplicate in this run": 1, "excluded by pattern": 1, "hidden (ingest.include_hidden is false)": 1,
            "it is empty": 1, "symbolic link (ingest.follow_symlinks is false)": 1}
        ingested = sorted(os.path.basename(f["path"]) for f in result["files"] if f["status"] == "ingested")
        assert ingested in (["dropper.exe", "note.txt"], ["dup.exe", "note.txt"])  # same content: once
        assert len(self.emulator.ingests()) == 2
        # a re-run skips every file whose content was already ingested
        again = self.action().run(exclude=["*.log"])
        assert again["counts"]["ingested"] == 0
        assert again["skipped_by_reason"]["already ingested"] == 2
        assert again["skipped_by_reason"]["duplicate in this run"] == 1
        assert len(self.emulator.ingests()) == 2
        forced = self.action().run(exclude=["*.log"], force=True)
        assert forced["counts"]["ingested"] == 3 and len(self.emulator.ingests()) == 5

    def test_one_failing_file_does_not_stop_the_others(self):
        (self.drop / "other.exe").write_bytes(SAMPLE + b"variant")
        self.emulator.set(max_file_size=40)  # the server refuses the large files (413)
        result = self.action(concurrency=2).run(include=["*.exe", "*.txt"])
        assert result["counts"] == {"seen": 4, "ingested": 1, "skipped": 1, "failed": 2}
        failed = [f for f in result["files"] if f["status"] == "failed"]
        assert "other.exe" in {os.path.basename(f["path"]) for f in failed}
        assert all(f["reason"].startswith("Assemblyline error (HTTP 413)") for f in failed)
        assert [os.path.basename(f["path"]) for f in result["files"] if f["status"] == "ingested"] == ["note.txt"]

    def test_limits_bound_the_run_and_the_result(self):
        result = self.action().run(include=["*.exe", "*.txt"], max_files=1, max_listed=0)
        assert result["limit_reached"] is True and result["counts"]["ingested"] == 1
        assert result["files"] == [] and result["files_not_listed"] == 1

    def test_without_directory_or_drop_directory_the_error_is_clear(self):
        action = self.get_action_instance(pack_config(al_url=self.emulator.url, roots=[str(self.drop)]))
        ok, result = action.run()
        assert ok is False and result["error"] == "no directory given and ingest.drop_directory is not configured"

    def test_directory_outside_roots_is_refused(self):
        ok, result = self.action().run(directory="/etc")
        assert ok is False and "outside the allowed roots" in result["error"]


# -- get_submission_results ------------------------------------------------------

class GetSubmissionResultsTest(BaseActionTestCase):
    action_cls = GetSubmissionResultsAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, drop):
        self.emulator, self.drop = emulator, drop

    def ingest(self, content, name="sample.bin"):
        path = self.drop / name
        path.write_bytes(content)
        config = pack_config(al_url=self.emulator.url, roots=[str(self.drop)])
        result = IngestFileAction(config=config, action_service=self.action_service).run(path=str(path))
        return [i for i in self.emulator.ingests() if i["ingest_id"] == result["ingest_id"]][0]["sid"]

    def action(self):
        return self.get_action_instance(pack_config(al_url=self.emulator.url, roots=[str(self.drop)],
                                                    assemblyline={"ui_url": "https://al.example.org"}))

    def test_completed_submission_with_tags_and_hashes(self):
        sid = self.ingest(SAMPLE, "dropper.exe")
        self.emulator.complete_all()
        result = self.action().run(sid=sid)
        assert result["sid"] == sid and result["state"] == "completed" and result["partial"] is False
        assert result["al_url"] == "https://al.example.org/submission/" + sid
        assert result["verdict"] == "malicious" and result["max_score"] >= 1000
        tags = {(t["type"], t["value"]): t for t in result["tags"]}
        assert tags[("network.static.domain", "evil-c2.top")]["h_type"] == "malicious"
        assert tags[("network.static.ip", "203.0.113.66")]["safelisted"] is False
        assert tags[("network.static.ip", "10.1.2.3")]["safelisted"] is True
        assert tags[("network.email.address", "ops@bad-actor.ru")]["group"] == "ioc"
        assert tags[("attribution.family", "EMOTET")]["group"] == "attribution"
        submitted = result["files"][0]
        assert submitted["name"] == "dropper.exe" and submitted["extracted"] is False
        import hashlib
        assert submitted["md5"] == hashlib.md5(SAMPLE).hexdigest()
        assert submitted["sha1"] == hashlib.sha1(SAMPLE).hexdigest()
        assert tags[("network.static.domain", "evil-c2.top")]["sha256s"] == [submitted["sha256"]]
        assert result["metadata"]["file_path"].endswith("dropper.exe")

    def test_extracted_files_carry_their_hashes_and_parent(self):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("inner.js", b"fetch('https://malware-drop.xyz/p')")
        sid = self.ingest(buffer.getvalue(), "bundle.zip")
        self.emulator.complete_all()
        result = self.action().run(sid=sid)
        parent, child = result["files"][0], result["files"][1]
        assert child["extracted"] is True and child["parent_sha256"] == parent["sha256"]
        assert child["name"] == "inner.js" and len(child["md5"]) == 32 and len(child["sha1"]) == 40

    def test_running_submission_is_partial(self):
        sid = self.ingest(SAMPLE)
        result = self.action().run(sid=sid)
        assert result["partial"] is True and result["state"] == "submitted"

    def test_output_is_bounded(self):
        sid = self.ingest(SAMPLE)
        self.emulator.complete_all()
        result = self.action().run(sid=sid, max_tags=2, max_files=1)
        assert len(result["tags"]) == 2 and result["truncated"]["tags"] >= 3
        assert len(result["files"]) == 1

    def test_metadata_keys_are_bounded_and_counted(self):
        path = self.drop / "many.bin"
        path.write_bytes(SAMPLE + b"many keys")
        config = pack_config(al_url=self.emulator.url, roots=[str(self.drop)])
        extra = {"k{:03d}".format(i): "v" * 2000 for i in range(150)}
        ingest_id = IngestFileAction(config=config, action_service=self.action_service).run(
            path=str(path), metadata=extra)["ingest_id"]
        self.emulator.complete_all()
        stored = [i for i in self.emulator.ingests() if i["ingest_id"] == ingest_id][0]
        assert len(stored["metadata"]) == 157  # 150 + file_path, hostname, sha256, st2_ingest_token, ingest_id, type, ts
        result = self.action().run(sid=stored["sid"])
        metadata = result["metadata"]
        assert len(metadata) == 100 and result["truncated"]["metadata"] == 57
        # the pack's own keys survive, then the others in name order
        for key in ("file_path", "hostname", "sha256", "ingest_id", "type", "ts"):
            assert key in metadata
        assert metadata["file_path"] == str(path) and metadata["ingest_id"] == ingest_id
        assert sorted(k for k in metadata if k.startswith("k")) == ["k{:03d}".format(i) for i in range(94)]
        assert all(len(v) <= 1024 for v in metadata.values())
        assert list(metadata) == sorted(metadata)

    def test_truncation_counts_are_zero_when_nothing_is_left_out(self):
        sid = self.ingest(SAMPLE)
        self.emulator.complete_all()
        result = self.action().run(sid=sid)
        assert result["truncated"] == {"files": 0, "tags": 0, "tags_by_h_type": {}, "metadata": 0}

    def test_result_matches_the_output_schema(self):
        import jsonschema
        import yaml
        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions",
                               "get_submission_results.yaml"), encoding="utf-8") as handle:
            schema = yaml.safe_load(handle)["output_schema"]
        sid = self.ingest(SAMPLE)
        self.emulator.complete_all()
        jsonschema.validate(self.action().run(sid=sid, max_tags=1), schema)

    def test_unknown_sid_is_a_404(self):
        ok, result = self.action().run(sid="doesNotExist1234")
        assert ok is False and result["status"] == 404
        assert "Submission ID doesNotExist1234 does not exists." in result["error"]
        assert_no_secrets(result)
