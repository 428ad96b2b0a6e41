"""Batch bodies (``lib.tc_batch_bodies``): byte for byte the json module's compact text.

``iter_jobs`` must give the bodies (and the rejections) of the reference
below: one ``json.dumps(item, ensure_ascii=False, separators=(",", ":"),
allow_nan=False)`` per item, UTF-8 encoded. Every test runs twice: with orjson
(the fast path, guarded) and with orjson made unimportable (the json module
alone). Inputs are build output from the realistic fixtures, a larger
generated submission, the same items re-parsed from JSON, and a table of
items on which orjson and the json module disagree.
"""
import collections
import copy
import dataclasses
import datetime
import enum
import itertools
import json
import os
import random
import uuid

import pytest

from lib import tc_batch_bodies
from lib.config import load_config
from lib.indicators import build_indicators
from lib.tc_batch_bodies import encode_item, item_label, iter_jobs, plain_json
from lib.tc_submit import submit
from lib.threatconnect import ThreatConnectClient
from tests.helpers import MappingView as View, batch_adapter, pack_config

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "results")
FIXTURE_NAMES = sorted(os.listdir(FIXTURES))
LIMITS = [(25000, 2000000), (3, 2000000), (25000, 1500), (2, 900)]
OVERHEAD = len(b'{"group":[],"indicator":[]}')


@pytest.fixture(autouse=True, params=["orjson", "json"])
def encoder(request, monkeypatch):
    """Each test with orjson and, as where it is not installed, without it."""
    if request.param == "json":
        monkeypatch.setattr(tc_batch_bodies, "orjson", None)
    elif tc_batch_bodies.orjson is None:
        pytest.skip("orjson is not installed")
    return request.param


def reference_bytes(item):
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def reference_item(kind, item, max_bytes, rejected):
    if not isinstance(item, collections.abc.Mapping):
        rejected.append({"reason": "{} is not a mapping; not sent".format(kind),
                         "source": type(item).__name__})
        return None
    try:
        data = reference_bytes(item)
    except (TypeError, ValueError) as exc:
        rejected.append({"reason": "{} is not JSON serialisable ({}); not sent".format(
            kind, type(exc).__name__), "source": item_label(item)})
        return None
    if len(data) + OVERHEAD > max_bytes:
        rejected.append({"reason": "{} of {} bytes exceeds batch_max_bytes {}; not sent".format(
            kind, len(data), max_bytes), "source": item_label(item)})
        return None
    return data


def reference_iter(groups, indicators, max_items, max_bytes, rejected):
    """The bodies iter_jobs must yield, in the same streaming order."""
    parts = {"group": [], "indicator": []}
    size, count = OVERHEAD, 0

    def body():
        return b"".join((b'{"group":[', b",".join(parts["group"]), b'],"indicator":[',
                         b",".join(parts["indicator"]), b"]}"))

    tagged = itertools.chain((("group", g) for g in groups), (("indicator", i) for i in indicators))
    for kind, item in tagged:
        data = reference_item(kind, item, max_bytes, rejected)
        if data is None:
            continue
        if count and (count >= max_items or size + len(data) + 1 > max_bytes):
            yield body()
            parts = {"group": [], "indicator": []}
            size, count = OVERHEAD, 0
        parts[kind].append(data)
        size += len(data) + 1
        count += 1
    if count:
        yield body()


def reference_jobs(groups, indicators, max_items, max_bytes):
    rejected = []
    return list(reference_iter(groups, indicators, max_items, max_bytes, rejected)), rejected


def actual_jobs(groups, indicators, max_items, max_bytes):
    rejected = []
    jobs = list(iter_jobs(groups, indicators, max_items, max_bytes, rejected))
    assert all(job.items == job.groups + job.indicators for job in jobs)
    return [job.body for job in jobs], rejected


def settings(**mapping):
    raw = {"assemblyline": {"url": "https://al.example.org", "user": "st2", "api_key": "k:s"},
           "threatconnect": {"api_url": "https://tc.example/api", "owner": "Org", "api_token": "t"}}
    if mapping:
        raw["mapping"] = mapping
    return load_config(raw)


CONFIGS = [
    {},
    {"include_extracted_files": True, "max_indicators_per_submission": 100000},
    {"source_tag": "", "max_attribution_tags": 1, "drop_private_addresses": False},
    {"classification_labels": {"TLP:C": "", "TLP:W": "TLP:WHITE"}, "min_h_type": "info"},
]


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return json.load(handle)


def generated(n_tags, seed):
    """A submission with shared files, attribution tags and every indicator kind."""
    rnd = random.Random(seed)
    shas = ["{:064x}".format(rnd.getrandbits(256)) for _ in range(12)]
    files = [{"name": "f{}.bin".format(i), "sha256": sha, "md5": sha[:32], "sha1": sha[:40],
              "size": 100 + i, "extracted": i > 0} for i, sha in enumerate(shas)]
    kinds = [("network.static.domain", "host{}.ex-ample{}.com"),
             ("network.dynamic.ip", "185.{}.{}.7"), ("network.static.uri",
                                                      "https://h{}.example{}.org/p?q=é\"%s"),
             ("network.email.address", "u{}@mail{}.example.net"),
             ("network.dynamic.ip", "2a03:{:x}::{:x}"), ("network.static.domain", "bücher{}.de{}")]
    tags = []
    for index in range(n_tags):
        tag_type, pattern = rnd.choice(kinds)
        tags.append({"type": tag_type, "value": pattern.format(index % 250, index),
                     "h_type": rnd.choice(["malicious", "suspicious", "info"]),
                     "safelisted": False, "classification": rnd.choice(["TLP:C", "TLP:A", None]),
                     "sha256s": sorted(rnd.sample(shas, rnd.randint(0, 3)))})
    for family in ("EMOTET", "QAKBOT", "Trojan.\"Quoted\"", "Ünïcode"):
        tags.append({"type": "attribution.family", "value": family, "h_type": "malicious",
                     "safelisted": False, "classification": "TLP:C",
                     "sha256s": rnd.sample(shas, 2)})
    return {"sid": "4aBcDeFgHiJkLmNoPqRsTu", "state": "completed", "max_score": 2000,
            "verdict": "malicious", "classification": "TLP:C",
            "submitted_at": "2026-11-22T10:00:00Z", "metadata": {"file_path": "C:\\drop\\a.exe"},
            "files": files, "tags": tags, "al_url": "https://al.example.org/submission/x"}


def assert_same(groups, indicators, limits=LIMITS):
    for max_items, max_bytes in limits:
        expected = reference_jobs(groups, indicators, max_items, max_bytes)
        assert actual_jobs(groups, indicators, max_items, max_bytes) == expected
        assert actual_jobs(iter(groups), iter(indicators), max_items, max_bytes) == expected


# ---------------------------------------------------------------------- build output

@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize("mapping", CONFIGS)
def test_fixture_builds_serialise_byte_identical(name, mapping):
    result = build_indicators(fixture(name), settings(**mapping))
    assert_same(result.groups, result.indicators)


@pytest.mark.parametrize("seed", [1, 2])
def test_generated_build_serialises_byte_identical(seed):
    result = build_indicators(generated(3000, seed), settings(
        include_extracted_files=True, max_indicators_per_submission=100000))
    assert len(result.indicators) > 1000
    assert_same(result.groups, result.indicators, LIMITS[:3])


def test_items_parsed_from_json_serialise_byte_identical():
    result = build_indicators(generated(2000, 4), settings(max_indicators_per_submission=100000))
    parsed = json.loads(json.dumps(result.indicators))  # what an action gets from st2
    assert_same(result.groups, parsed, LIMITS[:2])


# ---------------------------------------------------------------------- tricky items

class Text(str):
    pass


class Number(int):
    pass


class Sub(dict):
    pass


class Reordered(dict):
    def items(self):
        return reversed(list(super().items()))


class Colour(enum.Enum):
    RED = 1


class Level(str, enum.Enum):
    HIGH = "high"


@dataclasses.dataclass
class Point:
    x: int = 1


def every_code_point():
    """Every code point but the surrogates, in strings of 4,096."""
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    return ["".join(points[i:i + 4096]) for i in range(0, len(points), 4096)]


def tricky_values():
    circular = []
    circular.append(circular)
    deep = []
    for _ in range(300):  # deeper than orjson's limit, within json's
        deep = [deep]
    return [
        "plain", "", "ünï\u2028\u2029\ufeff\U0001F600\x7f\"\\/\n\r\t\b\f\x00\x1f", "\ud800",
        "a\udfffb", "\ud83d\ude00",
        0, -1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64, -2 ** 63, -2 ** 63 - 1, 10 ** 40, 10 ** 5000,
        True, False, None,
        1.0, -0.0, 0.0, 0.1, 1e16, 1e15, 1e-5, 1e-4, 1e22, 5e-324, 1.7976931348623157e308,
        123456789012345680.0, float("nan"), float("inf"), float("-inf"),
        [], {}, (1, "two"), [1, [2, [3]]], {"a": {"b": {"c": [None]}}},
        {1: "int key"}, {None: "none key"}, {True: "bool key"}, {2.5: "float key"},
        {"b": 1, "a": 2}, {"%s": "%d", "é\"": "\t", "": ""},
        Text("str subclass"), {Text("key"): 1}, Number(5), Sub(a=1), Reordered(a=1, b=2),
        collections.OrderedDict(a=1, b=2), Level.HIGH, Point(),
        datetime.date(2026, 1, 2), datetime.datetime(2026, 1, 2, 3, 4, 5), b"bytes",
        bytearray(b"x"), {1, 2}, frozenset(), 1j, object(), circular, deep,
        [1.5, "x"], {"n": "2a00:26e::1", "m": "a,1.5", "o": "x:null"},
    ] + every_code_point()


def outcome(function, value):
    try:
        return function(value)
    except (TypeError, ValueError) as exc:
        return type(exc)


@pytest.mark.parametrize("value", tricky_values(), ids=lambda v: type(v).__name__)
def test_tricky_values_encode_or_fail_exactly_as_the_json_module(value):
    item = {"type": "Host", "summary": "x.example", "value": value}
    assert outcome(encode_item, item) == outcome(reference_bytes, item)
    assert outcome(plain_json, item) == outcome(reference_bytes, item)


def test_the_json_fallback_refuses_what_json_refuses():
    with pytest.raises(ValueError):  # NaN: null to orjson, refused here
        encode_item({"rating": float("nan")})
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: written by json, then not UTF-8
        encode_item({"summary": "\ud800"})
    with pytest.raises(TypeError):
        encode_item({"size": object()})


@pytest.mark.parametrize("value", [Colour.RED, uuid.UUID(int=7)], ids=["Enum", "UUID"])
def test_objects_that_are_not_json_data_are_the_documented_difference(encoder, value):
    """orjson writes a plain Enum member or a UUID natively where json refuses (not JSON data:
    items come from st2 parameters or lib.indicators)."""
    item = {"type": "Host", "summary": "x.example", "value": value}
    assert outcome(reference_bytes, item) is TypeError
    if encoder == "orjson":
        assert encode_item(item) == tc_batch_bodies.orjson.dumps(item)
    else:
        assert outcome(encode_item, item) is TypeError


def test_orjson_takes_the_items_it_agrees_on(encoder, monkeypatch):
    """Plain items do not fall back (when orjson is there); floats and nulls do."""
    calls = []
    monkeypatch.setattr(tc_batch_bodies, "plain_json", lambda item: calls.append(item) or b"")
    encode_item({"type": "Host", "summary": "a.example", "rating": 3, "tag": [{"name": "x"}],
                 "flag": True})
    encode_item({"rating": 1.5})
    encode_item({"rating": None})
    assert len(calls) == (2 if encoder == "orjson" else 3)


def odd_items():
    shared = [{"name": "Assemblyline"}]
    circular = []
    circular.append(circular)
    return [
        {"type": "Host", "summary": "a.example", "tag": shared, "rating": 3},
        {"type": "Host", "summary": "b.example", "tag": shared, "rating": 3.5},
        {"type": "Host", "summary": "nan.example", "tag": shared, "rating": float("nan")},
        {"type": "Host", "summary": "obj.example", "tag": shared, "extra": object()},
        {"type": "Host", "summary": "circular.example", "tag": circular},
        {"type": "Host", "summary": "surrogate\ud800.example", "tag": shared},
        {1: "int key", None: "none key", False: "bool key", 2.5: "float key"},
        {},
        Sub(type="Host", summary="sub.example", tag=shared),
        collections.OrderedDict(type="Host", summary="ordered.example", tag=shared),
        View({"type": "Host", "summary": "view.example"}),
        7, "text", None, ["a", "list"],
        {"type": "Host", "summary": "huge.example", "description": "x" * 3000},
        {"type": "Host", "summary": "big.example", "size": 10 ** 5000},
    ]


def test_odd_items_are_encoded_or_rejected_exactly_as_the_reference():
    items = odd_items()
    for max_items, max_bytes in [(25000, 2000000), (2, 2000), (1, 2000)]:
        group = [{"type": "Report", "name": "r", "xid": "x"}]
        expected = reference_jobs(group, items, max_items, max_bytes)
        assert actual_jobs(group, items, max_items, max_bytes) == expected
        assert len(expected[1]) >= 8  # the unsendable ones were rejected


# ---------------------------------------------------------------------- read once, as read

def test_lists_changed_between_generator_items_are_encoded_as_they_are_then():
    def items():
        tags = [{"name": "first"}]
        for index in range(6):
            yield {"type": "Host", "summary": "h{}.example".format(index), "tag": tags}
            tags.append({"name": "added {}".format(index)})  # the same list, changed
            tags[0]["name"] = "renamed {}".format(index)

    expected = reference_jobs([], items(), 4, 2000000)
    assert actual_jobs([], items(), 4, 2000000) == expected
    assert b"added 4" in expected[0][-1]


@pytest.mark.parametrize("source", [list, tuple, iter])
def test_lists_changed_by_the_consumer_between_jobs_are_encoded_afresh(source):
    def consume(jobs, tags):
        bodies = []
        for body in jobs:
            bodies.append(body)
            tags[0]["name"] = "after {}".format(len(bodies))  # submit's caller could do this
            tags.append({"name": "more"})
        return bodies

    def items(tags):
        return source([{"type": "Host", "summary": "h{}.example".format(i), "tag": tags}
                       for i in range(10)])

    tags = [{"name": "before"}]
    expected = consume(reference_iter([], items(tags), 3, 2000000, []), tags)
    tags = [{"name": "before"}]
    got = consume((job.body for job in iter_jobs([], items(tags), 3, 2000000, [])), tags)
    assert got == expected
    names = [[t["name"] for t in i["tag"]] for b in got for i in json.loads(b)["indicator"]]
    assert names[3] == ["before"] and names[4][0] == "after 1"  # read before / after the yield


def test_serialising_does_not_change_the_items():
    result = build_indicators(generated(300, 5), settings())
    before = copy.deepcopy(result.indicators)
    actual_jobs(result.groups, result.indicators, 5, 2000000)
    assert result.indicators == before


# ---------------------------------------------------------------------- submit uses it

def test_submit_uploads_the_json_modules_bytes():
    config = load_config(pack_config(tc_url="https://tc.invalid/api", threatconnect={
        "batch_max_items": 7, "batch_max_bytes": 4000}))
    client = ThreatConnectClient(config["threatconnect"], sleep=lambda seconds: None)
    adapter = batch_adapter(keep_bodies=True)
    client.session.mount("https://", adapter)
    result = build_indicators(generated(200, 6), settings())
    aggregate = submit(client, result.indicators, result.groups)
    expected, rejected = reference_jobs(result.groups, result.indicators, 7, 4000)
    assert adapter.bodies == expected and not rejected
    assert aggregate["totals"]["success"] == len(result.indicators) + 1

