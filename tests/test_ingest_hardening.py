"""ingest_file / ingest_directory on real inputs: the real assemblyline-client against the emulator.

What reaches the wire (read from the raw request body the emulator received and
from the ingest it stored), what is refused before anything is sent, how many
uploads are really in flight, and every unsafe kind of file, through the actions.
"""
import glob
import json
import os
import stat
import threading
import time

import pytest

from st2tests.base import BaseActionTestCase

from ingest_directory import IngestDirectoryAction
from ingest_file import IngestFileAction
from tests.emulators.al_multipart import parse_multipart
from tests.helpers import AL_USER, pack_config, quarantine_dir

SAMPLE = b"MZ\x90\x00 dropper\nGET http://evil-c2.top/gate.php HTTP/1.1\nbeacon 203.0.113.66\n"
INGEST_PATH = "/api/v4/ingest/"


class Wire:
    """Wraps the emulator's ingest handler: keeps each raw JSON part and counts uploads in flight."""

    def __init__(self, emulator, hold=0.0):
        self.emulator = emulator
        self.hold = hold
        self.bodies = []
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.real = emulator.state.ingest

    def __call__(self, user, content_type, body):
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if "multipart/form-data" in content_type:
                self.bodies.append(json.loads(parse_multipart(body, content_type)["json"].data.decode()))
            time.sleep(self.hold)
            return self.real(user, content_type, body)
        finally:
            with self.lock:
                self.in_flight -= 1

    def uploads(self):
        return [e for e in self.emulator.request_log if e["path"] == INGEST_PATH]


@pytest.fixture
def wire(emulator, monkeypatch):
    emulator.reset(knobs=True)
    emulator.set(analysis_delay=None)
    recorder = Wire(emulator)
    monkeypatch.setattr(emulator.state, "ingest", recorder)
    emulator.clear_log()
    yield recorder


@pytest.fixture
def drop(tmp_path):
    return quarantine_dir(tmp_path, SAMPLE)


def device_node(directory):
    """A character device (like /dev/null) inside ``directory``, or None when mknod is not allowed."""
    path = os.path.join(str(directory), "null")
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except (PermissionError, OSError):
        return None
    return path


def unreadable_file(directory):
    """(path, allowed root) of a regular, non-empty file that opening for reading refuses (EACCES).

    Not root: a chmod 000 file. Root reads any chmod 000 file (CAP_DAC_OVERRIDE), so then a
    write-only sysfs attribute stands in: the kernel refuses to open it for reading even to root.
    """
    if os.geteuid() != 0:
        path = os.path.join(str(directory), "locked.bin")
        with open(path, "wb") as handle:
            handle.write(SAMPLE + b"locked")
        os.chmod(path, 0)
        return path, str(directory)
    for path in sorted(glob.glob("/sys/bus/*/drivers_probe")):
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode) and info.st_size > 0 and not info.st_mode & 0o444:
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
            except PermissionError:
                return path, os.path.dirname(path)
    pytest.skip("running as root, which reads any chmod 000 file, and no write-only sysfs attribute "
                "(/sys/bus/*/drivers_probe) is available to stand in for an unreadable file")


# -- ingest_file: parameters ------------------------------------------------------

class IngestFileParametersTest(BaseActionTestCase):
    action_cls = IngestFileAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, wire, drop):
        self.emulator, self.wire, self.drop = emulator, wire, drop

    def action(self, **sections):
        return self.get_action_instance(pack_config(al_url=self.emulator.url, roots=[str(self.drop)], **sections))

    def test_every_submission_parameter_reaches_the_wire_inside_params(self):
        self.emulator.set(submission_customize=True)  # so the server keeps services.selected as sent
        result = self.action().run(
            path=str(self.drop / "dropper.exe"), classification="TLP:AMBER", description="EDR quarantine",
            deep_scan=True, priority=250, services_selected=["Antivirus", "Extraction"],
            services_excluded=["Dynamic Analysis"], service_spec={"Extract": {"password": "infected"}},
            ignore_cache=True, never_drop=True, generate_alert=True, notification_queue="case_queue",
            notification_threshold=500, submission_profile="static_with_dynamic")
        assert result["queue"] == "case_queue"
        [body] = self.wire.bodies
        # generate_alert travels in params only: servers ignore the root-level flag
        assert set(body) == {"name", "metadata", "params", "notification_queue", "notification_threshold",
                             "submission_profile"}
        assert body["notification_queue"] == "case_queue" and body["notification_threshold"] == 500
        assert body["submission_profile"] == "static_with_dynamic"
        assert body["params"] == {
            "type": "STACKSTORM", "classification": "TLP:AMBER", "description": "EDR quarantine",
            "deep_scan": True, "priority": 250, "ignore_cache": True, "never_drop": True, "generate_alert": True,
            "services": {"selected": ["Antivirus", "Extraction"], "excluded": ["Dynamic Analysis"]},
            "service_spec": {"Extract": {"password": "infected"}}}
        [stored] = self.emulator.ingests()
        assert stored["queue"] == "case_queue" and stored["threshold"] == 500
        params = stored["params"]
        assert params["classification"] == "TLP:AMBER" and params["description"] == "[STACKSTORM] EDR quarantine"
        assert params["deep_scan"] is True and params["priority"] == 250 and params["ignore_cache"] is True
        assert params["never_drop"] is True and params["generate_alert"] is True
        assert params["services"]["selected"] == ["Antivirus", "Extraction"]
        assert params["services"]["excluded"] == ["Dynamic Analysis"]
        assert params["service_spec"] == {"Extract": {"password": "infected"}}

    def test_unset_parameters_are_not_sent(self):
        self.action().run(path=str(self.drop / "dropper.exe"))
        [body] = self.wire.bodies
        assert body["params"] == {"type": "STACKSTORM"}
        assert "notification_threshold" not in body and body["notification_queue"] == "st2_threatconnect"
        assert body["submission_profile"] == "static"
        [stored] = self.emulator.ingests()
        assert stored["params"]["generate_alert"] is False and stored["threshold"] is None

    def test_threshold_suppresses_low_scores_on_the_server(self):
        (self.drop / "benign.txt").write_bytes(b"nothing to see here")
        self.action().run(path=str(self.drop / "benign.txt"), notification_threshold=1000)
        self.emulator.complete_all()
        assert self.emulator.queue(AL_USER, "st2_threatconnect") == []  # scored below 1000: not notified
        self.action().run(path=str(self.drop / "dropper.exe"), notification_threshold=1, ignore_cache=True)
        self.emulator.complete_all()
        assert len(self.emulator.queue(AL_USER, "st2_threatconnect")) == 1


def test_a_file_that_grows_after_its_size_check_is_refused_and_nothing_is_sent(emulator, wire, drop,
                                                                               monkeypatch):
    import lib.ingest
    path = drop / "grows.bin"
    path.write_bytes(b"MZ" + b"a" * 98)
    real_open = lib.ingest.open_checked

    def open_then_grow(target, policy):
        opened = real_open(target, policy)  # checked: 100 bytes, under the limit ...
        with open(target, "ab") as writer:  # ... then the writer appends past it
            writer.write(b"b" * 500)
        return opened
    monkeypatch.setattr(lib.ingest, "open_checked", open_then_grow)
    action = IngestFileAction(config=pack_config(al_url=emulator.url, roots=[str(drop)],
                                                 ingest={"max_file_size": 200}))
    ok, result = action.run(path=str(path))
    assert ok is False and "changed while being read" in result["error"]
    assert emulator.ingests() == []


def test_what_is_uploaded_is_exactly_what_was_hashed(emulator, wire, drop):
    path = drop / "dropper.exe"
    result = IngestFileAction(config=pack_config(al_url=emulator.url, roots=[str(drop)])).run(path=str(path))
    [stored] = [i for i in emulator.ingests() if i["ingest_id"] == result["ingest_id"]]
    assert stored["sha256"] == result["sha256"] == wire.bodies[-1]["metadata"]["sha256"]


BAD_PARAMETERS = [
    ({"priority": 251}, "priority must be an integer from 1 to 250 (got 251)"),
    ({"priority": 0}, "priority must be an integer from 1 to 250 (got 0)"),
    ({"priority": "high"}, "priority must be an integer from 1 to 250 (got 'high')"),
    ({"priority": True}, "priority must be an integer from 1 to 250 (got bool)"),
    ({"deep_scan": "yes"}, "deep_scan must be true or false (got str)"),
    ({"ignore_cache": 1}, "ignore_cache must be true or false (got int)"),
    ({"never_drop": "false"}, "never_drop must be true or false (got str)"),
    ({"generate_alert": []}, "generate_alert must be true or false (got list)"),
    ({"classification": 5}, "classification must be a non-empty string (got int)"),
    ({"description": ""}, "description must be a non-empty string (got an empty string)"),
    ({"services_selected": "Antivirus"}, "services_selected must be a list of non-empty strings (got str)"),
    ({"services_excluded": [1]}, "services_excluded must be a list of non-empty strings (got list)"),
    ({"service_spec": {"Extract": "infected"}}, "service_spec must be an object of service name: {parameter: value}"),
    ({"service_spec": ["Extract"]}, "service_spec must be an object of service name"),
    ({"notification_threshold": 0}, "notification_threshold must be an integer of at least 1 (got 0)"),
    ({"notification_threshold": "10"}, "notification_threshold must be an integer of at least 1 (got '10')"),
    ({"notification_queue": "Bad-Queue"}, "notification_queue must be 1-64 lower-case letters, digits or '_'"),
    ({"submission_profile": ""}, "submission_profile must be a non-empty string (got an empty string)"),
    ({"metadata": "case=1"}, "metadata must be an object of key: value pairs"),
    ({"metadata": {"case": {"id": 1}}}, "metadata value of 'case' must be a string, number or boolean"),
    ({"priorty": 10}, "ingest_file: unknown parameter priorty (known: classification, deep_scan,"),
    ({"params": {"priority": 10}, "alert": True}, "ingest_file: unknown parameters alert, params"),
]


@pytest.mark.parametrize("bad, message", BAD_PARAMETERS, ids=[str(sorted(b)) for b, _ in BAD_PARAMETERS])
def test_bad_parameters_are_refused_by_name_before_anything_is_sent(emulator, wire, drop, bad, message):
    action = IngestFileAction(config=pack_config(al_url=emulator.url, roots=[str(drop)]))
    ok, result = action.run(path=str(drop / "dropper.exe"), **bad)
    assert ok is False and result["error_type"] == "input"
    assert result["error"].startswith(message)
    assert emulator.request_log == [] and emulator.ingests() == []  # not even a login


# -- ingest_directory: bounded concurrency -------------------------------------------

class ConcurrencyTest(BaseActionTestCase):
    action_cls = IngestDirectoryAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, wire, drop):
        self.emulator, self.wire, self.drop = emulator, wire, drop
        for index in range(6):
            (drop / "sample{}.bin".format(index)).write_bytes(SAMPLE + str(index).encode())
        (drop / "dropper.exe").unlink()
        wire.hold = 0.3  # each upload stays in flight long enough to overlap with the others

    def run_with(self, **params):
        action = self.get_action_instance(pack_config(al_url=self.emulator.url, roots=[str(self.drop)],
                                                      drop_directory=str(self.drop), ingest={"concurrency": 4}))
        result = action.run(force=True, **params)
        assert result["counts"]["ingested"] == 6 and len(self.wire.uploads()) == 6
        return self.wire.peak

    def test_concurrency_one_uploads_one_file_at_a_time(self):
        assert self.run_with(concurrency=1) == 1

    def test_concurrency_n_uploads_at_most_n_files_at_a_time(self):
        assert self.run_with(concurrency=3) == 3

    def test_concurrency_defaults_to_the_config(self):
        assert self.run_with() == 4

    def test_concurrency_outside_its_range_is_refused(self):
        action = self.get_action_instance(pack_config(al_url=self.emulator.url, roots=[str(self.drop)],
                                                      drop_directory=str(self.drop)))
        for value, shown in ((0, "0"), (33, "33"), ("4", "'4'")):
            ok, result = action.run(concurrency=value)
            assert ok is False and result["error"] == \
                "concurrency must be an integer from 1 to 32 (got {})".format(shown)
        assert self.emulator.request_log == []


# -- unsafe files, through the actions --------------------------------------------------

class UnsafeFilesTest(BaseActionTestCase):
    action_cls = IngestFileAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, wire, drop):
        self.emulator, self.wire, self.drop = emulator, wire, drop
        self.outside = drop.parent / "outside"
        self.outside.mkdir()
        (self.outside / "secret.txt").write_bytes(b"top secret, outside the roots")

    def refusal(self, path, roots=None, **ingest):
        config = pack_config(al_url=self.emulator.url, roots=roots or [str(self.drop)], ingest=ingest)
        ok, result = IngestFileAction(config=config, action_service=self.action_service).run(path=str(path))
        assert ok is False and result["error_type"] == "unsafe_path", result
        prefix = "Refused {!r}: ".format(str(path))
        assert result["error"].startswith(prefix)  # names the file, then why
        return result["error"][len(prefix):]

    def assert_nothing_uploaded(self):
        assert self.wire.uploads() == [] and self.emulator.ingests() == []

    def test_device_file_through_the_allowed_dev_root(self):
        assert self.refusal("/dev/null", roots=[str(self.drop), "/dev"]) == "it is a device file"
        self.assert_nothing_uploaded()

    def test_device_node_inside_the_root(self):
        node = device_node(self.drop)
        if node is None:
            pytest.skip("mknod is not permitted here (the /dev/null case covers device files)")
        assert self.refusal(node) == "it is a device file"
        self.assert_nothing_uploaded()

    def test_symlink_to_a_device_is_refused_even_when_following(self):
        os.symlink("/dev/null", str(self.drop / "null.lnk"))
        assert self.refusal(self.drop / "null.lnk") == "it is a symbolic link (ingest.follow_symlinks is false)"
        assert self.refusal(self.drop / "null.lnk", follow_symlinks=True).startswith(
            "it is outside the allowed roots")
        assert self.refusal(self.drop / "null.lnk", roots=[str(self.drop), "/dev"],
                            follow_symlinks=True) == "it is a device file"
        self.assert_nothing_uploaded()

    def test_fifo(self):
        os.mkfifo(str(self.drop / "pipe"))
        assert self.refusal(self.drop / "pipe") == "it is a FIFO (named pipe)"  # and did not block
        self.assert_nothing_uploaded()

    def test_unreadable_file(self):
        path, root = unreadable_file(self.drop)
        assert self.refusal(path, roots=[str(self.drop), root]) == "it is not readable (permission denied)"
        self.assert_nothing_uploaded()

    def test_symlink_escapes(self):
        os.symlink(str(self.outside / "secret.txt"), str(self.drop / "link.txt"))
        os.symlink(str(self.outside), str(self.drop / "jump"))
        assert self.refusal(self.drop / "link.txt") == "it is a symbolic link (ingest.follow_symlinks is false)"
        assert self.refusal(self.drop / "link.txt", follow_symlinks=True).startswith(
            "it is outside the allowed roots")
        assert self.refusal(self.drop / "jump" / "secret.txt").startswith("it is outside the allowed roots")
        assert self.refusal(self.drop / "jump" / "secret.txt", follow_symlinks=True).startswith(
            "it is outside the allowed roots")
        self.assert_nothing_uploaded()

    def test_dot_dot(self):
        assert self.refusal(str(self.drop) + "/../outside/secret.txt") == "the path must not contain '..'"
        assert self.refusal(str(self.drop) + "/sub/../dropper.exe") == "the path must not contain '..'"
        self.assert_nothing_uploaded()

    def test_over_size(self):
        assert self.refusal(self.drop / "dropper.exe", max_file_size=16) == \
            "it is {} bytes, over the 16 byte limit (ingest.max_file_size)".format(len(SAMPLE))
        self.assert_nothing_uploaded()


class UnsafeFilesInDirectoryTest(BaseActionTestCase):
    action_cls = IngestDirectoryAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, wire, drop):
        self.emulator, self.wire, self.drop = emulator, wire, drop
        outside = drop.parent / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_bytes(b"top secret, outside the roots")
        os.mkfifo(str(drop / "pipe"))
        (drop / "big.bin").write_bytes(b"B" * 4096)
        os.symlink(str(outside / "secret.txt"), str(drop / "escape.txt"))
        os.symlink("/dev/null", str(drop / "null.lnk"))
        self.device = device_node(drop)

    def action(self, roots=None, **ingest):
        return self.get_action_instance(pack_config(
            al_url=self.emulator.url, roots=roots or [str(self.drop)], drop_directory=str(self.drop),
            ingest=dict({"max_file_size": 1024}, **ingest)))

    @staticmethod
    def reasons(result):
        return {os.path.basename(f["path"]): (f["status"], f.get("reason")) for f in result["files"]}

    def test_each_unsafe_file_is_reported_with_its_reason_and_only_the_good_one_uploaded(self):
        result = self.action(follow_symlinks=True).run()
        reasons = self.reasons(result)
        assert reasons["dropper.exe"] == ("ingested", None)
        assert reasons["pipe"] == ("skipped", "it is a FIFO (named pipe)")
        assert reasons["big.bin"] == ("skipped", "it is 4096 bytes, over the 1024 byte limit (ingest.max_file_size)")
        assert reasons["escape.txt"][0] == "skipped"
        assert reasons["escape.txt"][1].startswith("it is outside the allowed roots")
        assert reasons["null.lnk"][1].startswith("it is outside the allowed roots")  # /dev is not a root
        expected = 5
        if self.device:
            assert reasons["null"] == ("skipped", "it is a device file")
            expected += 1
        assert result["counts"] == {"seen": expected, "ingested": 1, "skipped": expected - 1, "failed": 0}
        assert result["skipped_by_reason"]["over the 1024 byte limit (ingest.max_file_size)"] == 1
        assert [i["name"] for i in self.emulator.ingests()] == ["dropper.exe"]
        assert len(self.wire.uploads()) == 1

    def test_symlinks_are_not_followed_by_default(self):
        result = self.action().run()
        reasons = self.reasons(result)
        link = ("skipped", "symbolic link (ingest.follow_symlinks is false)")
        assert reasons["escape.txt"] == link and reasons["null.lnk"] == link
        assert [i["name"] for i in self.emulator.ingests()] == ["dropper.exe"]

    def test_a_device_reached_through_an_allowed_root_is_still_refused(self):
        result = self.action(roots=[str(self.drop), "/dev"], follow_symlinks=True).run()
        assert self.reasons(result)["null.lnk"] == ("skipped", "it is a device file")
        assert [i["name"] for i in self.emulator.ingests()] == ["dropper.exe"]

    def test_unreadable_file_is_reported(self):
        path, root = unreadable_file(self.drop)
        if root == str(self.drop):
            result = self.action().run(include=[os.path.basename(path), "dropper.exe"])
            assert [i["name"] for i in self.emulator.ingests()] == ["dropper.exe"]
        else:  # a sysfs stand-in: walk its own directory
            result = self.action(roots=[str(self.drop), root]).run(directory=root, include=[os.path.basename(path)])
            assert self.emulator.ingests() == [] and self.wire.uploads() == []
        assert self.reasons(result)[os.path.basename(path)] == ("skipped", "it is not readable (permission denied)")
        assert result["counts"]["failed"] == 0

    def test_dot_dot_in_the_directory_is_refused(self):
        ok, result = self.action().run(directory=str(self.drop) + "/../quarantine")
        assert ok is False and result["error_type"] == "unsafe_path"
        assert result["error"].endswith("the path must not contain '..'")
        assert self.emulator.request_log == []


# -- ingest_directory: per-run file policy ------------------------------------------------

class DirectoryPolicyParametersTest(BaseActionTestCase):
    action_cls = IngestDirectoryAction

    @pytest.fixture(autouse=True)
    def _inject(self, emulator, wire, drop):
        self.emulator, self.wire, self.drop = emulator, wire, drop
        (drop / "big.bin").write_bytes(b"B" * 100)
        (drop / ".hidden.exe").write_bytes(SAMPLE + b"hidden")
        (drop / ".cache").mkdir()
        (drop / ".cache" / "inner.exe").write_bytes(SAMPLE + b"in a hidden directory")
        (drop / "real.exe").write_bytes(SAMPLE + b"real")
        os.symlink(str(drop / "real.exe"), str(drop / "alias.exe"))
        outside = drop.parent / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_bytes(b"top secret")
        os.symlink(str(outside / "secret.txt"), str(drop / "escape.txt"))

    def action(self, **ingest):
        return self.get_action_instance(pack_config(
            al_url=self.emulator.url, roots=[str(self.drop)], drop_directory=str(self.drop), ingest=ingest))

    def ingested(self):
        return sorted(i["metadata"]["file_path"][len(str(self.drop)) + 1:] for i in self.emulator.ingests())

    def test_defaults_come_from_the_config(self):
        result = self.action().run(force=True)
        assert self.ingested() == ["big.bin", "dropper.exe", "real.exe"]
        assert result["skipped_by_reason"] == {"hidden (ingest.include_hidden is false)": 1,
                                               "symbolic link (ingest.follow_symlinks is false)": 2}

    def test_max_file_size_lowers_the_limit_for_this_run(self):
        result = self.action().run(force=True, max_file_size=99)
        assert self.ingested() == ["dropper.exe", "real.exe"]
        assert result["skipped_by_reason"]["over the 99 byte limit (ingest.max_file_size)"] == 1

    def test_max_file_size_may_not_raise_the_configured_limit(self):
        ok, result = self.action(max_file_size=1000).run(max_file_size=1001)
        assert ok is False and result["error_type"] == "input"
        assert result["error"] == "max_file_size (1001) may only lower the configured limit " \
                                  "(ingest.max_file_size is 1000)"
        ok, result = self.action().run(max_file_size=0)
        assert ok is False and result["error"] == "max_file_size must be an integer of at least 1 (got 0)"
        assert self.emulator.request_log == []

    def test_include_hidden_enters_hidden_files_and_directories(self):
        self.action().run(force=True, include_hidden=True)
        assert self.ingested() == [".cache/inner.exe", ".hidden.exe", "big.bin", "dropper.exe", "real.exe"]

    def test_include_hidden_false_overrides_the_config(self):
        self.action(include_hidden=True).run(force=True, include_hidden=False)
        assert ".hidden.exe" not in self.ingested()

    def test_follow_symlinks_reads_targets_under_a_root_only(self):
        result = self.action().run(follow_symlinks=True)
        files = {os.path.basename(f["path"]): f for f in result["files"]}
        assert files["escape.txt"]["status"] == "skipped"
        assert files["escape.txt"]["reason"].startswith("it is outside the allowed roots")
        # alias.exe resolves to real.exe: same content, so it is submitted once
        assert {files["alias.exe"]["status"], files["real.exe"]["status"]} == {"ingested", "skipped"}
        assert len(self.emulator.ingests()) == 3 and "secret.txt" not in json.dumps(self.emulator.ingests())

    def test_follow_symlinks_false_overrides_the_config(self):
        result = self.action(follow_symlinks=True).run(force=True, follow_symlinks=False)
        assert result["skipped_by_reason"]["symbolic link (ingest.follow_symlinks is false)"] == 2

    def test_badly_typed_policy_parameters_are_refused_by_name(self):
        for params, message in (({"include_hidden": "yes"}, "include_hidden must be true or false (got str)"),
                                ({"follow_symlinks": 1}, "follow_symlinks must be true or false (got int)"),
                                ({"include": "*.exe"}, "include must be a list of non-empty strings (got str)"),
                                ({"force": "no"}, "force must be true or false (got str)"),
                                ({"dedupe_days": 0}, "dedupe_days must be an integer from 1 to 365 (got 0)"),
                                ({"max_listed": -1}, "max_listed must be an integer from 0 to 10000 (got -1)"),
                                ({"priority": 300}, "priority must be an integer from 1 to 250 (got 300)"),
                                ({"recursive": True}, "ingest_directory: unknown parameter recursive")):
            ok, result = self.action().run(**params)
            assert ok is False and result["error_type"] == "input", params
            assert result["error"].startswith(message)
        assert self.emulator.request_log == []
