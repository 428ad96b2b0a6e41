"""Deterministic stand-in for Assemblyline's analysis services.

Everything here is a pure function of the file bytes and the :class:`Rules`:

* network IOCs found in the text become tags (``network.static.uri|domain|ip``,
  ``network.email.address``, plus the non-summary ``network.static.uri_path``);
* ``FAMILY=<NAME>`` -> ``attribution.family`` (malicious), ``BEHAVIOR=<text>`` ->
  ``file.behavior`` (info), ``SCORE=<int>`` -> a section with that heuristic score;
* zip archives and ``EXTRACT:<name>:<base64>`` lines yield child files analysed the
  same way; ``AL-EMU:ERROR`` makes a service error on that file.
"""
import base64
import binascii
import hashlib
import io
import ipaddress
import math
import re
import zipfile
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlparse, urlsplit

from .al_common import CLASSIFICATION

SERVICE_VERSION = "4.6.0.0"
SKIP_MARKER = b"AL-EMU:SKIP"
ERROR_MARKER = b"AL-EMU:ERROR"

DEFAULT_MALICIOUS_KEYWORDS = ("evil", "malware", "bad")
DEFAULT_INFO_VALUES = ("example.com", "example.net", "example.org")
DEFAULT_SAFELIST = (
    "microsoft.com", "windowsupdate.com", "localhost", "127.0.0.1", "::1",
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
)

SUMMARY_TAG_TYPES = {
    "attribution": (
        "attribution.actor", "attribution.campaign", "attribution.exploit", "attribution.implant",
        "attribution.family", "attribution.network", "av.virus_name", "file.config",
        "technique.obfuscation",
    ),
    "behavior": ("file.behavior",),
    "ioc": (
        "network.email.address", "network.static.ip", "network.dynamic.ip", "network.static.domain",
        "network.dynamic.domain", "network.static.uri", "network.dynamic.uri",
    ),
}

_TLDS = frozenset("""
com net org info biz io co us uk de ru cn fr jp nl br in it es eu xyz top online site club me tv
cc ca au ch se no pl be at dk fi cz kr tk ml ga cf gq pw su gov edu mil int app dev cloud shop
live ly ws to ir kp onion
""".split())
_URL_RE = re.compile(r"\b(?:https?|ftp)://[^\s\"'<>`]+", re.I)
_EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b")
_DOMAIN_RE = re.compile(r"\b(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")
_IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6_RE = re.compile(r"(?<![0-9A-Za-z:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])")
_EXTRACT_RE = re.compile(rb"^EXTRACT:([^:\r\n]+):([A-Za-z0-9+/=]+)[ \t]*\r?$", re.M)
_FAMILY_RE = re.compile(r"FAMILY=([A-Za-z0-9_.-]+)")
_BEHAVIOR_RE = re.compile(r"BEHAVIOR=([^\r\n]+)")
_SCORE_RE = re.compile(r"SCORE=(-?\d+)")

Tag = Tuple[str, str]  # (tag type, value)


def h_type_for_score(score: Optional[int]) -> str:
    """Assemblyline's heuristic level for a section score (no heuristic = info)."""
    if score is None:
        return "info"
    if score >= 1000:
        return "malicious"
    if score >= 300:
        return "suspicious"
    return "info" if score >= 0 else "safe"


def verdict_for_score(score: Optional[int]) -> str:
    """Submission verdict thresholds: info 0, suspicious 300, highly_suspicious 700, malicious 1000."""
    if score is None:
        return "info"
    for threshold, name in ((1000, "malicious"), (700, "highly_suspicious"), (300, "suspicious"), (0, "info")):
        if score >= threshold:
            return name
    return "safe"


class Rules:
    """Which h_type / safelisted flag an IOC gets (see module docstring)."""

    def __init__(self, malicious_keywords: Sequence[str] = DEFAULT_MALICIOUS_KEYWORDS,
                 info_values: Sequence[str] = DEFAULT_INFO_VALUES,
                 safelist: Sequence[str] = DEFAULT_SAFELIST) -> None:
        self.malicious_keywords = tuple(k.lower() for k in malicious_keywords)
        self.info_values = tuple(v.lower() for v in info_values)
        self.safelist = tuple(v.lower() for v in safelist)

    def h_type(self, tag_type: str, value: str) -> str:
        lowered = value.lower()
        if any(k in lowered for k in self.malicious_keywords):
            return "malicious"
        if _matches(tag_type, value, self.info_values):
            return "info"
        return "suspicious"

    def is_safelisted(self, tag_type: str, value: str) -> bool:
        return _matches(tag_type, value, self.safelist)


def _host_of(tag_type: str, value: str) -> str:
    if tag_type.endswith(".uri"):
        try:
            return (urlsplit(value).hostname or "").lower()
        except ValueError:
            return ""
    if tag_type == "network.email.address":
        return value.rsplit("@", 1)[-1].lower()
    return value.lower()


def _matches(tag_type: str, value: str, patterns: Iterable[str]) -> bool:
    host = _host_of(tag_type, value)
    for pattern in patterns:
        if value.lower() == pattern or host == pattern or host.endswith("." + pattern):
            return True
        if "/" in pattern and _in_network(host, pattern):
            return True
    return False


def _in_network(host: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# --------------------------------------------------------------------------- IOCs
def _ordered_unique(values: Iterable[str]) -> List[str]:
    return list(dict.fromkeys(values))


def _urls(text: str) -> List[str]:
    return _ordered_unique(m.group(0).rstrip(".,;:!?)]}'\"") for m in _URL_RE.finditer(text))


def _domains(text: str) -> List[str]:
    found = (m.group(0).lower() for m in _DOMAIN_RE.finditer(text))
    return _ordered_unique(d for d in found if d.rsplit(".", 1)[-1] in _TLDS)


def _ips(text: str) -> List[str]:
    out = []
    for match in list(_IPV4_RE.finditer(text)) + list(_IPV6_RE.finditer(text)):
        candidate = match.group(0)
        if ":" in candidate and len([g for g in candidate.split(":") if g]) < 2 and candidate != "::1":
            continue  # "::", "a::" and friends are more likely code than addresses
        try:
            out.append(str(ipaddress.ip_address(candidate)))
        except ValueError:
            continue
    return _ordered_unique(out)


def extract_iocs(text: str) -> List[Tag]:
    """Network IOCs in first-appearance order, grouped uri, domain, ip, email."""
    urls = _urls(text)
    tags = [("network.static.uri", u) for u in urls]
    tags += [("network.static.domain", d) for d in _domains(text)]
    tags += [("network.static.ip", i) for i in _ips(text)]
    tags += [("network.email.address", e.lower()) for e in _ordered_unique(_EMAIL_RE.findall(text))]
    return tags


def uri_paths(urls: Iterable[str]) -> List[Tag]:
    paths = []
    for url in urls:
        try:
            path = urlsplit(url).path
        except ValueError:
            continue
        if path not in ("", "/"):
            paths.append(path)
    return [("network.static.uri_path", p) for p in _ordered_unique(paths)]


# --------------------------------------------------------------------------- file info
def _file_type(content: bytes) -> Tuple[str, str, str]:
    """(al type, mime, magic) from the leading bytes."""
    if content.startswith(b"PK\x03\x04") or content.startswith(b"PK\x05\x06"):
        return "archive/zip", "application/zip", "Zip archive data"
    if content.startswith(b"MZ"):
        return "executable/windows/pe32", "application/x-dosexec", "PE32 executable (GUI) Intel 80386"
    if content.startswith(b"%PDF"):
        return "document/pdf", "application/pdf", "PDF document"
    uri_info = _uri_info(content)
    if uri_info is not None:
        return "uri/%s" % uri_info["scheme"], "text/plain", "ASCII text"
    if not _is_text(content):
        return "unknown", "application/octet-stream", "data"
    if content.startswith(b"#!"):
        return "code/shell", "text/x-shellscript", "POSIX shell script, ASCII text executable"
    return "text/plain", "text/plain", "ASCII text"


def _is_text(content: bytes) -> bool:
    sample = content[:4096]
    printable = sum(1 for b in sample if b in (9, 10, 13) or 32 <= b < 127 or b >= 128)
    return bool(sample) and printable / len(sample) > 0.95


def _entropy(content: bytes) -> float:
    if not content:
        return 0.0
    counts = [0] * 256
    for byte in content:
        counts[byte] += 1
    total = float(len(content))
    return round(-sum(c / total * math.log(c / total, 2) for c in counts if c), 3)


def fake_ssdeep(content: bytes) -> str:
    """A well-formed (not real) ssdeep: ``<blocksize>:<hash1>:<hash2>``."""
    block = 3
    while block * 64 < len(content):
        block *= 2
    alphabet = base64.b64encode(hashlib.sha256(content).digest() * 3).decode().rstrip("=")
    first = alphabet[:max(1, min(64, len(content) // block))]
    second = alphabet[-max(1, min(32, len(content) // (block * 2))):]
    return "%d:%s:%s" % (block, first, second)


def _uri_info(content: bytes) -> Optional[Dict[str, Any]]:
    """The ``uri_info`` of an AL URI file (``uri: <url>``), like the identifier's; None if not one."""
    if not content.startswith(b"uri: "):
        return None
    uri = content[5:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    try:
        parts = urlparse(uri)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme:
        return None
    # Stored through the URIInfo model: the parts a URI lacks are there as null.
    return {
        "uri": uri, "scheme": parts.scheme, "netloc": parts.netloc, "path": parts.path or None,
        "params": parts.params or None, "query": parts.query or None, "fragment": parts.fragment or None,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "hostname": hostname, "port": port or None,
    }


def _dotdump(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b <= 126 else "." for b in data)


def file_info(content: bytes, ts: str) -> Dict[str, Any]:
    """A file record as the datastore holds it (the ``File`` model; every field present)."""
    al_type, mime, magic = _file_type(content)
    header = content[:64]
    return {
        "archive_ts": None, "ascii": _dotdump(header), "classification": CLASSIFICATION, "comments": [],
        "entropy": _entropy(content), "expiry_ts": None, "from_archive": False, "hex": header.hex(),
        "is_section_image": False, "is_supplementary": False,
        "label_categories": {"attribution": [], "info": [], "technique": []}, "labels": [], "magic": magic,
        "md5": hashlib.md5(content).hexdigest(), "mime": mime,
        "seen": {"count": 1, "first": ts, "last": ts},
        "sha1": hashlib.sha1(content).hexdigest(), "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content), "ssdeep": fake_ssdeep(content), "tlsh": None, "type": al_type,
        "uri_info": _uri_info(content),
    }


# --------------------------------------------------------------------------- children
def zip_members(content: bytes) -> List[Tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, ValueError):
        return []
    members = []
    for entry in archive.infolist():
        if entry.filename.endswith("/"):
            continue
        try:
            members.append((entry.filename.rsplit("/", 1)[-1], archive.read(entry)))
        except (RuntimeError, zipfile.BadZipFile, NotImplementedError):
            continue  # encrypted or unsupported member
    return members


def marker_children(content: bytes) -> List[Tuple[str, bytes]]:
    children = []
    for match in _EXTRACT_RE.finditer(content):
        try:
            data = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            continue
        if data:
            children.append((match.group(1).decode("latin-1").strip(), data))
    return children


# --------------------------------------------------------------------------- sections
_HEURISTICS = {
    "malicious": ("FRANKENSTRINGS.1", "Malicious network indicator", 1000,
                  [{"attack_id": "T1071", "pattern": "Application Layer Protocol",
                    "categories": ["command-and-control"]}]),
    "suspicious": ("FRANKENSTRINGS.2", "Suspicious network indicator", 300, []),
    "info": ("FRANKENSTRINGS.3", "Network indicator", 0, []),
}


def heuristic(heur_id: str, name: str, score: int, attack: Optional[list] = None) -> Dict[str, Any]:
    return {"heur_id": heur_id, "name": name, "score": score, "attack": attack or [], "signature": []}


def section(title: str, body: str, heur: Optional[Dict[str, Any]], tags: Sequence[Tag],
            rules: Rules) -> Dict[str, Any]:
    return {
        "auto_collapse": False, "body": body, "body_config": {}, "body_format": "TEXT",
        "classification": CLASSIFICATION, "depth": 0, "heuristic": heur, "promote_to": None,
        "tags": [{"type": t, "value": v, "short_type": t.rsplit(".", 1)[-1],
                  "safelisted": rules.is_safelisted(t, v)} for t, v in tags],
        "title_text": title,
    }


def ioc_sections(text: str, rules: Rules) -> List[Dict[str, Any]]:
    """One section per h_type level, each holding the IOCs the rules put at that level."""
    iocs = extract_iocs(text)
    by_level = {}  # type: Dict[str, List[Tag]]
    for tag in iocs:
        by_level.setdefault(rules.h_type(*tag), []).append(tag)
    sections = []
    for level in ("malicious", "suspicious", "info"):
        tags = by_level.get(level, [])
        if not tags:
            continue
        heur_id, name, score, attack = _HEURISTICS[level]
        tags = tags + uri_paths(v for t, v in tags if t == "network.static.uri")
        body = "\n".join(v for _, v in tags)
        sections.append(section(name, body, heuristic(heur_id, name, score, attack), tags, rules))
    return sections


def marker_sections(text: str, rules: Rules) -> List[Dict[str, Any]]:
    sections = []
    for family in _ordered_unique(_FAMILY_RE.findall(text)):
        heur = heuristic("YARA.1", "Malware family identified", 1000)
        tags = [("attribution.family", family), ("file.rule.yara", "emulator.%s" % family)]
        sections.append(section("Rule hit: %s" % family, "FAMILY=%s" % family, heur, tags, rules))
    for behavior in _ordered_unique(b.strip() for b in _BEHAVIOR_RE.findall(text)):
        heur = heuristic("YARA.2", "Behaviour observed", 0)
        sections.append(section("Behaviour", behavior, heur, [("file.behavior", behavior)], rules))
    for score in _ordered_unique(_SCORE_RE.findall(text)):
        heur = heuristic("YARA.3", "Emulated score", int(score))
        sections.append(section("Emulated score", "SCORE=%s" % score, heur, [], rules))
    return sections
