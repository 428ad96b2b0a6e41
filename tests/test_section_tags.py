"""Tags only the full result carries (TLS SNI, mutexes, registry keys, user agents).

The summary lacks them; ``get_submission_results`` reads them from every
service result's sections (level from the section's heuristic), and the
mapping sends them as Host, Mutex, Registry Key and User Agent indicators, each
type behind a ``mapping.map_*`` switch. ThreatConnect (the emulator) accepts them.
"""
import pytest

from lib.al_results import shape_results
from lib.config import load_config
from lib.indicators import build_indicators
from lib.tc_submit import submit
from lib.threatconnect import ThreatConnectClient
from tests.emulators.threatconnect import ThreatConnectEmulator
from tests.helpers import TC_ACCESS_ID, TC_OWNER, TC_SECRET_KEY, TC_TOKEN, pack_config

SID = "5xYzAbCdEfGhIjKlMnOpQr"
SHA_EXE = "a" * 64
SHA_DLL = "b" * 64


def section(score, *tags, classification="TLP:A"):
    heuristic = None if score is None else {"heur_id": "CAPE.1", "score": score, "name": "h"}
    return {"title_text": "t", "body": "", "body_format": "TEXT", "classification": classification,
            "heuristic": heuristic, "depth": 0,
            "tags": [{"type": t, "value": v, "short_type": t.rsplit(".", 1)[-1], "safelisted": s}
                     for t, v, s in tags]}


FULL = {
    "sid": SID, "state": "completed", "max_score": 2000, "classification": "TLP:A",
    "times": {"submitted": "2026-11-22T10:00:00.000000Z", "completed": "2026-11-22T10:05:00.000000Z"},
    "files": [{"name": "dropper.exe", "sha256": SHA_EXE, "size": 1000}],
    "file_infos": {SHA_EXE: {"md5": "1" * 32, "sha1": "2" * 40, "sha256": SHA_EXE, "size": 1000}},
    "file_tree": {SHA_EXE: {"name": ["dropper.exe"], "score": 2000, "size": 1000, "children": {}}},
    "results": {
        SHA_EXE + ".CAPE.v4_6_0.cfg": {"response": {"service_name": "CAPE"}, "result": {"score": 2000, "sections": [
            section(1000, ("dynamic.mutex", "Global\\EmotetMutex_7731", False),
                    ("dynamic.registry_key", "HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\upd", False),
                    ("network.user_agent", "Mozilla/4.0 (compatible;  MSIE 7.0; Win32)", False)),
            section(None, ("dynamic.mutex", "Local\\ZonesCacheCounterMutex", False),   # info: below min_h_type
                    ("network.tls.sni", "cdn.evil-payload.ru", False)),
            section(500, ("network.tls.sni", "cdn.evil-payload.ru", False),           # same SNI: suspicious wins
                    ("network.tls.sni", "login.microsoftonline.com", True),
                    ("network.user_agent", "Mozilla/4.0 (compatible; MSIE 7.0; Win32)", False)),
        ]}},
        SHA_DLL + ".CAPE.v4_6_0.cfg": {"response": {"service_name": "CAPE"}, "result": {"score": 1000, "sections": [
            section(1000, ("dynamic.mutex", "Global\\EmotetMutex_7731", False),
                    ("dynamic.registry_key", "Software\\NoHive", False), ("file.behavior", "x", False)),
        ]}},
        "not-a-result": "garbage",
    },
}
SUMMARY = {"classification": "TLP:A", "map": {}, "tags": {"ioc": {}, "attribution": {}}}


def shaped(**mapping):
    conf = load_config(pack_config(mapping=mapping) if mapping else pack_config())
    from lib.al_results import TagOrder
    return shape_results(SUMMARY, FULL, "https://al.example.org/submission/" + SID,
                         order=TagOrder.from_mapping(conf["mapping"])), conf


def by_type(result):
    found = {}
    for indicator in result.indicators:
        found.setdefault(indicator["type"], []).append(indicator["summary"])
    return found


def test_section_tags_are_read_once_each_with_their_highest_level_and_files():
    results, _ = shaped()
    tags = {(t["type"], t["value"]): t for t in results["tags"]}
    sni = tags[("network.tls.sni", "cdn.evil-payload.ru")]
    assert sni["h_type"] == "suspicious" and sni["group"] == "section" and sni["sha256s"] == [SHA_EXE]
    assert tags[("dynamic.mutex", "Global\\EmotetMutex_7731")]["sha256s"] == [SHA_EXE, SHA_DLL]
    assert tags[("dynamic.mutex", "Local\\ZonesCacheCounterMutex")]["h_type"] == "info"
    assert tags[("network.tls.sni", "login.microsoftonline.com")]["safelisted"] is True
    assert ("file.behavior", "x") not in tags  # the summary's job


@pytest.mark.parametrize("mapping, expected", [
    ({}, {"Host": ["cdn.evil-payload.ru"], "Mutex": ["Global\\EmotetMutex_7731"],
          "User Agent": ["Mozilla/4.0 (compatible; MSIE 7.0; Win32)"]}),
    ({"map_registry_keys": True}, {
        "Host": ["cdn.evil-payload.ru"], "Mutex": ["Global\\EmotetMutex_7731"],
        "Registry Key": ["HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\upd"],
        "User Agent": ["Mozilla/4.0 (compatible; MSIE 7.0; Win32)"]}),
    ({"map_mutexes": False, "map_user_agents": False, "map_tls_sni": False}, {}),
])
def test_section_tags_map_to_their_types_behind_switches(mapping, expected):
    results, conf = shaped(**mapping)
    result = build_indicators(results, conf)
    found = by_type(result)
    found.pop("File", None)
    assert found == expected
    if mapping.get("map_registry_keys"):
        assert [r["reason"] for r in result.rejected] == ["invalid_registry_key"]  # Software\NoHive


def test_threatconnect_accepts_the_new_types():
    results, conf = shaped(map_registry_keys=True)
    built = build_indicators(results, conf)
    with ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY, token=TC_TOKEN,
                               owners=[TC_OWNER], queued_polls=0, running_polls=0) as tc:
        config = load_config(pack_config(tc_url=tc.url, mapping={"map_registry_keys": True}))
        client = ThreatConnectClient(config["threatconnect"], sleep=lambda seconds: None)
        aggregate = submit(client, built.indicators, built.groups)
        assert aggregate["totals"]["error"] == 0, aggregate["errors"]
        stored = {r["type"] for r in tc.indicators(TC_OWNER).values()}
    assert {"Mutex", "Registry Key", "User Agent", "Host"} <= stored


def test_attack_patterns_become_tags_on_the_submissions_group():
    summary = dict(SUMMARY, attack_matrix={
        "execution": [["T1059", "Command and Scripting Interpreter", "malicious"], ["T1204", "User Execution", "info"]],
        "persistence": [["T1547.001", "Registry Run Keys / Startup Folder", "suspicious"],
                        ["T1059", "Command and Scripting Interpreter", "suspicious"]],
        "bad": "not a list", "worse": [[42], "x", []]})
    results = shape_results(summary, FULL, "https://al.example.org/submission/" + SID)
    assert results["attack"] == [
        {"id": "T1059", "pattern": "Command and Scripting Interpreter", "h_type": "malicious"},
        {"id": "T1204", "pattern": "User Execution", "h_type": "info"},
        {"id": "T1547.001", "pattern": "Registry Run Keys / Startup Folder", "h_type": "suspicious"}]
    on = build_indicators(results, load_config(pack_config()))
    names = [t["name"] for t in on.groups[0]["tag"]]
    assert "T1059 - Command and Scripting Interpreter" in names
    assert "T1547.001 - Registry Run Keys / Startup Folder" in names
    assert not any(n.startswith("T1204") for n in names)  # info: below the default min_h_type
    off = build_indicators(results, load_config(pack_config(mapping={"attack_tags": False})))
    assert not any(t["name"].startswith("T1") for t in off.groups[0]["tag"])


def with_details():
    full = dict(FULL, results=dict(FULL["results"]))
    full["results"][SHA_EXE + ".PE.v4_6_0.cfg"] = {"response": {"service_name": "PE"}, "result": {"score": 0, "sections": [
        section(None, ("file.pe.imports.imphash", "f34d5f2d4577ed6d9ceec516c1f5a744", False),
                ("cert.thumbprint", "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678", False)),
        section(1000, ("network.port", "4444", False), ("network.port", "443", False),
                ("network.tls.ja3_hash", "e7d705a3286e19ea42f587b344ee6865", False),
                ("network.port", "80", True)),   # safelisted: not sent
    ]}}
    return full


def test_file_details_become_attributes_of_the_file_when_types_are_configured():
    from lib.al_results import TagOrder
    types = {"file.pe.imports.imphash": "Imphash", "network.port": "Port", "cert.thumbprint": "Certificate Thumbprint"}
    conf = load_config(pack_config(mapping={"detail_attributes": types}))
    results = shape_results(SUMMARY, with_details(), "https://al.example.org/submission/" + SID,
                            order=TagOrder.from_mapping(conf["mapping"]))
    built = build_indicators(results, conf)
    (file_indicator,) = [i for i in built.indicators if i["type"] == "File"]
    details = [(a["type"], a["value"]) for a in file_indicator["attribute"] if a["type"] != "Description"]
    assert details == [("Certificate Thumbprint", "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"),
                       ("Imphash", "f34d5f2d4577ed6d9ceec516c1f5a744"), ("Port", "443"), ("Port", "4444")]
    host = [i for i in built.indicators if i["type"] == "Host"][0]
    assert [a["type"] for a in host["attribute"]] == ["Description"]  # only the File carries them
    default = build_indicators(results, load_config(pack_config()))
    (plain,) = [i for i in default.indicators if i["type"] == "File"]
    assert [a["type"] for a in plain["attribute"]] == ["Description"]


@pytest.mark.parametrize("bad", [{"network.static.ip": "Address"}, {"network.port": ""}, ["Port"]])
def test_detail_attribute_settings_are_checked_by_name(bad):
    from lib.errors import ConfigError
    with pytest.raises(ConfigError, match="mapping.detail_attributes"):
        build_indicators(shaped()[0], load_config(pack_config(mapping={"detail_attributes": bad}))
                         if isinstance(bad, dict) else {"mapping": {"detail_attributes": bad}})
