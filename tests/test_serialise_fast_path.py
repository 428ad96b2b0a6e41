"""The batch serialiser's fast path (``_ItemEncoder`` in ``iter_jobs``) against the plain encoder.

``iter_jobs`` must give, byte for byte, the bodies (and the rejections) of the
reference below: one plain ``json.JSONEncoder`` call per item, which is what
it did before the fast path. Inputs are build output from the realistic
fixtures, a larger generated submission, the same items re-parsed from JSON
(nothing shared), and odd items that must take the fallback.
"""
import collections
import copy
import itertools
import json
import os
import random
import sys

import pytest

from lib import threatconnect
from lib.config import load_config
from lib.indicators import build_indicators
from lib.threatconnect import ThreatConnectClient, _encode_item, _ItemEncoder, iter_jobs
from tests.helpers import MappingView as View, batch_adapter, pack_config

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "results")
FIXTURE_NAMES = sorted(os.listdir(FIXTURES))
LIMITS = [(25000, 2000000), (3, 2000000), (25000, 1500), (2, 900)]


def reference_iter(groups, indicators, max_items, max_bytes, rejected):
    """The bodies iter_jobs yielded before the fast path, in the same streaming order."""
    parts = {"group": [], "indicator": []}
    size, count = threatconnect._BODY_OVERHEAD, 0

    def body():
        return b"".join((b'{"group":[', b",".join(parts["group"]), b'],"indicator":[',
                         b",".join(parts["indicator"]), b"]}"))

    tagged = itertools.chain((("group", g) for g in groups), (("indicator", i) for i in indicators))
    for kind, item in tagged:
        data = threatconnect._serialise(kind, item, max_bytes, rejected)  # the plain encoder
        if data is None:
            continue
        if count and (count >= max_items or size + len(data) + 1 > max_bytes):
            yield body()
            parts = {"group": [], "indicator": []}
            size, count = threatconnect._BODY_OVERHEAD, 0
        parts[kind].append(data)
        size += len(data) + 1
        count += 1
    if count:
        yield body()


def reference_jobs(groups, indicators, max_items, max_bytes):
    """(bodies, rejected) as iter_jobs made them before the fast path."""
    rejected = []
    return list(reference_iter(groups, indicators, max_items, max_bytes, rejected)), rejected


def fast_jobs(groups, indicators, max_items, max_bytes):
    rejected = []
    jobs = list(iter_jobs(groups, indicators, max_items, max_bytes, rejected))
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
        assert fast_jobs(groups, indicators, max_items, max_bytes) == expected
        assert fast_jobs(iter(groups), iter(indicators), max_items, max_bytes) == expected


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


def test_build_output_takes_the_shared_path():
    result = build_indicators(generated(500, 3), settings())
    encoder = _ItemEncoder()
    texts = [encoder(item) for item in result.indicators]
    assert texts == [_encode_item(item) for item in result.indicators]
    assert encoder._sharing and len(encoder._texts) < len(result.indicators) / 4


def test_unshared_items_are_identical_and_switch_to_the_plain_path():
    result = build_indicators(generated(2000, 4), settings(max_indicators_per_submission=100000))
    parsed = json.loads(json.dumps(result.indicators))  # what an action gets from st2
    assert_same(result.groups, parsed, LIMITS[:2])
    encoder = _ItemEncoder()
    assert [encoder(item) for item in parsed] == [_encode_item(item) for item in parsed]
    assert not encoder._sharing


# ---------------------------------------------------------------------- odd items

class Sub(dict):
    pass




class Text(str):
    pass


def odd_items():
    shared = [{"name": "Assemblyline"}]
    circular = []
    circular.append(circular)
    return [
        {"type": "Host", "summary": "a.example", "tag": shared, "rating": 3},
        {"type": "Host", "summary": "b.example", "tag": shared, "rating": 3.5},  # same keys, float
        {"type": "Host", "summary": "c.example", "tag": shared, "rating": True},
        {"type": "Host", "summary": "d.example", "tag": shared, "rating": None},
        {"type": "Host", "summary": Text("e.example"), "tag": shared, "rating": 1},
        {"type": "Host", "summary": "f.example", "tag": tuple(shared), "rating": 1},
        {"type": "Host", "summary": "nan.example", "tag": shared, "rating": float("nan")},
        {"type": "Host", "summary": "inf.example", "rating": float("inf")},
        {"type": "Host", "summary": "obj.example", "tag": shared, "extra": object()},
        {"type": "Host", "summary": "set.example", "tag": [set()]},
        {"type": "Host", "summary": "circular.example", "tag": circular},
        {"type": "Host", "summary": "surrogate\ud800.example", "tag": shared},
        {"type": "Host", "summary": "ünï\u2028\"\\\n\x00.example", "tag": shared},
        {1: "int key", None: "none key", True: "bool key", 2.5: "float key"},
        {"100%": "per%cent", "%s%d": "%%", "é\"": "\t", "": ""},
        {},
        {"only": None},
        {"only": [None, True, False, 0, -1, 10 ** 30, 1.25, "x", [], {}]},
        {"nested": {"tag": shared, "n": {"deep": [shared, shared]}}, "tag": shared},
        {"big": 10 ** 40, "neg": -7, "zero": 0, "bools": [True, False], "tag": shared},
        Sub(type="Host", summary="sub.example", tag=shared),
        collections.OrderedDict(type="Host", summary="ordered.example", tag=shared),
        View({"type": "Host", "summary": "view.example"}),
        7, "text", None, ["a", "list"],
        {"type": "Host", "summary": "huge.example", "description": "x" * 3000},
        {"type": "Host", "summary": "last.example", "tag": shared, "rating": 3},
    ]


def test_odd_items_are_encoded_or_rejected_exactly_as_before():
    items = odd_items()
    for max_items, max_bytes in [(25000, 2000000), (2, 2000), (1, 2000)]:
        expected = reference_jobs([{"type": "Report", "name": "r", "xid": "x"}], items,
                                  max_items, max_bytes)
        assert fast_jobs([{"type": "Report", "name": "r", "xid": "x"}], items, max_items,
                         max_bytes) == expected
        assert expected[1]  # some were rejected


def test_every_odd_item_alone_matches_the_plain_encoder():
    for item in odd_items():
        encoder = _ItemEncoder()
        try:
            expected = _encode_item(item)
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)):
                encoder(item)
            continue
        assert encoder(item) == expected
        assert encoder(item) == expected  # and again, from the memo and the shape cache


def test_huge_int_text_limit_behaves_like_the_plain_encoder():
    item = {"type": "Host", "summary": "x.example", "size": 10 ** 5000}
    assert fast_jobs([], [item], 10, 2000000)[1] == reference_jobs([], [item], 10, 2000000)[1]


def test_many_shapes_fall_back_but_stay_identical():
    shared = [{"name": "t"}]
    items = [{"k{}".format(i): "v", "tag": shared, "n": i} for i in range(150)]
    assert_same([], items, LIMITS[:1])


def test_shared_list_in_different_positions_and_items():
    shared = [{"name": "t"}, {"name": "ü"}]
    other = [1, 2]
    items = [{"a": shared, "b": other}, {"b": shared, "a": other}, {"a": shared, "b": shared},
             {"a": other, "b": other, "c": shared}] * 5
    assert_same([], items)


# ---------------------------------------------------------------------- the memo's validity

def test_lists_changed_between_generator_items_are_encoded_as_they_are_then():
    def items():
        tags = [{"name": "first"}]
        for index in range(6):
            yield {"type": "Host", "summary": "h{}.example".format(index), "tag": tags}
            tags.append({"name": "added {}".format(index)})  # the same list, changed
            tags[0]["name"] = "renamed {}".format(index)

    expected = reference_jobs([], items(), 4, 2000000)
    assert fast_jobs([], items(), 4, 2000000) == expected
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


def test_a_mapping_item_between_dicts_drops_the_memo():
    tags = [{"name": "before"}]

    class Changing(View):  # the plain encoder refuses it; its label is read with get()
        def __getitem__(self, key):
            tags[0]["name"] = "changed"
            return super().__getitem__(key)

    items = [{"type": "Host", "summary": "a.example", "tag": tags},
             {"type": "Host", "summary": "a2.example", "tag": tags},  # now in the memo
             Changing({"type": "Host"}),
             {"type": "Host", "summary": "b.example", "tag": tags}]
    bodies, rejected = fast_jobs([], items, 10, 2000000)
    assert len(rejected) == 1
    assert json.loads(bodies[0])["indicator"][-1]["tag"] == [{"name": "changed"}]


def test_serialising_does_not_change_the_items():
    result = build_indicators(generated(300, 5), settings())
    before = copy.deepcopy(result.indicators)
    fast_jobs(result.groups, result.indicators, 5, 2000000)
    assert result.indicators == before


# ---------------------------------------------------------------------- submit uses it

def test_submit_uploads_the_plain_encoders_bytes():
    config = load_config(pack_config(tc_url="https://tc.invalid/api", threatconnect={
        "batch_max_items": 7, "batch_max_bytes": 4000}))
    client = ThreatConnectClient(config["threatconnect"], sleep=lambda seconds: None)
    adapter = batch_adapter(keep_bodies=True)
    client.session.mount("https://", adapter)
    result = build_indicators(generated(200, 6), settings())
    aggregate = client.submit(result.indicators, result.groups)
    expected, rejected = reference_jobs(result.groups, result.indicators, 7, 4000)
    assert adapter.bodies == expected and not rejected
    assert aggregate["totals"]["success"] == len(result.indicators) + 1


def test_the_python_fallback_encoder_is_identical(monkeypatch):
    """Without the C encoder (other interpreters) the plain path is JSONEncoder itself."""
    monkeypatch.setattr(threatconnect, "_c_make_encoder", None)
    result = build_indicators(fixture(FIXTURE_NAMES[0]), settings())
    assert_same(result.groups, result.indicators + odd_items(), LIMITS[:2])


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's json accelerator")
def test_the_c_encoder_is_used():
    assert threatconnect._new_c_encoder() is not None
