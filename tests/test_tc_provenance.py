"""Across runs, what ThreatConnect keeps: every submission's provenance, the most restrictive label.

Two submissions that share IOCs are built by the pack and sent in two separate
runs with the pack's default batch settings (attributes Singleton, labels
Append) to the ThreatConnect emulator; its store is then read back.
"""
import copy
import json
import os

import pytest

from lib.config import load_config
from lib.indicators import build_indicators
from lib.tc_submit import submit
from lib.threatconnect import ThreatConnectClient
from tests.emulators.threatconnect import ThreatConnectEmulator
from tests.helpers import TC_ACCESS_ID, TC_OWNER, TC_SECRET_KEY, TC_TOKEN, pack_config

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "results", "emotet_maldoc.json")
SHARED_HOST = "cdn.evil-payload.ru"


def submission(sid, classification, file_name):
    with open(FIXTURE, encoding="utf-8") as handle:
        doc = json.load(handle)
    doc = copy.deepcopy(doc)
    doc["sid"] = sid
    doc["classification"] = classification
    for tag in doc["tags"]:
        tag["classification"] = classification
    doc["metadata"] = dict(doc.get("metadata") or {}, file_path="/q/" + file_name)
    doc["al_url"] = "https://al.example.org/submission/" + sid
    return doc


def send(tc, doc, **mapping):
    config = load_config(pack_config(tc_url=tc.url, mapping=mapping) if mapping else pack_config(tc_url=tc.url))
    built = build_indicators(doc, config)
    client = ThreatConnectClient(config["threatconnect"], sleep=lambda seconds: None)
    aggregate = submit(client, built.indicators, built.groups)
    assert aggregate["totals"]["error"] == 0, aggregate["errors"]
    return built


@pytest.fixture
def tc():
    """A fresh ThreatConnect per test: the store is what the test reads."""
    with ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY, token=TC_TOKEN,
                               owners=[TC_OWNER], queued_polls=0, running_polls=0) as emu:
        yield emu


@pytest.mark.parametrize("first, second", [("TLP:C", "TLP:A"), ("TLP:A", "TLP:C"), ("TLP:G", "TLP:R")])
def test_an_ioc_seen_in_two_submissions_keeps_both_and_the_most_restrictive_label(tc, first, second):
    host = SHARED_HOST
    one = send(tc, submission("1aaaaaaaaaaaaaaaaaaaaa", first, "one.docm"))
    two = send(tc, submission("2bbbbbbbbbbbbbbbbbbbbb", second, "two.docm"))
    record = tc.indicators(TC_OWNER)[host]
    # provenance: associated with both submissions' groups, each with its own Description
    assert record["associatedGroups"] == [one.group_xid, two.group_xid]
    groups = tc.groups(TC_OWNER)
    assert "1aaaaaaaaaaaaaaaaaaaaa" in groups[one.group_xid]["attributes"][0]["value"]
    assert "2bbbbbbbbbbbbbbbbbbbbb" in groups[two.group_xid]["attributes"][0]["value"]
    assert [a["value"] for a in record["attributes"] if a["type"] == "Description"] == \
        ["Latest Assemblyline analysis: two.docm: https://al.example.org/submission/2bbbbbbbbbbbbbbbbbbbbb"]
    # labels: the most restrictive one it was ever given, and nothing that looks shareable
    expected = {("TLP:C", "TLP:A"): ["TLP:AMBER"], ("TLP:A", "TLP:C"): ["TLP:AMBER"],
                ("TLP:G", "TLP:R"): ["TLP:GREEN", "TLP:RED"]}[(first, second)]
    assert record["securityLabels"] == expected
    assert "TLP:CLEAR" not in record["securityLabels"]


def test_a_rerun_of_one_submission_adds_no_attribute_or_association(tc):
    doc = submission("3ccccccccccccccccccccc", "TLP:A", "three.docm")
    send(tc, doc)
    before = tc.indicators(TC_OWNER)[SHARED_HOST]
    send(tc, doc)
    after = tc.indicators(TC_OWNER)[SHARED_HOST]
    assert after["attributes"] == before["attributes"] and after["associatedGroups"] == before["associatedGroups"]
    assert after["securityLabels"] == ["TLP:AMBER"]


def with_attributions(doc):
    doc["tags"] = [t for t in doc["tags"] if not t["type"].startswith("attribution.")] + [
        {"group": "attribution", "type": t, "value": v, "h_type": "malicious", "safelisted": False,
         "classification": doc["classification"], "sha256s": []}
        for t, v in (("attribution.family", "EMOTET"), ("attribution.actor", "TA542"),
                     ("attribution.exploit", "cve-2017-11882"), ("attribution.exploit", "Equation Editor"))]
    return doc


@pytest.mark.parametrize("attribution_groups, expected", [
    (False, {("Vulnerability", "CVE-2017-11882")}),
    (True, {("Vulnerability", "CVE-2017-11882"), ("Malware", "EMOTET"), ("Adversary", "TA542")}),
])
def test_named_groups_are_shared_by_submissions_and_associated_with_their_indicators(tc, attribution_groups,
                                                                                    expected):
    mapping = {"attribution_groups": attribution_groups}
    one = send(tc, with_attributions(submission("4ddddddddddddddddddddd", "TLP:A", "one.docm")), **mapping)
    two = send(tc, with_attributions(submission("5eeeeeeeeeeeeeeeeeeeee", "TLP:A", "two.docm")), **mapping)
    groups = tc.groups(TC_OWNER)
    named = {(g["type"], g["name"]): xid for xid, g in groups.items() if xid not in (one.group_xid, two.group_xid)}
    assert set(named) == expected  # one per name, however many submissions named it
    record = tc.indicators(TC_OWNER)[SHARED_HOST]
    assert set(record["associatedGroups"]) == {one.group_xid, two.group_xid} | set(named.values())
    send(tc, with_attributions(submission("5eeeeeeeeeeeeeeeeeeeee", "TLP:A", "two.docm")), **mapping)
    assert len(tc.groups(TC_OWNER)) == len(groups)  # a rerun adds no group
