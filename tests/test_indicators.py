"""lib.indicators and lib.tc_values: Assemblyline results -> ThreatConnect V2 batch items.

Inputs are realistic results documents (tests/fixtures/results/*.json, the
shape ``get_submission_results`` returns) and single tags built with ``tag()``.
Settings always come from the real schema through ``load_config``, so the
defaults tested here are the ones operators get.
"""
import copy
import ipaddress
import json
import os
import random
from urllib.parse import urlsplit

import idna
import pytest

from lib.config import load_config
from lib.errors import ConfigError, InputError
from lib.indicators import (
    DEFAULT_RATING_TABLE, GROUP_REQUIRED_FIELDS, MAX_GROUP_NAME_LENGTH, BuildResult,
    build_indicators, group_xid, score_h_type, tc_datetime)
from lib import tc_values
from lib.tc_values import ValueRejected

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "results")
SID = "4aBcDeFgHiJkLmNoPqRsTu"
SHA_DOC = "e72240293b20f14a8b500c9e45238e1ae766ebeb55055a00f26b1e32e524a74f"
SHA_A = "a" * 64
SHA_B = "b" * 64


def settings(owner="Org", **mapping):
    """The validated pack config (schema defaults applied) with mapping overrides."""
    raw = {
        "assemblyline": {"url": "https://al.example.org", "user": "st2", "api_key": "k:s"},
        "threatconnect": {"api_url": "https://tc.example/api", "owner": owner, "api_token": "t"},
    }
    if mapping:
        raw["mapping"] = mapping
    return load_config(raw)


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return json.load(handle)


def tag(tag_type, value, h_type="malicious", safelisted=False, classification="TLP:C",
        sha256s=(SHA_A,)):
    group = "attribution" if tag_type.startswith(("attribution.", "av.")) else "ioc"
    return {"group": group, "type": tag_type, "value": value, "h_type": h_type,
            "safelisted": safelisted, "classification": classification,
            "sha256s": list(sha256s)}


def results(tags=(), files=None, **extra):
    """A minimal completed submission around ``tags``; the File stays under min_file_score."""
    doc = {
        "sid": SID, "state": "completed", "max_score": 100, "verdict": "info", "error_count": 0,
        "partial": False, "classification": "TLP:C",
        "submitted_at": "2026-11-22T10:00:00.000000Z",
        "metadata": {"file_path": "/data/drop/a.exe", "hostname": "edr-7"},
        "files": files if files is not None else [
            {"name": "a.exe", "sha256": SHA_A, "md5": "1" * 32, "sha1": "2" * 40, "size": 1234,
             "type": "executable/windows/pe32", "extracted": False, "parent_sha256": None}],
        "tags": list(tags),
        "al_url": "https://al.example.org/submission/" + SID,
    }
    doc.update(extra)
    return doc


def build(tags=(), conf=None, **extra):
    return build_indicators(results(tags, **extra), conf or settings())


def summaries(result, tc_type=None):
    return [i["summary"] for i in result.indicators if tc_type is None or i["type"] == tc_type]


def rejected_reasons(result):
    return {r["value"]: r["reason"] for r in result.rejected}


# --------------------------------------------------------------------------- mapping table

@pytest.mark.parametrize("tag_type, value, tc_type, summary", [
    ("network.static.ip", "185.220.101.47", "Address", "185.220.101.47"),
    ("network.dynamic.ip", "8.26.56.26", "Address", "8.26.56.26"),
    ("network.static.ip", "2001:4860:4860::8888", "Address", "2001:4860:4860:0:0:0:0:8888"),
    ("network.dynamic.ip", "2A03:2880:F10C:0083:FACE:B00C:0000:25DE", "Address",
     "2a03:2880:f10c:83:face:b00c:0:25de"),
    ("network.dynamic.ip", "2a00:1450:4001:0829::200e", "Address", "2a00:1450:4001:829:0:0:0:200e"),
    ("network.dynamic.ip", "::ffff:185.220.101.47", "Address", "185.220.101.47"),
    ("network.static.ip", " 185.220.101.47 ", "Address", "185.220.101.47"),
    ("network.static.domain", "Update-Office365.COM", "Host", "update-office365.com"),
    ("network.dynamic.domain", "update-office365.com.", "Host", "update-office365.com"),
    ("network.static.domain", "Bücher.example", "Host", "xn--bcher-kva.example"),
    ("network.static.domain", "MÜNCHEN.de", "Host", "xn--mnchen-3ya.de"),
    ("network.static.domain", "пример.рф", "Host", "xn--e1afmkfd.xn--p1ai"),
    ("network.static.domain", "xn--bcher-kva.example", "Host", "xn--bcher-kva.example"),
    ("network.static.domain", "faß.de", "Host", "xn--fa-hia.de"),
    ("network.static.uri", "HTTP://Evil.Example.COM/Path/A.php?Q=Mixed&x=1#Frag", "URL",
     "http://evil.example.com/Path/A.php?Q=Mixed&x=1#Frag"),
    ("network.dynamic.uri", "https://Bücher.example/kaufen?id=1", "URL",
     "https://xn--bcher-kva.example/kaufen?id=1"),
    ("network.static.uri", "http://[2001:4860::8888]:8080/gate.php", "URL",
     "http://[2001:4860:0:0:0:0:0:8888]:8080/gate.php"),
    ("network.static.uri", "http://185.220.101.47:8080/gate.php", "URL",
     "http://185.220.101.47:8080/gate.php"),
    ("network.static.uri", "ftp://User:Pw@files.evil.example.com/drop.zip", "URL",
     "ftp://User:Pw@files.evil.example.com/drop.zip"),
    ("network.static.uri", "https://evil.example.com", "URL", "https://evil.example.com"),
    ("network.static.uri", "https://evil.example.com?q=1", "URL", "https://evil.example.com?q=1"),
    ("network.static.uri", "https://evil.example.com/%7Euser/ä?x=%41", "URL",
     "https://evil.example.com/%7Euser/ä?x=%41"),
    ("network.email.address", "Billing@Update-Office365.COM", "EmailAddress",
     "Billing@update-office365.com"),
    ("network.email.address", "rechnung@Bücher.example", "EmailAddress",
     "rechnung@xn--bcher-kva.example"),
    ("network.email.address", "first.last+tag@evil.example.com", "EmailAddress",
     "first.last+tag@evil.example.com"),
    ("network.static.domain", "c2_beacon.duckdns.org", "Host", "c2_beacon.duckdns.org"),
    ("network.static.uri", "http://bad_host.example.com/", "URL", "http://bad_host.example.com/"),
    ("network.static.uri", "http://evil.example.com:80/a", "URL", "http://evil.example.com/a"),
    ("network.static.uri", "https://evil.example.com:443", "URL", "https://evil.example.com"),
    ("network.static.uri", "wss://evil.example.com:0443/", "URL", "wss://evil.example.com/"),
    ("network.static.uri", "ftp://evil.example.com:21/x", "URL", "ftp://evil.example.com/x"),
    ("network.static.uri", "http://evil.example.com:/a", "URL", "http://evil.example.com/a"),
    ("network.static.uri", "https://evil.example.com:80/", "URL", "https://evil.example.com:80/"),
    ("network.static.uri", "http://evil.example.com\\@good.example.org/x", "URL",
     "http://evil.example.com\\@good.example.org/x"),
    ("network.static.uri", "tcp://185.220.101.47:4444", "Address", "185.220.101.47"),
    ("network.static.uri", "smb://files.evil.example.com/share", "Host", "files.evil.example.com"),
    ("network.static.uri", "udp://[2a00:1450:4001::200e]:53", "Address", "2a00:1450:4001:0:0:0:0:200e"),
])
def test_each_tag_type_maps_to_its_tc_type_and_normal_form(tag_type, value, tc_type, summary):
    result = build([tag(tag_type, value)])
    assert [(i["type"], i["summary"]) for i in result.indicators] == [(tc_type, summary)]
    assert result.rejected == []


@pytest.mark.parametrize("tag_type, value, summary", [
    ("network.static.domain", "evil[.]example[.]com", "evil.example.com"),
    ("network.static.domain", "evil(.)example{.}com", "evil.example.com"),
    ("network.static.domain", "evil[DOT]example(dot)com", "evil.example.com"),
    ("network.static.ip", "185.220.101[.]47", "185.220.101.47"),
    ("network.static.ip", "2a00:1450[:]4001::200e", "2a00:1450:4001:0:0:0:0:200e"),
    ("network.static.uri", "hxxp://evil[.]example[.]com/a[.]b?c=[.]", "http://evil.example.com/a[.]b?c=[.]"),
    ("network.static.uri", "HXXPS[://]evil.example.com/x", "https://evil.example.com/x"),
    ("network.static.uri", "hxxps[:]//evil.example.com/x", "https://evil.example.com/x"),
    ("network.static.uri", "fxp://files.evil.example.com/a.zip", "ftp://files.evil.example.com/a.zip"),
    ("network.email.address", "billing[at]evil[.]example.com", "billing@evil.example.com"),
    ("network.email.address", "billing[@]evil.example.com", "billing@evil.example.com"),
])
def test_defanged_values_are_refanged_and_counted(tag_type, value, summary):
    result = build([tag(tag_type, value)])
    assert summaries(result) == [summary]
    assert result.counts["refanged"] == 1


def test_plain_values_are_not_counted_as_refanged():
    result = build([tag("network.static.uri", "HTTP://EVIL.example.com/a(1)[2]")])
    assert summaries(result) == ["http://evil.example.com/a(1)[2]"]
    assert result.counts["refanged"] == 0


@pytest.mark.parametrize("tag_type, value, reason", [
    ("network.static.ip", "256.10.10.10", "invalid_ip"),
    ("network.static.ip", "010.8.8.8", "invalid_ip"),
    ("network.static.ip", "185.220.101", "invalid_ip"),
    ("network.static.ip", "185.220.101.47/24", "invalid_ip"),
    ("network.static.ip", "1.2.3.4.5", "invalid_ip"),
    ("network.static.ip", "١٢.1.1.1", "invalid_ip"),
    ("network.dynamic.ip", "fe80::1%eth0", "invalid_ip"),
    ("network.dynamic.ip", "2001:db8::g", "invalid_ip"),
    ("network.dynamic.ip", "1:2:3:4:5:6:7:8:9", "invalid_ip"),
    ("network.static.domain", "a" * 64 + ".example.com", "invalid_host"),
    ("network.static.domain", ".".join(["abcdefghij"] * 23) + ".com", "too_long"),
    ("network.static.domain", "evil.c_m", "invalid_host"),
    ("network.static.domain", "-leading.example.com", "invalid_host"),
    ("network.static.domain", "trailing-.example.com", "invalid_host"),
    ("network.static.domain", "example.123", "invalid_host"),
    ("network.static.domain", "185.220.101.47", "invalid_host"),
    ("network.static.domain", "a..b.example.com", "invalid_host"),
    ("network.static.domain", ".example.com", "invalid_host"),
    ("network.static.domain", "xn--zz-9ba.com", "invalid_host"),
    ("network.static.domain", "☃☃☃.example", "invalid_host"),
    ("network.static.domain", "evil[x]example.com", "invalid_host"),
    ("network.static.domain", "", "invalid_host"),
    ("network.static.uri", "evil.example.com/no/scheme", "invalid_url"),
    ("network.static.uri", "file:///C:/Windows/evil.exe", "unsupported_scheme"),
    ("network.static.uri", "tcp://:4444", "unsupported_scheme"),
    ("network.static.uri", "http://us er@evil.example.com/", "invalid_url"),
    ("network.static.uri", "http://u^x@evil.example.com/", "invalid_url"),
    ("network.static.uri", "http://evil.c_m/", "invalid_url"),
    ("network.static.uri", "http:///only/path", "invalid_url"),
    ("network.static.uri", "http://evil.example.com:99999/", "invalid_url"),
    ("network.static.uri", "http://evil.example.com:80a/", "invalid_url"),
    ("network.static.uri", "http://evil.example.com/a b", "invalid_url"),
    ("network.static.uri", "http://evil.example.com/a\tb", "invalid_url"),
    ("network.static.uri", "http://evil.example.com/" + "x" * 600, "too_long"),
    ("network.static.uri", "http://[2001:db8::zz]/", "invalid_url"),
    ("network.static.uri", "http://[2001:4860::8888/", "invalid_url"),
    ("network.static.uri", "http://300.1.2.3/", "invalid_url"),
    ("network.static.uri", "http://%65vil.example.com/", "invalid_url"),
    ("network.email.address", "no-at-sign.example.com", "invalid_email"),
    ("network.email.address", "two@@example.com", "invalid_email"),
    ("network.email.address", ".dot@example.com", "invalid_email"),
    ("network.email.address", "a..b@example.com", "invalid_email"),
    ("network.email.address", '"quoted"@example.com', "invalid_email"),
    ("network.email.address", "user@[185.220.101.47]", "invalid_email"),
    ("network.email.address", "user@bad_domain.com", "invalid_email"),
    ("network.email.address", "x" * 65 + "@example.com", "invalid_email"),
    ("network.email.address", "x" * 10 + "@" + ".".join(["a" * 61] * 4) + ".com", "too_long"),
])
def test_invalid_values_are_rejected_with_a_reason_never_sent(tag_type, value, reason):
    result = build([tag(tag_type, value), tag("network.static.domain", "still-sent.example.com")])
    assert summaries(result) == ["still-sent.example.com"]
    assert result.rejected == [{"value": value, "type": tag_type, "reason": reason,
                                "detail": result.rejected[0]["detail"]}]
    assert result.rejected[0]["detail"]
    assert result.counts["rejected"] == 1


def test_malformed_fixture_rejects_every_bad_value_and_keeps_the_good_one():
    doc = fixture("malformed_values.json")
    result = build_indicators(doc, settings(include_extracted_files=True))
    assert summaries(result, "Host") == ["evil-but-valid.example.com", "under_score.example.com"]
    assert summaries(result, "Address") == ["185.220.101.47"]  # from tcp://185.220.101.47:4444
    assert summaries(result, "URL") == summaries(result, "EmailAddress") == []
    # every tag but the three valid ones, plus the extracted file with broken hashes
    assert len(result.rejected) == len(doc["tags"]) - 3 + 1
    reasons = rejected_reasons(result)
    assert reasons["evil.example.com"] == "unknown_h_type"
    assert reasons["12345"] == "malformed_tag"
    assert reasons["zz" + doc["files"][0]["sha256"][2:]] == "invalid_hash"
    assert result.counts["rejected"] == len(result.rejected)
    assert result.rejected == sorted(result.rejected, key=lambda r: (r["type"], r["value"], r["reason"]))


def test_rejected_values_are_truncated_for_the_report():
    value = "http://evil.example.com/" + "y" * 5000
    result = build([tag("network.static.uri", value)])
    entry = result.rejected[0]
    assert entry["reason"] == "too_long"
    assert entry["value"].startswith(value[:1000]) and "more]" in entry["value"]


@pytest.mark.parametrize("attributions", [[], [tag("attribution.family", "EMOTET", sha256s=[SHA_A])]])
def test_malformed_tags_are_rejected_not_raised(attributions):
    odd = {"type": "network.static.ip", "h_type": "malicious"}
    result = build(attributions + [
        "not a tag", dict(odd, value=["1.2.3.4"]),
        dict(odd, value="185.220.101.47", sha256s=SHA_A),
        dict(odd, value="185.220.101.48", sha256s=5),
        dict(odd, value="185.220.101.49", sha256s=[["nested"], SHA_A]),
        dict(odd, value="185.220.101.49", sha256s=[{"x": 1}]),
        {"type": "attribution.actor", "value": "TA542", "h_type": "malicious", "sha256s": 7},
        {"type": "attribution.actor", "value": None, "h_type": "malicious"}])
    assert summaries(result) == ["185.220.101.47", "185.220.101.48", "185.220.101.49"]
    assert sorted(r["reason"] for r in result.rejected) == ["invalid_tag", "malformed_tag",
                                                           "malformed_tag"]
    tags = {i["summary"]: [t["name"] for t in i["tag"]] for i in result.indicators}
    expected = ["Assemblyline"] + (["EMOTET"] if attributions else []) + ["TA542"]
    assert tags["185.220.101.47"] == tags["185.220.101.49"] == expected


def test_other_tag_types_are_not_indicators():
    result = build([tag("file.behavior", "Process injection"), tag("technique.obfuscation", "XOR"),
                    tag("network.port", "4444"), tag("network.static.uri_path", "/gate.php")])
    assert result.indicators == []
    assert result.counts["not_indicator"] == 4
    assert result.rejected == []


# --------------------------------------------------------------------------- filters

PRIVATE_VALUES = [
    ("network.dynamic.ip", "10.0.0.5"), ("network.dynamic.ip", "172.16.4.1"),
    ("network.dynamic.ip", "172.31.255.255"), ("network.dynamic.ip", "192.168.1.10"),
    ("network.dynamic.ip", "127.0.0.1"), ("network.dynamic.ip", "169.254.169.254"),
    ("network.dynamic.ip", "100.64.0.1"), ("network.dynamic.ip", "0.0.0.0"),
    ("network.dynamic.ip", "224.0.0.251"), ("network.dynamic.ip", "239.255.255.250"),
    ("network.dynamic.ip", "255.255.255.255"), ("network.dynamic.ip", "240.0.0.1"),
    ("network.dynamic.ip", "192.0.2.10"), ("network.dynamic.ip", "198.51.100.7"),
    ("network.dynamic.ip", "203.0.113.9"), ("network.dynamic.ip", "198.18.0.1"),
    ("network.dynamic.ip", "::1"), ("network.dynamic.ip", "::"),
    ("network.dynamic.ip", "fe80::1c2b:3aff:fe4d:5e6f"), ("network.dynamic.ip", "fd12:3456:789a::1"),
    ("network.dynamic.ip", "ff02::fb"), ("network.dynamic.ip", "2001:db8::1"),
    ("network.dynamic.ip", "::ffff:192.168.1.1"), ("network.dynamic.ip", "fec0::1"),
    ("network.dynamic.ip", "64:ff9b::808:808"),
    ("network.static.domain", "localhost"), ("network.static.domain", "wpad"),
    ("network.static.domain", "WPAD."), ("network.static.domain", "fileserver.corp.local"),
    ("network.static.domain", "nas.localdomain"), ("network.static.domain", "db.internal"),
    ("network.static.domain", "printer.lan"), ("network.static.domain", "router.home.arpa"),
    ("network.static.domain", "app.localhost"),
    ("network.static.uri", "http://192.168.1.10/share/update.exe"),
    ("network.static.uri", "http://[::1]:8080/"), ("network.static.uri", "http://intranet/"),
    ("network.static.uri", "https://wiki.corp.local/page"),
    ("network.email.address", "admin@fileserver.corp.local"),
    ("network.email.address", "root@localhost"),
]


@pytest.mark.parametrize("tag_type, value", PRIVATE_VALUES)
def test_private_addresses_and_local_names_are_dropped_and_counted(tag_type, value):
    result = build([tag(tag_type, value)])
    assert result.indicators == [] and result.rejected == []
    assert result.counts["private"] == 1


def test_private_values_are_kept_when_the_filter_is_off():
    conf = settings(drop_private_addresses=False)
    result = build([tag(t, v) for t, v in PRIVATE_VALUES], conf)
    assert result.counts["private"] == 0
    assert len(result.indicators) == len(PRIVATE_VALUES) - 1  # WPAD. and wpad merge
    assert "192.168.1.1" in summaries(result, "Address")  # the IPv4-mapped one


@pytest.mark.parametrize("value", [
    "8.8.8.8", "1.1.1.1", "185.220.101.47", "100.128.0.1", "192.0.3.1", "172.32.0.1",
    "2a00:1450:4001:829::200e", "2606:4700::6810:85e5", "2002:c000:0204::1",
])
def test_public_addresses_pass(value):
    assert len(build([tag("network.static.ip", value)]).indicators) == 1


def test_safelisted_tags_are_dropped_unless_configured():
    tags = [tag("network.static.domain", "microsoft.com", safelisted=True),
            tag("network.dynamic.ip", "8.8.8.8", safelisted=True),
            tag("attribution.family", "NOTMALWARE", safelisted=True)]
    result = build(tags)
    assert result.indicators == [] and result.counts["safelisted"] == 3
    kept = build(tags, settings(drop_safelisted=False))
    assert summaries(kept) == ["8.8.8.8", "microsoft.com"]
    assert kept.indicators[0]["tag"] == [{"name": "Assemblyline"}, {"name": "NOTMALWARE"}]


@pytest.mark.parametrize("min_h_type, expected", [
    ("malicious", ["m.example.com"]),
    ("suspicious", ["m.example.com", "s.example.com"]),
    ("info", ["i.example.com", "m.example.com", "s.example.com"]),
    ("safe", ["i.example.com", "m.example.com", "s.example.com", "z.example.com"]),
])
def test_h_type_threshold(min_h_type, expected):
    tags = [tag("network.static.domain", name[0] + ".example.com", h_type=name)
            for name in ("malicious", "suspicious", "info")]
    tags.append(tag("network.static.domain", "z.example.com", h_type="safe"))
    result = build(tags, settings(min_h_type=min_h_type))
    assert summaries(result) == expected
    assert result.counts["below_h_type"] == 4 - len(expected)


def test_unknown_h_type_is_rejected():
    result = build([tag("network.static.domain", "evil.example.com", h_type="highly_suspicious")])
    assert rejected_reasons(result) == {"evil.example.com": "unknown_h_type"}


def test_default_filters_on_the_realistic_fixture():
    result = build_indicators(fixture("emotet_maldoc.json"), settings())
    assert [(i["type"], i["summary"]) for i in result.indicators] == [
        ("Address", "185.220.101.47"),
        ("Address", "2a03:2880:f10c:83:face:b00c:0:25de"),
        ("Address", "45.77.12.3"),
        ("EmailAddress", "Accounts.Payable@evil-payload.ru"),
        ("EmailAddress", "billing@update-office365.com"),
        ("File", "693dee7ac5d2b63afb9cb6381416e67b : a48e2a8f2e450c9b3d3e6280f60cca511350fb9e : "
                 + SHA_DOC),
        ("Host", "bad_host.update-office365.com"),  # '_' is valid in a host name
        ("Host", "cdn.evil-payload.ru"),
        ("Host", "update-office365.com"),
        ("Host", "xn--bcher-kva.example"),
        ("URL", "http://185.220.101.47:8080/gate.php"),
        ("URL", "http://update-office365.com/inv/Invoice.php?id=7731"),
        ("URL", "https://cdn.evil-payload.ru/p/stage2.ps1"),
    ]
    counts = result.counts
    assert (counts["Address"], counts["EmailAddress"], counts["File"], counts["Host"],
            counts["URL"]) == (3, 2, 1, 4, 3)
    assert (counts["safelisted"], counts["below_h_type"], counts["private"], counts["rejected"],
            counts["duplicate"], counts["refanged"], counts["not_indicator"],
            counts["attribution"]) == (2, 3, 7, 1, 3, 2, 2, 5)
    assert rejected_reasons(result) == {"300.1.2.3": "invalid_ip"}
    assert counts["tags_total"] == 34


# --------------------------------------------------------------------------- duplicates

def test_static_and_dynamic_duplicates_merge_with_highest_h_type_and_all_files_tags():
    tags = [tag("network.static.domain", "update-office365.com", h_type="suspicious", sha256s=[SHA_A]),
            tag("network.dynamic.domain", "UPDATE-OFFICE365.COM.", h_type="malicious", sha256s=[SHA_B]),
            tag("attribution.family", "EMOTET", sha256s=[SHA_A]),
            tag("attribution.actor", "TA542", sha256s=[SHA_B])]
    result = build(tags)
    assert len(result.indicators) == 1
    host = result.indicators[0]
    assert host["summary"] == "update-office365.com"
    assert (host["rating"], host["confidence"]) == (4, 80)  # malicious wins
    assert host["tag"] == [{"name": "Assemblyline"}, {"name": "EMOTET"}, {"name": "TA542"}]
    assert result.counts["duplicate"] == 1


def test_duplicates_across_files_and_spellings_merge():
    tags = [tag("network.static.uri", "https://cdn.evil-payload.ru/p/stage2.ps1", sha256s=[SHA_A]),
            tag("network.dynamic.uri", "HTTPS://CDN.Evil-Payload.RU/p/stage2.ps1", sha256s=[SHA_B]),
            tag("network.static.uri", "hxxps://cdn.evil-payload[.]ru/p/stage2.ps1", sha256s=[SHA_B]),
            tag("network.dynamic.ip", "2A03:2880:F10C::25DE"),
            tag("network.static.ip", "2a03:2880:f10c:0:0:0:0:25de")]
    result = build(tags)
    assert summaries(result) == ["2a03:2880:f10c:0:0:0:0:25de", "https://cdn.evil-payload.ru/p/stage2.ps1"]
    assert result.counts["duplicate"] == 3


def test_path_case_is_significant_in_urls():
    tags = [tag("network.static.uri", "https://evil.example.com/A"),
            tag("network.dynamic.uri", "https://evil.example.com/a")]
    assert summaries(build(tags)) == ["https://evil.example.com/A", "https://evil.example.com/a"]


# --------------------------------------------------------------------------- enrichment

def test_default_rating_table():
    assert DEFAULT_RATING_TABLE == {"malicious": {"rating": 4, "confidence": 80},
                                    "suspicious": {"rating": 3, "confidence": 60},
                                    "info": {"rating": 1, "confidence": 30},
                                    "safe": {"rating": 0, "confidence": 10}}
    tags = [tag("network.static.domain", h + ".example.com", h_type=h)
            for h in ("malicious", "suspicious", "info", "safe")]
    result = build(tags, settings(min_h_type="safe"))
    assert {i["summary"]: (i["rating"], i["confidence"]) for i in result.indicators} == {
        "malicious.example.com": (4, 80), "suspicious.example.com": (3, 60),
        "info.example.com": (1, 30), "safe.example.com": (0, 10)}


def test_configured_rating_table_falls_back_to_threatconnect_defaults():
    conf = settings(rating_table={"malicious": {"rating": 5, "confidence": 95},
                                  "suspicious": {"rating": 2}})
    conf["threatconnect"]["default_rating"] = 1
    conf["threatconnect"]["default_confidence"] = 42
    tags = [tag("network.static.domain", h + ".example.com", h_type=h)
            for h in ("malicious", "suspicious", "info")]
    result = build(tags, dict(conf, mapping=dict(conf["mapping"], min_h_type="info")))
    assert {i["summary"]: (i["rating"], i["confidence"]) for i in result.indicators} == {
        "malicious.example.com": (5, 95), "suspicious.example.com": (2, 42),
        "info.example.com": (1, 42)}


@pytest.mark.parametrize("table", [
    {"critical": {"rating": 5}},
    {"malicious": {"rating": 6}},
    {"malicious": {"rating": "4"}},
    {"malicious": {"confidence": 101}},
    {"malicious": 4},
])
def test_bad_rating_table_is_a_config_error(table):
    with pytest.raises(ConfigError) as error:
        build([tag("network.static.domain", "evil.example.com")], settings(rating_table=table))
    assert "rating_table" in str(error.value)


def test_file_rating_follows_the_submission_score():
    for score, expected in ((2310, (4, 80)), (999, (3, 60)), (300, (3, 60))):
        result = build(max_score=score, verdict="malicious")
        assert [(i["rating"], i["confidence"]) for i in result.indicators] == [expected]


@pytest.mark.parametrize("score, verdict, expected", [
    (1000, None, "malicious"), (700, None, "suspicious"), (300, None, "suspicious"),
    (299, None, "info"), (0, None, "info"), (-10, None, "safe"), (None, "malicious", "malicious"),
    (None, "highly_suspicious", "suspicious"), (None, "nonsense", None), (None, None, None),
])
def test_score_h_type(score, verdict, expected):
    assert score_h_type(score, verdict) == expected


def test_attribution_tags_are_bounded_ordered_and_trimmed():
    long_name = "Family " + "x" * 200
    tags = [tag("network.static.domain", "evil.example.com"),
            tag("av.virus_name", "Win.Trojan.Emotet-9953000-0"),
            tag("attribution.actor", "TA542", h_type="suspicious"),
            tag("attribution.family", "EMOTET"),
            tag("attribution.family", "emotet"),  # same tag, other case
            tag("attribution.implant", "  CobaltStrike\n Beacon "),
            tag("attribution.family", long_name),
            tag("attribution.campaign", "E5", h_type="info")]  # below min_h_type
    names = [t["name"] for t in build(tags).indicators[0]["tag"]]
    assert names == ["Assemblyline", "EMOTET", ("Family " + "x" * 200)[:128], "CobaltStrike Beacon",
                     "Win.Trojan.Emotet-9953000-0", "TA542"]
    assert all(len(n) <= 128 for n in names)
    bounded = build(tags, settings(max_attribution_tags=2)).indicators[0]["tag"]
    assert [t["name"] for t in bounded] == ["Assemblyline", "EMOTET", ("Family " + "x" * 200)[:128]]
    none = build(tags, settings(max_attribution_tags=0)).indicators[0]["tag"]
    assert none == [{"name": "Assemblyline"}]


def test_attribution_tags_follow_the_files_that_produced_the_indicator():
    tags = [tag("network.static.domain", "a.example.com", sha256s=[SHA_A]),
            tag("network.static.domain", "b.example.com", sha256s=[SHA_B]),
            tag("network.static.domain", "c.example.com", sha256s=[]),
            tag("attribution.family", "EMOTET", sha256s=[SHA_A]),
            tag("attribution.family", "QAKBOT", sha256s=[SHA_B]),
            tag("attribution.actor", "TA570", sha256s=[])]  # no file: applies everywhere
    result = build(tags)
    by_host = {i["summary"]: [t["name"] for t in i["tag"]] for i in result.indicators}
    assert by_host == {"a.example.com": ["Assemblyline", "EMOTET", "TA570"],
                       "b.example.com": ["Assemblyline", "QAKBOT", "TA570"],
                       "c.example.com": ["Assemblyline", "EMOTET", "QAKBOT", "TA570"]}
    assert [t["name"] for t in result.groups[0]["tag"]] == ["Assemblyline", "EMOTET", "QAKBOT", "TA570"]


def test_source_tag_is_configurable_and_can_be_empty():
    result = build([tag("network.static.domain", "evil.example.com")], settings(source_tag="AL-Prod"))
    assert result.indicators[0]["tag"] == [{"name": "AL-Prod"}]
    result = build([tag("network.static.domain", "evil.example.com")], settings(source_tag=""))
    assert result.indicators[0]["tag"] == []


def test_description_attribute_links_back_and_names_the_file():
    result = build_indicators(fixture("emotet_maldoc.json"), settings())
    url = "https://al.example.org/submission/" + SID
    for indicator in result.indicators:
        assert indicator["attribute"] == [{
            "type": "Description", "displayed": True,
            "value": "Latest Assemblyline analysis: Invoice_2026-11-22.docm: " + url}]
    group_value = result.groups[0]["attribute"][0]["value"]
    assert group_value == ("Assemblyline analysis of Invoice_2026-11-22.docm (submission {}, score 2310, "
                           "verdict malicious, sha256 {}): {}".format(SID, SHA_DOC, url))


def test_description_without_al_url_names_the_submission():
    result = build([tag("network.static.domain", "evil.example.com")], al_url=None)
    assert result.indicators[0]["attribute"][0]["value"] == \
        "Latest Assemblyline analysis: a.exe, submission " + SID


@pytest.mark.parametrize("classification, labels, expected", [
    ("TLP:C", None, ""),       # permissive labels are not sent by default (see below)
    ("TLP:CLEAR", None, ""),
    ("TLP:W", None, ""),
    ("tlp:g", None, "TLP:GREEN"),
    ("TLP:A", None, "TLP:AMBER"),
    ("TLP:A+S", None, "TLP:AMBER+STRICT"),
    ("TLP:R", None, "TLP:RED"),
    ("TLP:A", {"TLP:A": "Org Internal"}, "Org Internal"),
    ("TLP:C", {"TLP:A": "Org Internal"}, None),
    ("RESTRICTED//REL TO CA", None, None),
    ("TLP:A//REL TO ORG", None, "TLP:AMBER"),  # dissemination controls: the level decides
    ("tlp:amber // rel", None, "TLP:AMBER"),
    ("TLP:A//REL", {"TLP:A//REL": "Partners"}, "Partners"),  # an exact entry wins
])
def test_classification_to_security_label(classification, labels, expected):
    conf = settings(classification_labels=labels) if labels is not None else settings()
    result = build([tag("network.static.domain", "evil.example.com", classification=classification)],
                   conf, classification=classification)
    indicator = result.indicators[0]
    if expected == "":
        assert "securityLabel" not in indicator and "securityLabel" not in result.groups[0]
        assert result.counts["unmapped_classification"] == 0
    elif expected is None:
        assert "securityLabel" not in indicator
        assert result.counts["unmapped_classification"] == 1
        assert any(classification in warning for warning in result.warnings)
        assert "securityLabel" not in result.groups[0]
    else:
        assert indicator["securityLabel"] == [{"name": expected}]
        assert result.groups[0]["securityLabel"] == [{"name": expected}]
        assert result.counts["unmapped_classification"] == 0


def test_classification_mapped_to_empty_means_no_label_on_purpose():
    conf = settings(classification_labels={"TLP:C": "", "TLP:A": "TLP:AMBER"})
    result = build([tag("network.static.domain", "evil.example.com")], conf)
    assert "securityLabel" not in result.indicators[0]
    assert result.counts["unmapped_classification"] == 0 and result.warnings == []


def test_mixed_classifications_use_the_submission_classification():
    tags = [tag("network.static.domain", "evil.example.com", classification="TLP:C"),
            tag("network.dynamic.domain", "evil.example.com", classification="TLP:A")]
    result = build(tags, classification="TLP:R")
    assert result.indicators[0]["securityLabel"] == [{"name": "TLP:RED"}]
    missing = build([tag("network.static.domain", "evil.example.com", classification=None)],
                    classification="TLP:A")
    assert missing.indicators[0]["securityLabel"] == [{"name": "TLP:AMBER"}]


def test_no_classification_at_all_is_not_counted_as_unmapped():
    result = build([tag("network.static.domain", "evil.example.com", classification=None)],
                   classification=None)
    assert "securityLabel" not in result.indicators[0]
    assert result.counts["unmapped_classification"] == 0 and result.warnings == []


# --------------------------------------------------------------------------- caps

def test_cap_keeps_highest_h_type_then_type_summary_order_and_counts_overflow():
    tags = [tag("network.static.domain", "s{}.example.com".format(i), h_type="suspicious")
            for i in range(5)]
    tags += [tag("network.static.uri", "http://m.example.com/{}".format(i)) for i in range(2)]
    tags.append(tag("network.static.ip", "185.220.101.{}".format(47), h_type="suspicious"))
    result = build(tags, settings(max_indicators_per_submission=4))
    assert [(i["type"], i["summary"]) for i in result.indicators] == [
        ("Address", "185.220.101.47"), ("Host", "s0.example.com"),
        ("URL", "http://m.example.com/0"), ("URL", "http://m.example.com/1")]
    assert result.overflow == result.counts["overflow"] == 4
    assert result.to_dict()["overflow"] == 4


def test_cap_covers_the_file_indicator_too():
    tags = [tag("network.static.domain", "s{}.example.com".format(i), h_type="suspicious")
            for i in range(3)]
    result = build(tags, settings(max_indicators_per_submission=1), max_score=1200)
    assert [i["type"] for i in result.indicators] == ["File"]  # malicious beats suspicious
    assert result.overflow == 3


def test_no_overflow_under_the_cap():
    result = build_indicators(fixture("emotet_maldoc.json"), settings())
    assert result.overflow == 0


# --------------------------------------------------------------------------- File indicators

def test_submitted_file_indicator_fields():
    result = build_indicators(fixture("emotet_maldoc.json"), settings())
    (file_indicator,) = [i for i in result.indicators if i["type"] == "File"]
    assert file_indicator["md5"] == "693dee7ac5d2b63afb9cb6381416e67b"
    assert file_indicator["sha1"] == "a48e2a8f2e450c9b3d3e6280f60cca511350fb9e"
    assert file_indicator["sha256"] == SHA_DOC
    assert file_indicator["summary"] == " : ".join(
        (file_indicator["md5"], file_indicator["sha1"], file_indicator["sha256"]))
    assert file_indicator["size"] == 1147
    assert file_indicator["fileOccurrence"] == [{
        "fileName": "Invoice_2026-11-22.docm", "date": "2026-11-22T10:00:00Z"}]
    assert file_indicator["securityLabel"] == [{"name": "TLP:AMBER"}]
    assert [t["name"] for t in file_indicator["tag"]] == ["Assemblyline", "Win.Trojan.Emotet-9953000-0"]
    assert list(file_indicator)[:4] == ["type", "summary", "rating", "confidence"]


def test_the_ingest_directory_is_sent_only_when_asked_for():
    doc = fixture("emotet_maldoc.json")
    for send, expected in ((None, None), (False, None), (True, "/data/drop/finance")):
        conf = settings() if send is None else settings(send_file_path=send)
        (file_indicator,) = [i for i in build_indicators(doc, conf).indicators if i["type"] == "File"]
        assert file_indicator["fileOccurrence"][0].get("path") == expected
        assert file_indicator["fileOccurrence"][0]["fileName"] == "Invoice_2026-11-22.docm"


def test_windows_file_path_occurrence():
    doc = fixture("clean_pdf.json")
    result = build_indicators(doc, settings(min_file_score=0, send_file_path=True))
    (file_indicator,) = result.indicators
    assert file_indicator["fileOccurrence"] == [{
        "fileName": "brochure.pdf", "path": "C:\\Users\\jdoe\\Downloads", "date": "2026-11-21T08:30:12Z"}]
    assert (file_indicator["rating"], file_indicator["confidence"]) == (1, 30)  # score 0: info


@pytest.mark.parametrize("score, min_file_score, expected", [
    (2310, 300, 1), (300, 300, 1), (299, 300, 0), (0, 0, 1), (-100, 0, 0), (None, 300, 0),
])
def test_file_indicator_score_threshold(score, min_file_score, expected):
    result = build(max_score=score, verdict=None, conf=settings(min_file_score=min_file_score))
    assert result.counts["File"] == expected
    assert result.counts["file_below_min_score"] == 1 - expected


def test_extracted_files_are_optional():
    doc = fixture("emotet_maldoc.json")
    default = build_indicators(doc, settings())
    assert default.counts["File"] == 1
    extracted = build_indicators(doc, settings(include_extracted_files=True))
    files = [i for i in extracted.indicators if i["type"] == "File"]
    assert len(files) == 3
    by_name = {i["fileOccurrence"][0]["fileName"]: i for i in files}
    assert set(by_name) == {"Invoice_2026-11-22.docm", "payload.dll", "stage2.ps1"}
    dll = by_name["payload.dll"]
    assert dll["fileOccurrence"] == [{"fileName": "payload.dll", "date": "2026-11-22T10:00:00Z"}]
    assert [t["name"] for t in dll["tag"]] == ["Assemblyline", "EMOTET", "Win.Trojan.Emotet-9953000-0",
                                               "TA542"]
    assert [i["summary"] for i in files] == sorted(i["summary"] for i in files)


def test_extracted_file_uses_its_own_score_when_given():
    files = [{"name": "a.exe", "sha256": SHA_A, "extracted": False},
             {"name": "icon.png", "sha256": SHA_B, "extracted": True, "score": 0},
             {"name": "evil.dll", "sha256": "c" * 64, "extracted": True, "score": 1500}]
    result = build(files=files, max_score=1500, conf=settings(include_extracted_files=True))
    assert [i["sha256"] for i in result.indicators] == [SHA_A, "c" * 64]
    assert result.counts["file_below_min_score"] == 1


@pytest.mark.parametrize("include_extracted", [False, True])
def test_a_second_submitted_file_is_not_treated_as_extracted(include_extracted):
    expected = [SHA_A, SHA_B]
    files = [{"name": "a.exe", "sha256": SHA_A, "extracted": False},
             {"name": "b.exe", "sha256": SHA_B, "extracted": False}]
    result = build(files=files, max_score=1500, conf=settings(include_extracted_files=include_extracted))
    assert sorted(i["sha256"] for i in result.indicators) == sorted(expected)
    by_sha = {i["sha256"]: i for i in result.indicators}
    assert by_sha[SHA_A]["fileOccurrence"][0]["fileName"] == "a.exe"  # the ingested path names the first
    assert by_sha[SHA_B]["fileOccurrence"][0]["fileName"] == "b.exe"


@pytest.mark.parametrize("entry", ["a.exe", 42, None, ["a.exe", SHA_A]])
def test_a_files_entry_that_is_not_an_object_is_counted_and_listed(entry):
    files = [{"name": "a.exe", "sha256": SHA_A, "extracted": False}, entry]
    result = build(files=files, max_score=1500)
    assert [i["sha256"] for i in result.indicators] == [SHA_A]
    assert result.counts["rejected"] == 1
    assert [(r["type"], r["reason"]) for r in result.rejected] == [("file", "invalid_file_entry")]


def test_same_file_twice_becomes_one_file_indicator_with_all_hashes():
    files = [{"name": "a.exe", "sha256": SHA_A.upper(), "extracted": False, "size": 5},
             {"name": "copy.exe", "sha256": SHA_A, "md5": "1" * 32, "extracted": True}]
    result = build(files=files, max_score=1500, conf=settings(include_extracted_files=True))
    (file_indicator,) = result.indicators
    assert file_indicator["summary"] == "1" * 32 + " : " + SHA_A
    assert file_indicator["md5"] == "1" * 32 and file_indicator["size"] == 5
    assert [o["fileName"] for o in file_indicator["fileOccurrence"]] == ["a.exe", "copy.exe"]


@pytest.mark.parametrize("hashes", [
    {"sha256": "z" * 64}, {"sha256": SHA_A[:63]}, {"sha256": SHA_A, "md5": "1" * 31},
    {"sha256": SHA_A, "sha1": "g" * 40}, {"sha256": SHA_A, "md5": 12345}, {},
])
def test_bad_file_hashes_reject_the_file(hashes):
    files = [dict({"name": "a.exe", "extracted": False}, **hashes)]
    result = build(files=files, max_score=1500)
    assert result.indicators == []
    assert [r["reason"] for r in result.rejected] == ["invalid_hash"]
    assert result.rejected[0]["type"] == "file"


# --------------------------------------------------------------------------- groups

@pytest.mark.parametrize("group_type", sorted(GROUP_REQUIRED_FIELDS))
def test_one_group_per_submission_with_the_required_fields(group_type):
    result = build_indicators(fixture("emotet_maldoc.json"), settings(group_type=group_type))
    (group,) = result.groups
    assert group["type"] == group_type
    assert group["xid"] == result.group_xid == group_xid(SID, group_type, "Org")
    assert group["name"] == "Assemblyline {}: Invoice_2026-11-22.docm".format(SID)
    expected = {"Report": {"fileName": "Invoice_2026-11-22.docm", "publishDate": "2026-11-22T10:00:00Z"},
                "Incident": {"eventDate": "2026-11-22T10:00:00Z", "status": "New"},
                "Event": {"eventDate": "2026-11-22T10:00:00Z"},
                "Document": {"fileName": "Invoice_2026-11-22.docm"},
                "Malware": {}, "Threat": {}}[group_type]
    for field, value in expected.items():
        assert group[field] == value
    for field in ("fileName", "publishDate", "eventDate", "status"):
        if field not in expected:
            assert field not in group
    assert "malware" not in group  # a Document with malware: true would need a password
    for indicator in result.indicators:
        assert indicator["associatedGroups"] == [{"groupXid": group["xid"]}]


def test_group_xid_is_deterministic_and_scoped():
    xid = group_xid(SID, "Report", "Org")
    assert xid == group_xid(SID, "Report", "Org")
    assert xid.startswith("assemblyline_threatconnect:report:" + SID + ":")
    assert len(xid) <= 100
    assert xid != group_xid(SID, "Incident", "Org")
    assert xid != group_xid(SID, "Report", "Other Org")
    assert xid != group_xid("5aBcDeFgHiJkLmNoPqRsTu", "Report", "Org")
    assert build(conf=settings(owner="Org")).group_xid == xid


def test_group_name_is_bounded():
    doc = results(metadata={"file_path": "/data/" + "n" * 300 + ".exe"})
    group = build_indicators(doc, settings()).groups[0]
    assert len(group["name"]) <= MAX_GROUP_NAME_LENGTH and group["name"].endswith("...")
    assert len(group["fileName"]) <= 255


def test_group_is_created_even_without_indicators():
    result = build_indicators(fixture("clean_pdf.json"), settings())
    assert result.indicators == [] and len(result.groups) == 1


@pytest.mark.parametrize("submitted_at", [None, "", "yesterday"])
def test_dated_group_types_need_submitted_at(submitted_at):
    with pytest.raises(InputError, match="submitted_at"):
        build(submitted_at=submitted_at)
    assert build(submitted_at=submitted_at, conf=settings(group_type="Malware")).groups


@pytest.mark.parametrize("text, expected", [
    ("2026-11-22T10:00:00.000000Z", "2026-11-22T10:00:00Z"),
    ("2026-11-22T10:00:00.123Z", "2026-11-22T10:00:00Z"),
    ("2026-11-22T10:00:00.1234567Z", "2026-11-22T10:00:00Z"),
    ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z"),
    ("2026-11-22T12:00:00+02:00", "2026-11-22T10:00:00Z"),
    ("2026-11-22T10:00:00", "2026-11-22T10:00:00Z"),
    ("2026-11-22", "2026-11-22T00:00:00Z"),
    ("22/11/2026", None), (None, None), (1700000000, None),
])
def test_tc_datetime(text, expected):
    assert tc_datetime(text) == expected


# --------------------------------------------------------------------------- determinism and shape

def test_same_input_same_output_and_input_order_does_not_matter():
    doc = fixture("emotet_maldoc.json")
    conf = settings(include_extracted_files=True)
    first = json.dumps(build_indicators(doc, conf).to_dict(), sort_keys=False)
    assert json.dumps(build_indicators(doc, conf).to_dict(), sort_keys=False) == first
    rnd = random.Random(7)
    for _ in range(5):
        shuffled = copy.deepcopy(doc)
        rnd.shuffle(shuffled["tags"])
        for entry in shuffled["tags"]:
            rnd.shuffle(entry["sha256s"])
        assert json.dumps(build_indicators(shuffled, conf).to_dict(), sort_keys=False) == first


def test_indicators_are_sorted_by_type_then_summary():
    result = build_indicators(fixture("emotet_maldoc.json"), settings(include_extracted_files=True))
    keys = [(i["type"], i["summary"]) for i in result.indicators]
    assert keys == sorted(keys)


def test_input_is_not_modified():
    doc = fixture("emotet_maldoc.json")
    before = copy.deepcopy(doc)
    build_indicators(doc, settings(include_extracted_files=True))
    assert doc == before


def test_result_is_plain_json():
    result = build_indicators(fixture("emotet_maldoc.json"), settings())
    assert isinstance(result, BuildResult)
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"indicators", "groups", "rejected", "counts", "overflow", "group_xid", "warnings"}
    assert result.batch_body() == {"indicator": result.indicators, "group": result.groups}
    allowed = {"type", "summary", "rating", "confidence", "tag", "securityLabel", "attribute",
               "associatedGroups", "md5", "sha1", "sha256", "size", "fileOccurrence", "firstSeen", "lastSeen",
               "associatedIndicators"}
    for indicator in result.indicators:
        assert set(indicator) <= allowed
        assert isinstance(indicator["rating"], int) and 0 <= indicator["rating"] <= 5
        assert isinstance(indicator["confidence"], int) and 0 <= indicator["confidence"] <= 100


def test_counts_always_have_every_key():
    counts = build().counts
    assert set(counts) == {"Address", "EmailAddress", "File", "Host", "Mutex", "Registry Key", "URL",
                           "User Agent", "safelisted",
                           "below_h_type", "rejected", "private", "file_below_min_score", "overflow",
                           "tags_total", "not_indicator", "attribution", "duplicate", "refanged",
                           "unmapped_classification", "unlabelled"}


def test_warnings_for_unfinished_submissions():
    result = build(state="submitted", partial=True)
    assert len(result.warnings) == 2


@pytest.mark.parametrize("doc", [
    None, [], "4aBc", {"tags": []}, {"sid": ""}, {"sid": "../../etc"}, {"sid": "x" * 65},
    {"sid": SID, "tags": "network.static.ip"}, {"sid": SID, "files": {"a": 1}},
])
def test_unusable_results_raise_input_error(doc):
    with pytest.raises(InputError):
        build_indicators(doc, settings())


@pytest.mark.parametrize("mapping", [
    {"min_h_type": "critical"}, {"group_type": "Campaign"}, {"max_indicators_per_submission": 0},
    {"classification_labels": {"TLP:C": 1}}, {"max_attribution_tags": -1},
])
def test_unusable_settings_raise_config_error(mapping):
    conf = settings()
    conf["mapping"].update(mapping)
    with pytest.raises(ConfigError):
        build([tag("network.static.domain", "evil.example.com")], conf)


@pytest.mark.parametrize("name", ["disable", "enable", "freeze", "unfreeze", "collect", "set_threshold"])
def test_the_build_leaves_the_garbage_collector_alone(monkeypatch, name):
    import gc

    def refuse(*args, **kwargs):
        raise AssertionError("the build called gc." + name)

    monkeypatch.setattr(gc, name, refuse)
    result = build_indicators(fixture("emotet_maldoc.json"), settings(include_extracted_files=True))
    assert result.indicators and gc.isenabled()


def test_a_host_is_normalised_once_per_build(monkeypatch):
    from lib import tc_values
    seen = []
    normalise = tc_values.normalise_host
    monkeypatch.setattr(tc_values, "normalise_host", lambda value: seen.append(value) or normalise(value))
    result = build([tag("network.static.domain", "evil.example.com"),
                    tag("network.dynamic.domain", "evil.example.com"),
                    tag("network.static.uri", "http://evil.example.com/a"),
                    tag("network.static.uri", "https://evil.example.com/b?c"),
                    tag("network.email.address", "x@evil.example.com"),
                    tag("network.static.uri", "tcp://evil.example.com:4444")])
    assert seen == ["evil.example.com"]
    assert [(i["type"], i["summary"]) for i in result.indicators] == [
        ("EmailAddress", "x@evil.example.com"), ("Host", "evil.example.com"),
        ("URL", "http://evil.example.com/a"), ("URL", "https://evil.example.com/b?c")]
    build([tag("network.static.domain", "evil.example.com")])  # a new build, a new memory
    assert seen == ["evil.example.com"] * 2


@pytest.mark.parametrize("name", ["emotet_maldoc.json", "malformed_values.json", "clean_pdf.json"])
def test_the_build_creates_no_reference_cycles(name):
    """Reference counting alone frees what the build made (no cycles for the collector)."""
    import gc
    doc = fixture(name)
    doc["tags"] += [tag("network.static.domain", "bad_name.example"),  # rejected values too
                    tag("network.static.ip", "10.0.0.1"), tag("network.static.uri", "tcp://x"),
                    tag("attribution.family", " "), {"type": "network.static.ip"}, 7]
    conf = settings(include_extracted_files=True)  # (jsonschema's resolver makes cycles)
    gc.collect()
    gc.disable()
    try:
        result = build_indicators(doc, conf)
        assert result.rejected
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_tag_lists_are_shared_by_content():
    tags = [tag("network.static.domain", "a.example.com", sha256s=[SHA_A]),
            tag("network.static.domain", "b.example.com", sha256s=[SHA_B]),
            tag("network.static.domain", "c.example.com", sha256s=[SHA_A, SHA_B]),
            tag("attribution.family", "EMOTET", sha256s=[])]
    indicators = build(tags).indicators
    assert indicators[0]["tag"] == [{"name": "Assemblyline"}, {"name": "EMOTET"}]
    assert indicators[0]["tag"] is indicators[1]["tag"] is indicators[2]["tag"]
    assert indicators[0]["attribute"] is indicators[2]["attribute"]


def test_tags_that_are_not_plain_dicts_read_like_dicts():
    from collections import OrderedDict

    from tests.helpers import MappingView as View

    plain = [tag("network.static.domain", "a.example.com"), tag("network.static.ip", "8.8.4.4"),
             tag("attribution.family", "EMOTET"),
             {"type": "network.static.uri", "value": "https://c.example.com/x", "h_type": "malicious"},
             {"type": "network.static.domain", "value": "d.example.com", "h_type": "malicious",
              "sha256s": SHA_A}]
    odd = [View(plain[0]), OrderedDict(plain[1]), View(plain[2]), View(plain[3]), dict(plain[4])]
    assert json.dumps(build(odd).to_dict()) == json.dumps(build(plain).to_dict())
    assert json.dumps(build(plain + odd).to_dict()) == json.dumps(build(plain + plain).to_dict())


# --------------------------------------------------------------------------- tc_values vs stdlib and idna

ASCII_HOSTS = ["evil.example.com", "EVIL.Example.COM", "a-b.c-d.example", "xn--bcher-kva.example",
               "1.2.3.com", "123.example", "a" * 63 + ".com", "x.y", "ab--cd.example",
               "under_score.com", "-a.com", "a-.com", "a..com", "a" * 64 + ".com", "xn--zz-9ba.com"]


@pytest.mark.parametrize("host", ASCII_HOSTS)
def test_ascii_host_fast_path_agrees_with_idna(host):
    """Where idna (IDNA 2008 + UTS 46) accepts a name, the fast path gives the same answer.

    Known, deliberate differences: idna refuses "??--" labels that are not
    xn-- (we accept them: they resolve, and malware uses them).
    """
    try:
        expected = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        expected = None
    try:
        got = tc_values.normalise_host(host)
    except ValueRejected:
        got = None
    if host == "ab--cd.example":
        assert (expected, got) == (None, "ab--cd.example")
    elif host == "under_score.com":  # idna refuses '_'; DNS names (C2, dynamic DNS) use it
        assert (expected, got) == (None, "under_score.com")
    else:
        assert got == expected


def test_ipv4_fast_path_agrees_with_ipaddress():
    rnd = random.Random(3)
    networks = [ipaddress.ip_network(n) for n in tc_values.NON_PUBLIC_IPV4]
    samples = ["{}.{}.{}.{}".format(*(rnd.randint(0, 255) for _ in range(4))) for _ in range(3000)]
    samples += [str(n.network_address) for n in networks] + [str(n.broadcast_address) for n in networks]
    samples += [str(n.network_address - 1) for n in networks[1:]]
    samples += [str(n.broadcast_address + 1) for n in networks[:-1]]
    for text in samples:
        address = ipaddress.IPv4Address(text)
        assert tc_values.normalise_ip(text) == (str(address), not any(address in n for n in networks))


def test_ipv6_form_is_full_lowercase_without_leading_zeros():
    rnd = random.Random(5)
    for _ in range(500):
        address = ipaddress.IPv6Address(rnd.getrandbits(128))
        text, _ = tc_values.normalise_ip(address.compressed.upper())
        if text.count(".") == 3:  # IPv4-mapped
            continue
        assert ipaddress.IPv6Address(text) == address
        groups = text.split(":")
        assert len(groups) == 8 and all(g == g.lower() and (g == "0" or g[0] != "0") for g in groups)


def test_ipv6_c_parser_never_accepts_what_ipaddress_refuses():
    """The inet_pton fast path must agree with ipaddress wherever it accepts a value."""
    rnd = random.Random(11)
    alphabet = "0123456789abcdefABCDEF:."
    samples = ["1::2:3:4:5:6:7", "::ffff:1.2.3.4", "::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "01234::",
               "::ffff:01.2.3.4", "1:2:3:4:5:6:7::", ":1::", "1:::2", "1::2::3", "::ffff:256.1.1.1"]
    for _ in range(20000):
        address = ipaddress.IPv6Address(rnd.getrandbits(128) >> rnd.choice((0, 64, 96, 112)))
        text = rnd.choice((address.compressed, address.exploded))
        index = rnd.randrange(len(text))
        samples.append(text[:index] + rnd.choice(alphabet) + text[index + 1:])
        samples.append("".join(rnd.choice(alphabet) for _ in range(rnd.randint(2, 20))))
    for text in samples:
        if ":" not in text:  # the IPv4 path
            continue
        try:
            expected = ipaddress.IPv6Address(text)
        except ValueError:
            expected = None
        try:
            got, _ = tc_values.normalise_ip(text)
        except ValueRejected:
            assert expected is None, text
            continue
        if expected is None:
            raise AssertionError("accepted {!r}, which ipaddress refuses".format(text))
        mapped = expected.ipv4_mapped
        assert ipaddress.ip_address(got) == (mapped if mapped is not None else expected), text


@pytest.mark.parametrize("url", [
    "http://evil.example.com/a/b?c=d#e", "https://user:pw@evil.example.com:8443", "ftp://h.example.com?x",
    "http://h.example.com#frag/x", "HTTP://H.example.com/P", "http://[2001:db8::1]:80/x",
    "http://h.example.com/a:b@c", "wss://h.example.com/",
])
def test_split_url_matches_urlsplit(url):
    scheme, netloc, rest = tc_values.split_url(url)
    parts = urlsplit(url)
    assert (scheme, netloc) == (parts.scheme, parts.netloc)
    expected_rest = parts.path + ("?" + parts.query if parts.query else "") \
        + ("#" + parts.fragment if parts.fragment else "")
    assert rest == expected_rest and url.endswith(rest)


@pytest.mark.parametrize("value, expected", [
    ("  Emotet \t loader ", "Emotet loader"), ("a\x00b", "ab"), ("x" * 200, "x" * 128), ("", ""),
    (None, ""), (42, ""),
])
def test_tag_name(value, expected):
    assert tc_values.tag_name(value) == expected


@pytest.mark.parametrize("kind, value, expected", [
    ("md5", "D41D8CD98F00B204E9800998ECF8427E", "d41d8cd98f00b204e9800998ecf8427e"),
    ("sha1", " da39a3ee5e6b4b0d3255bfef95601890afd80709 ", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("sha256", "0x" + "a" * 62, None), ("sha256", "a" * 63 + "_", None), ("md5", "a" * 40, None),
])
def test_normalise_hash(kind, value, expected):
    if expected is None:
        with pytest.raises(ValueRejected):
            tc_values.normalise_hash(kind, value)
    else:
        assert tc_values.normalise_hash(kind, value) == expected


# -- review fixes: unhashable fields, cut tags ---------------------------------------

@pytest.mark.parametrize("field, value", [("type", ["network.static.domain"]), ("h_type", {"x": 1}),
                                          ("type", None)])
def test_unhashable_or_missing_tag_fields_are_rejected_not_raised(field, value):
    bad = tag("network.static.domain", "bad.example.com")
    bad[field] = value
    result = build([bad, tag("network.static.domain", "good.example.com")])
    assert [i["summary"] for i in result.indicators] == ["good.example.com"]
    [rejected] = result.rejected
    assert rejected["value"] == "bad.example.com"
    assert rejected["reason"] == ("malformed_tag" if field == "type" else "unknown_h_type")
    assert result.counts["rejected"] == 1


def test_unhashable_h_type_on_an_attribution_tag_is_rejected():
    bad = tag("attribution.family", "EMOTET")
    bad["h_type"] = ["malicious"]
    result = build([bad, tag("network.static.domain", "good.example.com")])
    assert result.rejected[0]["reason"] == "unknown_h_type"
    assert [t["name"] for t in result.indicators[0]["tag"]] == ["Assemblyline"]


def test_tags_cut_by_get_submission_results_are_named_in_a_warning():
    result = build([tag("network.static.domain", "evil.example.com")],
                   truncated={"files": 0, "tags": 250, "metadata": 0})
    assert any("250 tags were cut" in w and "max_tags" in w for w in result.warnings)
    assert not any("were cut" in w for w in build([tag("network.static.domain", "e.example.com")]).warnings)


def test_shape_results_keeps_indicator_tags_when_max_tags_cuts():
    from lib.al_results import shape_results
    behaviours = {"file.behavior": [["behaviour {:04d}".format(i), "info", False, "TLP:C"]
                                    for i in range(1000)]}
    summary = {"classification": "TLP:C", "map": {}, "tags": {
        "behavior": behaviours,
        "attribution": {"attribution.family": [["EMOTET", "malicious", False, "TLP:C"]]},
        "ioc": {"network.static.domain": [["evil.com", "malicious", False, "TLP:C"]]}}}
    full = {"sid": SID, "state": "completed", "max_score": 2000, "files": [],
            "times": {"submitted": "2026-11-22T10:00:00.000000Z"}}
    shaped = shape_results(summary, full, "https://al.example.org/submission/" + SID, max_tags=1000)
    assert [t["value"] for t in shaped["tags"][:2]] == ["evil.com", "EMOTET"]
    assert shaped["truncated"]["tags"] == 2 and len(shaped["tags"]) == 1000
    result = build_indicators(dict(results(), **shaped), settings())
    assert [i["summary"] for i in result.indicators if i["type"] == "Host"] == ["evil.com"]
    assert any("2 tags were cut" in w for w in result.warnings)


def _summary_of(tags):
    by_group = {}
    for group, tag_type, value, h_type, safelisted in tags:
        by_group.setdefault(group, {}).setdefault(tag_type, []).append([value, h_type, safelisted, "TLP:C"])
    return {"classification": "TLP:C", "map": {}, "tags": by_group}


# (max_tags, mapping) -> values kept, in order, and what was cut by h_type
@pytest.mark.parametrize("max_tags, mapping, kept, cut", [
    (3, {}, ["http://evil.com/gate", "EMOTET", "sus.top"], {"info": 300, "malicious": 1}),
    (2, {}, ["http://evil.com/gate", "EMOTET"], {"info": 300, "malicious": 1, "suspicious": 1}),
    # drop_safelisted off: the safelisted malicious domain is mapped, so it ranks with the malicious
    (3, {"drop_safelisted": False}, ["microsoft.com", "http://evil.com/gate", "EMOTET"],
     {"info": 300, "suspicious": 1}),
    # min_h_type info: info tags are mapped, so they rank above the safelisted one
    (303, {"min_h_type": "info"}, None, {"malicious": 1}),
])
def test_max_tags_cuts_what_the_mapping_drops_first_then_the_least_severe(max_tags, mapping, kept, cut):
    from lib.al_results import TagOrder, shape_results
    tags = [("ioc", "network.static.domain", "info-{:03d}.example.com".format(i), "info", False)
            for i in range(300)]
    tags += [("ioc", "network.static.domain", "microsoft.com", "malicious", True),
             ("ioc", "network.static.domain", "sus.top", "suspicious", False),
             ("attribution", "attribution.family", "EMOTET", "malicious", False),
             ("ioc", "network.static.uri", "http://evil.com/gate", "malicious", False)]
    full = {"sid": SID, "state": "completed", "max_score": 2000, "files": [],
            "times": {"submitted": "2026-11-22T10:00:00.000000Z"}}
    conf = settings(**mapping)
    shaped = shape_results(_summary_of(tags), full, "https://al.example.org/submission/" + SID,
                           max_tags=max_tags, order=TagOrder.from_mapping(conf["mapping"]))
    if kept is not None:
        assert [t["value"] for t in shaped["tags"]] == kept
    assert shaped["truncated"]["tags"] == len(tags) - max_tags
    assert shaped["truncated"]["tags_by_h_type"] == cut
    result = build_indicators(dict(results(), **shaped), conf)
    assert "http://evil.com/gate" in summaries(result, "URL")
    [warning] = [w for w in result.warnings if "were cut" in w]
    assert "{} tags were cut".format(len(tags) - max_tags) in warning
    assert all("{} {}".format(n, h) in warning for h, n in cut.items())


@pytest.mark.parametrize("value, kept", [
    ("http://10.1.2.3\\@evil.example.com/", False),   # a browser contacts 10.1.2.3: private
    ("http://evil.example.com\\@10.1.2.3/", True),    # and here evil.example.com
    ("http://10.1.2.3@evil.example.com/", True),       # userinfo, not the host
    ("tcp://10.1.2.3:4444", False),                   # a non-web URI's private address
])
def test_the_private_filter_applies_to_the_host_a_browser_would_contact(value, kept):
    result = build([tag("network.static.uri", value)])
    assert (len(result.indicators) == 1) is kept
    assert result.counts["private"] == (0 if kept else 1)


def test_a_non_web_uri_and_a_domain_tag_for_the_same_host_make_one_host():
    result = build([tag("network.static.uri", "smb://files.evil.example.com/share"),
                    tag("network.static.domain", "files.evil.example.com")])
    assert [(i["type"], i["summary"]) for i in result.indicators] == [("Host", "files.evil.example.com")]
    assert result.counts["duplicate"] == 1 and result.rejected == []


@pytest.mark.parametrize("flag, dropped", [
    (True, True), ("true", True), ("TRUE", True), (False, False), ("false", False), ("False", False),
    (0, False), (None, False), ("", False), ("no", False),
])
def test_safelisted_is_read_as_a_flag_not_as_truthiness(flag, dropped):
    result = build([dict(tag("network.static.domain", "evil.example.com"), safelisted=flag),
                    dict(tag("attribution.family", "EMOTET"), safelisted=flag)])
    assert (summaries(result, "Host") == []) is dropped
    assert result.counts["safelisted"] == (2 if dropped else 0)


def test_safelisted_string_in_a_summary_tuple_is_a_flag():
    from lib.al_results import shape_results
    summary = {"classification": "TLP:C", "map": {}, "tags": {"ioc": {"network.static.domain": [
        ["evil.example.com", "malicious", "false", "TLP:C"], ["good.example.com", "malicious", "true", "TLP:C"]]}}}
    full = {"sid": SID, "state": "completed", "max_score": 2000, "files": []}
    shaped = shape_results(summary, full, "https://al.example.org/submission/" + SID)
    assert {t["value"]: t["safelisted"] for t in shaped["tags"]} == {"evil.example.com": False,
                                                                      "good.example.com": True}


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_submission_score_is_refused_by_name(score):
    with pytest.raises(InputError, match="max_score must be a finite number"):
        build(max_score=score)


def test_a_non_finite_file_score_is_rejected_not_rated():
    files = [{"name": "a.exe", "sha256": SHA_A, "extracted": False, "score": float("nan")}]
    result = build(files=files, max_score=1500)
    assert result.indicators == [] and rejected_reasons(result) == {SHA_A: "invalid_score"}


@pytest.mark.parametrize("sid", ["x" * 65, "y" * 5000, "a:b:c" * 40])
def test_the_group_xid_is_bounded_and_distinct_for_any_sid(sid):
    from lib.indicators import group_xid
    xid = group_xid(sid, "Report", "Org")
    assert len(xid) <= 150 and xid == group_xid(sid, "Report", "Org")
    assert xid != group_xid(sid + "z", "Report", "Org")
    assert group_xid("4aBcDeFgHiJkLmNoPqRsTu", "Report", "Org").count("4aBcDeFgHiJkLmNoPqRsTu") == 1


@pytest.mark.parametrize("classification, label", [("TLP:C", "TLP:CLEAR"), ("TLP:W", "TLP:WHITE")])
def test_permissive_labels_are_sent_when_asked_for(classification, label):
    result = build([tag("network.static.domain", "evil.example.com", classification=classification)],
                   settings(send_permissive_labels=True), classification=classification)
    assert result.indicators[0]["securityLabel"] == [{"name": label}]


@pytest.mark.parametrize("refuse, sent", [(False, 1), (True, 0)])
def test_indicators_without_a_mapped_label_can_be_refused(refuse, sent):
    result = build([tag("network.static.domain", "evil.example.com", classification="SECRET//X"),
                    tag("network.static.domain", "ok.example.com", classification="TLP:A")],
                   settings(refuse_unlabelled=refuse), classification="TLP:A")
    assert summaries(result, "Host") == (["evil.example.com", "ok.example.com"] if not refuse
                                         else ["ok.example.com"])
    assert result.counts["unlabelled"] == 1 - sent
    assert result.counts["unmapped_classification"] == sent


@pytest.mark.parametrize("labels, expected", [
    (["TLP:GREEN", "TLP:AMBER"], ["TLP:AMBER"]),
    (["TLP:RED", "TLP:CLEAR", "TLP:AMBER+STRICT"], ["TLP:RED"]),
    (["Org Internal", "TLP:GREEN", "tlp:amber"], ["Org Internal", "tlp:amber"]),
    (["TLP:GREEN"], ["TLP:GREEN"]),
    ([], []),
])
def test_one_submission_merged_with_another_keeps_the_most_restrictive_tlp(labels, expected):
    from lib.sending import merge_indicator
    first = {"type": "Host", "summary": "evil.example.com", "securityLabel": [{"name": n} for n in labels[:1]]}
    second = {"type": "Host", "summary": "evil.example.com", "securityLabel": [{"name": n} for n in labels[1:]]}
    merged = merge_indicator(first, second)
    assert [label["name"] for label in merged.get("securityLabel", [])] == expected


@pytest.mark.parametrize("seen_dates, expected", [
    (True, {"firstSeen": "2026-11-22T10:00:00Z", "lastSeen": "2026-11-22T10:07:30Z"}), (False, {})])
def test_seen_dates_come_from_the_submission_times(seen_dates, expected):
    result = build([tag("network.static.domain", "evil.example.com")], settings(seen_dates=seen_dates),
                   completed_at="2026-11-22T10:07:30.123456Z")
    (indicator,) = result.indicators
    assert {k: indicator[k] for k in ("firstSeen", "lastSeen") if k in indicator} == expected


def test_merged_sightings_keep_the_earliest_first_and_latest_last_seen():
    from lib.sending import merge_indicator
    one = {"type": "Host", "summary": "h.example.com", "firstSeen": "2026-11-20T00:00:00Z",
           "lastSeen": "2026-11-20T01:00:00Z"}
    two = {"type": "Host", "summary": "h.example.com", "firstSeen": "2026-11-19T00:00:00Z",
           "lastSeen": "2026-11-22T01:00:00Z"}
    merged = merge_indicator(one, two)
    assert (merged["firstSeen"], merged["lastSeen"]) == ("2026-11-19T00:00:00Z", "2026-11-22T01:00:00Z")


def test_an_indicator_merged_from_several_submissions_keeps_one_description_the_latest():
    from lib.sending import merge_indicator
    one = {"type": "Host", "summary": "h.example.com",
           "attribute": [{"type": "Description", "value": "Latest Assemblyline analysis: a.exe"}]}
    two = {"type": "Host", "summary": "h.example.com",
           "attribute": [{"type": "Description", "value": "Latest Assemblyline analysis: b.exe"}]}
    merged = merge_indicator(one, two)
    assert merged["attribute"] == [{"type": "Description", "value": "Latest Assemblyline analysis: b.exe"}]
    assert one["attribute"][0]["value"].endswith("a.exe")  # inputs untouched



@pytest.mark.parametrize("url, host_tag, expected", [
    ("http://evil.example.com/gate.php", ("network.static.domain", "evil.example.com"),
     [{"summary": "evil.example.com", "indicatorType": "Host"}]),
    ("http://user@evil.example.com:8080/x", ("network.static.domain", "evil.example.com"),
     [{"summary": "evil.example.com", "indicatorType": "Host"}]),
    ("http://185.220.101.47:8080/gate.php", ("network.static.ip", "185.220.101.47"),
     [{"summary": "185.220.101.47", "indicatorType": "Address"}]),
    ("http://[2001:4860::8888]/x", ("network.static.ip", "2001:4860::8888"),
     [{"summary": "2001:4860:0:0:0:0:0:8888", "indicatorType": "Address"}]),
    ("http://evil.example.com\\@good.example.org/x", ("network.static.domain", "evil.example.com"),
     [{"summary": "evil.example.com", "indicatorType": "Host"}]),  # the host a browser contacts
    ("http://other.example.com/x", ("network.static.domain", "evil.example.com"), None),  # host not sent
])
def test_a_url_is_associated_with_its_host_indicator_when_both_are_sent(url, host_tag, expected):
    result = build([tag("network.static.uri", url), tag(*host_tag)])
    (url_indicator,) = [i for i in result.indicators if i["type"] == "URL"]
    assert url_indicator.get("associatedIndicators") == expected
    off = build([tag("network.static.uri", url), tag(*host_tag)], settings(url_host_associations=False))
    assert all("associatedIndicators" not in i for i in off.indicators)



def test_merged_sightings_keep_every_value_of_an_attribute_type_from_the_later_one():
    from lib.sending import merge_indicator
    one = {"type": "File", "summary": "x", "attribute": [{"type": "Description", "value": "a"},
                                                         {"type": "Imphash", "value": "i1"}]}
    two = {"type": "File", "summary": "x", "attribute": [{"type": "Description", "value": "b"},
                                                         {"type": "Port", "value": "443"},
                                                         {"type": "Port", "value": "4444"}]}
    assert [(a["type"], a["value"]) for a in merge_indicator(one, two)["attribute"]] == [
        ("Imphash", "i1"), ("Description", "b"), ("Port", "443"), ("Port", "4444")]
