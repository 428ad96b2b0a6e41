"""Batch item validation for the ThreatConnect emulator.

Turns one V2 batch item (indicator or group) into a normalised dict, or raises
``ItemError`` with a reason written the way TC's error file words it. The
rules follow the reference (``threatconnect.md`` section 3) and are kept
deliberately strict, so that client or mapping bugs show up in tests.

Decisions where TC is undocumented: File hashes are stored upper-case (as TC's
API returns them); host names must already be lower case (TC asks for
lower-case ASCII; the emulator refuses instead of silently fixing).
"""
import ipaddress
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

INDICATOR_VALUE_FIELDS = {
    "Address": "ip",
    "EmailAddress": "address",
    "Host": "hostName",
    "URL": "text",
    "ASN": "AS Number",
    "CIDR": "Block",
    "Mutex": "Mutex",
    "Registry Key": "Key Name",
    "User Agent": "User Agent String",
    "File": None,
}
INDICATOR_TYPES = tuple(INDICATOR_VALUE_FIELDS)
HASH_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256"}
HASH_ORDER = ("md5", "sha1", "sha256")

GROUP_TYPES = ("Adversary", "Attack Pattern", "Campaign", "Course of Action", "Document",
               "Email", "Event", "Incident", "Intrusion Set", "Malware", "Report",
               "Signature", "Tactic", "Threat", "Tool", "Vulnerability")
GROUP_REQUIRED = {"Email": ("subject", "header", "body"),
                  "Signature": ("fileName", "fileType", "fileText")}
INCIDENT_STATUSES = ("New", "Open", "Stalled", "Containment Achieved", "Restoration Achieved",
                     "Incident Reported", "Closed", "Rejected", "Deleted")

# Keys handled explicitly; everything else an item carries is kept as "fields".
_INDICATOR_KEYS = {"type", "summary", "rating", "confidence", "tag", "attribute",
                   "securityLabel", "associatedGroups", "xid", "md5", "sha1", "sha256"}
_GROUP_KEYS = {"type", "name", "xid", "tag", "attribute", "securityLabel", "associatedGroupXid"}

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_ASN = re.compile(r"^ASN[0-9]{1,10}$")


class ItemError(Exception):
    """One item the batch job cannot save; ``str()`` is the errorReason."""


# ---------------------------------------------------------------- indicators

def indicator_identity(item: Any) -> Tuple[str, str, Dict[str, str]]:
    """(type, summary, hashes) of an indicator; hashes only for Files.

    Enough for a Delete job, which matches existing indicators by value only.
    """
    if not isinstance(item, dict):
        raise ItemError("Invalid indicator: not a JSON object")
    kind = item.get("type")
    if kind not in INDICATOR_VALUE_FIELDS:
        raise ItemError("Invalid indicator type: {}".format(_short(kind)))
    if kind == "File":
        hashes = file_hashes(item)
        return kind, file_summary(hashes), hashes
    field = INDICATOR_VALUE_FIELDS[kind]
    value = item.get(field)
    if value is None:
        value = item.get("summary")
    if not isinstance(value, str) or not value.strip():
        raise ItemError("Invalid {} indicator: no {} or summary".format(kind, field))
    return kind, check_value(kind, value), {}


def normalise_indicator(item: Any) -> Dict[str, Any]:
    """Validate a whole indicator for a Create job."""
    kind, summary, hashes = indicator_identity(item)
    label = "{} {}".format(kind, summary)
    record = {
        "type": kind,
        "summary": summary,
        "hashes": hashes,
        "rating": _number(item, "rating", 0, 5, label, integral=False),
        "confidence": _number(item, "confidence", 0, 100, label, integral=True),
        "tags": _names(item, "tag", label),
        "securityLabels": _names(item, "securityLabel", label),
        "attributes": _attributes(item, label),
        "groupXids": _group_refs(item, label),
        "fields": {k: v for k, v in item.items()
                   if k not in _INDICATOR_KEYS and k != INDICATOR_VALUE_FIELDS[kind]},
    }
    _check_associated_indicators(item, label)
    return record


def _check_associated_indicators(item: Mapping[str, Any], label: str) -> None:
    """``associatedIndicators: [{summary, indicatorType}]`` (kept in ``fields``)."""
    links = item.get("associatedIndicators")
    if links is None:
        return
    if not isinstance(links, list):
        raise ItemError("Invalid {}: associatedIndicators must be an array".format(label))
    for link in links:
        if not isinstance(link, dict) or link.get("indicatorType") not in INDICATOR_VALUE_FIELDS \
                or not isinstance(link.get("summary"), str):
            raise ItemError("Invalid {}: associatedIndicators entries need summary and a known "
                            "indicatorType".format(label))
        if link["indicatorType"] != "File":
            check_value(link["indicatorType"], link["summary"])


def check_value(kind: str, value: str) -> str:
    """Apply the value rules of one indicator type; returns the summary."""
    if value != value.strip():
        raise ItemError("Invalid {} indicator: surrounding whitespace".format(kind))
    checker = _VALUE_CHECKS.get(kind)
    if checker is not None:
        checker(value)
    return value


def check_host(value: str, what: str = "Host") -> None:
    if not _is_ascii(value):
        raise ItemError("Invalid {}: must be ASCII (use punycode for IDN): {}".format(
            what, _short(value)))
    if value != value.lower():
        raise ItemError("Invalid {}: must be lower case: {}".format(what, _short(value)))
    labels = value.split(".")
    if len(value) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ItemError("Invalid {}: not a valid host name: {}".format(what, _short(value)))


def check_url(value: str) -> None:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)", value)
    if not match or not match.group(2) or any(c.isspace() for c in value):
        raise ItemError("Invalid URL: needs a protocol and a host: {}".format(_short(value)))
    host = match.group(2).rpartition("@")[2]
    if host.startswith("["):
        _ip(host[1:].partition("]")[0], "URL")
        return
    host = host.partition(":")[0]
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        check_host(host, "URL host")


def check_email(value: str) -> None:
    local, at, domain = value.rpartition("@")
    if not at or not local or any(c.isspace() for c in value) or "." not in domain:
        raise ItemError("Invalid EmailAddress: {}".format(_short(value)))
    check_host(domain.lower(), "EmailAddress domain")


def check_cidr(value: str) -> None:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ItemError("Invalid CIDR: {}".format(_short(value))) from None
    if network.version == 6:
        groups = value.partition("/")[0].split(":")
        if "::" in value or any(len(g) > 1 and g.startswith("0") for g in groups):
            raise ItemError("Invalid CIDR: IPv6 blocks must be uncompressed without "
                            "leading zeros: {}".format(_short(value)))


def _ip(value: str, what: str = "Address") -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ItemError("Invalid {}: {}".format(what, _short(value))) from None


def _asn(value: str) -> None:
    if not _ASN.match(value):
        raise ItemError("Invalid ASN: expected ASN<number>: {}".format(_short(value)))


def _registry_key(value: str) -> None:
    if not value.startswith("HKEY_"):
        raise ItemError("Invalid Registry Key: must start with HKEY_: {}".format(_short(value)))


_VALUE_CHECKS = {"Address": _ip, "EmailAddress": check_email, "Host": check_host,
                 "URL": check_url, "ASN": _asn, "CIDR": check_cidr,
                 "Registry Key": _registry_key}


def file_hashes(item: Mapping[str, Any]) -> Dict[str, str]:
    """Hashes of a File item: the hash fields, else the ``md5 : sha1 : sha256`` summary."""
    given = {name: item[name] for name in HASH_ORDER if item.get(name) is not None}
    if not given:
        summary = item.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise ItemError("Invalid File indicator: no md5, sha1, sha256 or summary")
        for part in summary.split(" : "):
            name = HASH_LENGTHS.get(len(part.strip()))
            if name is None or name in given:
                raise ItemError("Invalid File summary: {}".format(_short(summary)))
            given[name] = part.strip()
    hashes = {}
    for name, value in given.items():
        if not isinstance(value, str) or len(value) != {"md5": 32, "sha1": 40, "sha256": 64}[
                name] or not _HEX.match(value):
            raise ItemError("Invalid File indicator: bad {} {}".format(name, _short(value)))
        hashes[name] = value.upper()
    return hashes


def file_summary(hashes: Mapping[str, str]) -> str:
    return " : ".join(hashes[name] for name in HASH_ORDER if name in hashes)


# -------------------------------------------------------------------- groups

def group_identity(item: Any) -> Tuple[str, str]:
    """(type, xid) of a group; a Delete job matches groups by xid."""
    if not isinstance(item, dict):
        raise ItemError("Invalid group: not a JSON object")
    kind, xid = item.get("type"), item.get("xid")
    if kind not in GROUP_TYPES:
        raise ItemError("Invalid group type: {}".format(_short(kind)))
    if not isinstance(xid, str) or not xid.strip():
        raise ItemError("Invalid {} group: xid is required".format(kind))
    return kind, xid


def normalise_group(item: Any) -> Dict[str, Any]:
    """Validate a whole group for a Create job."""
    kind, xid = group_identity(item)
    label = "{} group {}".format(kind, xid)
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ItemError("Invalid {}: name is required".format(label))
    for field in GROUP_REQUIRED.get(kind, ()):
        if not isinstance(item.get(field), str) or not item[field].strip():
            raise ItemError("Invalid {}: {} is required".format(label, field))
    if kind == "Document" and item.get("malware") is True and not item.get("password"):
        raise ItemError("Invalid {}: password is required for malware".format(label))
    if kind == "Incident" and "status" in item and item["status"] not in INCIDENT_STATUSES:
        raise ItemError("Invalid {}: unknown status {}".format(label, _short(item["status"])))
    refs = item.get("associatedGroupXid", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
        raise ItemError("Invalid {}: associatedGroupXid must list xids".format(label))
    return {
        "type": kind, "xid": xid, "name": name,
        "tags": _names(item, "tag", label),
        "securityLabels": _names(item, "securityLabel", label),
        "attributes": _attributes(item, label),
        "groupXids": list(refs),
        "fields": {k: v for k, v in item.items() if k not in _GROUP_KEYS},
    }


# ------------------------------------------------------------------- helpers

def _number(item: Mapping[str, Any], key: str, low: int, high: int, label: str,
            integral: bool) -> Optional[float]:
    if item.get(key) is None:
        return None
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ItemError("Invalid {}: {} must be a number".format(label, key))
    if integral and value != int(value):
        raise ItemError("Invalid {}: {} must be a whole number".format(label, key))
    if not low <= value <= high:
        raise ItemError("Invalid {}: {} must be between {} and {}".format(label, key, low, high))
    return value


def _names(item: Mapping[str, Any], key: str, label: str) -> List[str]:
    entries = item.get(key, [])
    if not isinstance(entries, list):
        raise ItemError("Invalid {}: {} must be a list".format(label, key))
    names = []
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ItemError("Invalid {}: every {} needs a name".format(label, key))
        if name not in names:
            names.append(name)
    return names


def _attributes(item: Mapping[str, Any], label: str) -> List[Dict[str, Any]]:
    entries = item.get("attribute", [])
    if not isinstance(entries, list):
        raise ItemError("Invalid {}: attribute must be a list".format(label))
    result = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) \
                or not entry["type"] or not isinstance(entry.get("value"), str):
            raise ItemError("Invalid {}: every attribute needs a type and a value".format(label))
        result.append({"type": entry["type"], "value": entry["value"]})
    return result


def _group_refs(item: Mapping[str, Any], label: str) -> List[str]:
    entries = item.get("associatedGroups", [])
    if not isinstance(entries, list):
        raise ItemError("Invalid {}: associatedGroups must be a list".format(label))
    xids = []
    for entry in entries:
        xid = entry.get("groupXid") if isinstance(entry, dict) else None
        if not isinstance(xid, str) or not xid:
            raise ItemError("Invalid {}: every associatedGroups entry needs a groupXid".format(
                label))
        xids.append(xid)
    return xids


def _is_ascii(value: str) -> bool:
    try:
        value.encode("ascii")
    except UnicodeEncodeError:
        return False
    return True


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
