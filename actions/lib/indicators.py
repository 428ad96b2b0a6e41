"""Assemblyline submission results -> ThreatConnect V2 batch indicators and groups.

``build_indicators(results, settings)`` takes the output of the pack's
``get_submission_results`` action (one submission: ``sid``, ``max_score``,
``verdict``, ``classification``, ``submitted_at``, ``metadata``, ``files``,
``tags``, ``al_url``) and the validated pack config, and returns a
``BuildResult`` whose ``indicators`` and ``groups`` are plain dicts in the
exact V2 batch format (``{"indicator": [...], "group": [...]}`` items).
Nothing is sent from here and nothing is read from the network.

Mapping (Assemblyline tag type -> ThreatConnect type):

=================================================  ============  ===========================
``network.static.ip``, ``network.dynamic.ip``      Address       IPv4, IPv6 as 8 full groups
``network.static.domain``, ``...dynamic.domain``   Host          lower-case punycode
``network.static.uri``, ``network.dynamic.uri``    URL           scheme/host lower-case
``network.email.address``                          EmailAddress  domain lower-case punycode
submitted file (and extracted files, optional)     File          md5/sha1/sha256, size
=================================================  ============  ===========================

Attribution tags (``attribution.family|actor|campaign|exploit|implant|network``
and ``av.virus_name``) become ThreatConnect tags on the indicators found in
the same files (all files when a side has no ``sha256s``) and on the group.
Every other tag type (``file.behavior``, ``technique.*`` ...) is counted as
``not_indicator``.

Filters, in this order, each counted under its reason in ``counts``:
``safelisted`` (``mapping.drop_safelisted``), ``below_h_type``
(``mapping.min_h_type``), ``rejected`` (invalid values, listed in
``rejected`` with a reason), ``private`` (non-public addresses and local host
names, also as URL hosts and e-mail domains; ``mapping.drop_private_addresses``),
``file_below_min_score`` (``mapping.min_file_score``) and ``overflow``
(``mapping.max_indicators_per_submission``: the highest h_type is kept, then
type/summary order).

Enrichment of every indicator:

* ``rating``/``confidence`` from the (highest) h_type through
  ``mapping.rating_table`` (``DEFAULT_RATING_TABLE`` when not configured: a
  configured table replaces it, and an h_type or key it lacks falls back to
  ``threatconnect.default_rating``/``default_confidence``). File indicators
  use the h_type of the submission score (>= 1000 malicious, >= 300
  suspicious, >= 0 info), or of the file's own ``score`` when the results
  carry one, or of ``verdict`` when there is no score.
* ``tag``: ``mapping.source_tag`` first, then up to ``max_attribution_tags``
  attribution tags (highest h_type first, then family, actor, campaign,
  exploit, implant, network, AV name, then name; case-insensitive duplicates
  dropped; at most 128 characters each).
* ``securityLabel`` from the tag's classification (the submission's when the
  merged occurrences disagree or have none) through
  ``mapping.classification_labels`` (``DEFAULT_CLASSIFICATION_LABELS`` when not
  configured; a configured table replaces it; a classification mapped to ""
  gets no label on purpose; ``LEVEL//CONTROLS`` without an entry of its own
  maps by ``LEVEL``). Unmapped classifications get no label, are
  counted in ``unmapped_classification`` and named in ``warnings``.
* ``attribute``: one ``Description`` (a default attribute type of every
  ThreatConnect indicator and group type) naming the analysed file and linking
  to ``al_url``; the group's Description also gives sid, score, verdict and
  sha256.
* ``associatedGroups``: the submission's group, whose xid comes from
  ``group_xid()``.

Output is deterministic: indicators are sorted by type then summary, every
list inside them is sorted, and the same tags in any order give the same
result. The output shares no object with the input; indicators share their
read-only ``tag``/``securityLabel``/``attribute``/``associatedGroups`` lists
with each other (built once per distinct value). Copy an indicator before
modifying its lists.

Structure: one pass over the tags files every accepted value under its type and
summary as one ``Sighting`` (a small record: highest h_type, classification,
files, URL host); duplicates merge into it; ``_render`` turns each sighting into
its indicator dict. Normalised values are memoised per build (per raw value,
and host names across Host tags, URLs and e-mail addresses). The build leaves
the garbage collector alone and makes no reference cycles; the indicator dicts
are the only containers it leaves behind.
"""
import hashlib
import math
import ntpath
import posixpath
import re
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, NamedTuple, Tuple, Union

from lib.al_results import H_RANK, H_TYPES, VERDICT_H_TYPES, is_true, verdict_for
from lib.errors import ConfigError, InputError
from lib.tc_values import (
    HostNames, ValueRejected, clean_text, normalise_email, normalise_hash, normalise_ip,
    normalise_mutex, normalise_registry_key, normalise_url, normalise_user_agent, refang,
    refang_url, tag_name, url_host)

# Assemblyline tag type -> value kind; the kind names the normaliser and the TC type.
TAG_KINDS = {
    "network.static.ip": "Address",
    "network.dynamic.ip": "Address",
    "network.static.domain": "Host",
    "network.dynamic.domain": "Host",
    "network.static.uri": "URL",
    "network.dynamic.uri": "URL",
    "network.email.address": "EmailAddress",
    # from the full result's section tags (lib.al_results.SECTION_TAG_TYPES), each behind a switch
    "network.tls.sni": "Host",
    "dynamic.mutex": "Mutex",
    "dynamic.registry_key": "Registry Key",
    "network.user_agent": "User Agent",
}
# The switch that turns each section tag type on: (mapping key, default).
SECTION_TAG_SWITCHES = {
    "network.tls.sni": ("map_tls_sni", True),
    "dynamic.mutex": ("map_mutexes", True),
    "dynamic.registry_key": ("map_registry_keys", False),  # dynamic analysis touches many benign keys
    "network.user_agent": ("map_user_agents", True),
}
# Section tags that describe a file rather than name an indicator: File attributes when
# mapping.detail_attributes names the owner's attribute type for them (off by default:
# attribute types are configured per ThreatConnect instance).
DETAIL_TAG_TYPES = frozenset(("network.port", "network.tls.ja3_hash", "file.pe.imports.imphash",
                              "cert.thumbprint"))
MAX_DETAIL_LENGTH = 500
TC_TYPES = ("Address", "EmailAddress", "File", "Host", "Mutex", "Registry Key", "URL",
            "User Agent")  # output order

# Attribution tag types copied as ThreatConnect tags, in order of preference
# when ``max_attribution_tags`` cuts the list.
ATTRIBUTION_TYPES = (
    "attribution.family", "attribution.actor", "attribution.campaign", "attribution.exploit",
    "attribution.implant", "attribution.network", "av.virus_name")
_ATTRIBUTION_ORDER = {name: index for index, name in enumerate(ATTRIBUTION_TYPES)}
# Attribution tag types that name a ThreatConnect group (mapping.attribution_groups).
ATTRIBUTION_GROUP_TYPES = {"attribution.family": "Malware", "attribution.actor": "Adversary",
                           "attribution.campaign": "Campaign"}
_CVE = re.compile(r"^CVE-\d{4}-\d{4,}$", re.IGNORECASE)

# Used when ``mapping.rating_table`` is not configured. A configured table
# replaces this one; an h_type or key missing from it falls back to
# ``threatconnect.default_rating`` / ``default_confidence``.
DEFAULT_RATING_TABLE = {
    "malicious": {"rating": 4, "confidence": 80},
    "suspicious": {"rating": 3, "confidence": 60},
    "info": {"rating": 1, "confidence": 30},
    "safe": {"rating": 0, "confidence": 10},
}

# Used when ``mapping.classification_labels`` is not configured (a configured
# table replaces this one). Assemblyline's default classification engine uses
# TLP short names; ThreatConnect ships the TLP 2.0 security labels.
# Traffic Light Protocol labels, least to most restrictive. An indicator's label is the most
# restrictive one it was ever given: labels are only added (securityLabelWriteType Append),
# a batch carries one TLP label per indicator (the most restrictive of its sightings), and
# the permissive ones are not sent unless mapping.send_permissive_labels: an indicator
# labelled TLP:CLEAR by one submission and TLP:AMBER by another must not look shareable.
TLP_RANK = {"TLP:CLEAR": 0, "TLP:WHITE": 0, "TLP:GREEN": 1, "TLP:AMBER": 2, "TLP:AMBER+STRICT": 3,
            "TLP:RED": 4}
PERMISSIVE_LABELS = frozenset(("TLP:CLEAR", "TLP:WHITE"))

DEFAULT_CLASSIFICATION_LABELS = {
    "TLP:C": "TLP:CLEAR", "TLP:CLEAR": "TLP:CLEAR",
    "TLP:W": "TLP:WHITE", "TLP:WHITE": "TLP:WHITE",
    "TLP:G": "TLP:GREEN", "TLP:GREEN": "TLP:GREEN",
    "TLP:A": "TLP:AMBER", "TLP:AMBER": "TLP:AMBER",
    "TLP:A+S": "TLP:AMBER+STRICT", "TLP:AMBER+STRICT": "TLP:AMBER+STRICT",
    "TLP:R": "TLP:RED", "TLP:RED": "TLP:RED",
}

# "Description" is a default attribute type for every indicator and group
# type in ThreatConnect (the one the batch docs use); with the pack's default
# attribute_write_type "Singleton" a re-run replaces it instead of piling up.
ATTRIBUTE_TYPE = "Description"
MAX_ATTRIBUTE_LENGTH = 1000
MAX_GROUP_NAME_LENGTH = 100   # assumption: the documented UI limit for group names
MAX_FILE_NAME_LENGTH = 255
MAX_REJECTED_VALUE_LENGTH = 1000
XID_PREFIX = "assemblyline_threatconnect"
MAX_SID_IN_XID = 64  # Assemblyline sids are 22 characters; longer ones are hashed into the xid

# Group type -> the fields ThreatConnect needs besides name and xid.
GROUP_REQUIRED_FIELDS = {
    "Report": ("fileName", "publishDate"),
    "Incident": ("eventDate", "status"),
    "Event": ("eventDate",),
    "Document": ("fileName",),
    "Malware": (),
    "Threat": (),
}
INCIDENT_STATUS = "New"


FILTER_REASONS = ("safelisted", "below_h_type", "rejected", "private", "file_below_min_score",
                  "overflow", "unlabelled")
OTHER_COUNTS = ("tags_total", "not_indicator", "attribution", "duplicate", "refanged",
                "unmapped_classification")

# The tag keys the build reads. A tag that is a plain dict with all of them is read
# with one C call; any other mapping is first copied into such a dict through its ``get``.
_TAG_KEYS = ("type", "value", "h_type", "safelisted", "classification", "sha256s")
_tag_fields = itemgetter(*_TAG_KEYS)


def _tag_snapshot(tag: Mapping[str, Any]) -> Dict[str, Any]:
    return {key: tag.get(key) for key in _TAG_KEYS}


_FILES_SEPARATOR = "\n"  # (a sha256 holding a line break names no file: it is dropped)


def _files_key(shas: Any) -> str:
    """The files a tag names, as one string: its ``sha256s`` strings joined by
    ``_FILES_SEPARATOR`` (as given: ``_Context`` lower-cases them); "" when it names none.
    A tag from one file gives that file's own string (nothing is allocated per tag)."""
    if not shas:
        return ""
    if type(shas) is list and len(shas) == 1:
        shas = shas[0]
    if isinstance(shas, str):
        return shas if _FILES_SEPARATOR not in shas else ""
    try:
        key = _FILES_SEPARATOR.join(shas)  # (one C call when they are all strings)
        if key.count(_FILES_SEPARATOR) == len(shas) - 1:
            return key
    except TypeError:  # not a list of strings
        pass
    try:
        return _FILES_SEPARATOR.join(
            sha for sha in shas if isinstance(sha, str) and _FILES_SEPARATOR not in sha)
    except TypeError:  # not iterable: names no file
        return ""


def _files_of(key: str) -> List[str]:
    return key.split(_FILES_SEPARATOR) if key else []


_MIXED = object()  # an indicator seen with different classifications


class Sighting(NamedTuple):
    """One indicator in the making: what the tags (or files) with its summary said.

    ``rank``: the highest h_type rank; ``classification``: theirs, or ``_MIXED``
    when they differ; ``files``: the files it was found in (``_files_key``);
    ``file``: a File indicator's hashes, size and occurrences (else None);
    ``host``: a URL's host (else None).

    This class names the fields; the buckets hold plain tuples in this order
    (``_sighting``), on purpose: CPython stops tracking a plain tuple of strings
    and numbers at its first collection (a tuple subclass, a slots class or a
    dict stays tracked or costs three times the memory: measured, a dict per
    sighting grew a 100,000-indicator build by 28 MB on Python 3.8, and tracked
    records brought full collections of the whole heap into the build).
    ``_render`` drops each one as it makes its indicator.
    """

    rank: int
    classification: Any
    files: str
    file: Optional[Dict[str, Any]]
    host: Optional[str]


RANK, CLASSIFICATION, FILES, FILE, HOST = range(5)  # positions in a sighting tuple


def _sighting(rank: int, classification: Any, files: str, file: Optional[Dict[str, Any]],
              host: Optional[str]) -> Tuple[Any, ...]:
    return (rank, classification, files, file, host)


def _merge(sighting: Tuple[Any, ...], rank: int, classification: Any, files: str) -> Tuple[Any, ...]:
    """Another sighting of the same summary: the merged sighting."""
    old_rank, old_classification, old_files, file, host = sighting
    if old_classification is not _MIXED and classification != old_classification:
        old_classification = _MIXED
    if files and files != old_files:
        union = dict.fromkeys(_files_of(old_files))
        union.update(dict.fromkeys(_files_of(files)))
        old_files = _FILES_SEPARATOR.join(union)
    return (max(rank, old_rank), old_classification, old_files, file, host)


Buckets = Dict[str, Dict[str, Tuple[Any, ...]]]  # TC type -> summary -> sighting (see Sighting)


class BuildResult:
    """What ``build_indicators`` returns; ``to_dict()`` is JSON-serialisable.

    ``indicators`` and ``groups`` go into the batch body as they are;
    ``rejected`` lists every invalid value with its reason; ``counts`` has one
    key per ThreatConnect type (indicators built) and per filter reason;
    ``overflow`` is ``counts["overflow"]``; ``group_xid`` is the xid every
    indicator is associated with; ``warnings`` are human notes (unmapped
    classifications, unfinished submissions).
    """

    __slots__ = ("indicators", "groups", "rejected", "counts", "overflow", "group_xid", "warnings")

    def __init__(self, indicators: List[Dict[str, Any]], groups: List[Dict[str, Any]],
                 rejected: List[Dict[str, str]], counts: Dict[str, int], group_xid: str,
                 warnings: List[str]):
        self.indicators = indicators
        self.groups = groups
        self.rejected = rejected
        self.counts = counts
        self.overflow = counts["overflow"]
        self.group_xid = group_xid
        self.warnings = warnings

    def to_dict(self) -> Dict[str, Any]:
        return {"indicators": self.indicators, "groups": self.groups, "rejected": self.rejected,
                "counts": self.counts, "overflow": self.overflow, "group_xid": self.group_xid,
                "warnings": self.warnings}

    def batch_body(self) -> Dict[str, List[Dict[str, Any]]]:
        """The V2 batch input document for this submission (unchunked)."""
        return {"indicator": self.indicators, "group": self.groups}


# --------------------------------------------------------------------------- settings

class MappingSettings:
    """The ``mapping`` section (and two ``threatconnect`` keys), checked once."""

    def __init__(self, settings: Mapping[str, Any]):
        mapping = _mapping_or_empty(settings, "mapping")
        tc = _mapping_or_empty(settings, "threatconnect")
        problems: List[str] = []
        self.min_h_type = mapping.get("min_h_type", "suspicious")
        if self.min_h_type not in H_RANK:
            problems.append("mapping.min_h_type: must be one of " + ", ".join(H_TYPES))
        self.min_rank = H_RANK.get(self.min_h_type, H_RANK["suspicious"])
        self.drop_safelisted = bool(mapping.get("drop_safelisted", True))
        self.drop_private = bool(mapping.get("drop_private_addresses", True))
        self.min_file_score = _int_setting(mapping, "min_file_score", 300, None, None, problems)
        self.include_extracted = bool(mapping.get("include_extracted_files", False))
        self.tag_types = frozenset(
            name for name in TAG_KINDS
            if name not in SECTION_TAG_SWITCHES or bool(mapping.get(*SECTION_TAG_SWITCHES[name])))
        self.send_file_path = bool(mapping.get("send_file_path", False))
        self.max_indicators = _int_setting(mapping, "max_indicators_per_submission", 500, 1, None,
                                           problems)
        self.max_attribution_tags = _int_setting(mapping, "max_attribution_tags", 10, 0, None,
                                                 problems)
        self.group_type = mapping.get("group_type", "Report")
        if self.group_type not in GROUP_REQUIRED_FIELDS:
            problems.append("mapping.group_type: must be one of " + ", ".join(GROUP_REQUIRED_FIELDS))
        source_tag = mapping.get("source_tag", "Assemblyline")
        self.source_tag = tag_name(source_tag) if source_tag is not None else ""
        default_rating = _int_setting(tc, "default_rating", 3, 0, 5, problems, "threatconnect")
        default_confidence = _int_setting(tc, "default_confidence", 50, 0, 100, problems,
                                          "threatconnect")
        table = mapping.get("rating_table")
        if table is None:
            table = DEFAULT_RATING_TABLE
        self.rating_by_rank = _rating_table(table, default_rating, default_confidence, problems)
        labels = mapping.get("classification_labels")
        if labels is None:
            labels = DEFAULT_CLASSIFICATION_LABELS
        if not isinstance(labels, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            problems.append("mapping.classification_labels: must map classification strings "
                            "to security label names")
            labels = {}
        self.labels = {key.strip().upper(): value.strip() for key, value in labels.items()}
        self.send_permissive_labels = bool(mapping.get("send_permissive_labels", False))
        self.attack_tags = bool(mapping.get("attack_tags", True))
        self.seen_dates = bool(mapping.get("seen_dates", True))
        self.url_host_associations = bool(mapping.get("url_host_associations", True))
        details = mapping.get("detail_attributes") or {}
        if not isinstance(details, Mapping) or not all(
                k in DETAIL_TAG_TYPES and isinstance(v, str) and v.strip() for k, v in details.items()):
            problems.append("mapping.detail_attributes: must map tag types among {} to ThreatConnect "
                            "attribute type names".format(", ".join(sorted(DETAIL_TAG_TYPES))))
            details = {}
        self.detail_attributes = {k: v.strip() for k, v in details.items()}
        self.attribution_groups = bool(mapping.get("attribution_groups", False))
        self.vulnerability_groups = bool(mapping.get("vulnerability_groups", True))
        self.refuse_unlabelled = bool(mapping.get("refuse_unlabelled", False))
        self.owner = tc.get("owner") if isinstance(tc.get("owner"), str) else ""
        if problems:
            raise ConfigError(problems)

    def label_for(self, classification: Any) -> Optional[str]:
        """The label name, ``""`` when mapped to no label on purpose, None when unmapped."""
        if not isinstance(classification, str):
            return None
        key = classification.strip().upper()
        label = self.labels.get(key)
        if label is None and "//" in key:  # "TLP:AMBER//REL TO X": the level before the controls
            label = self.labels.get(key.split("//", 1)[0].strip())
        return label


def _mapping_or_empty(settings: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    if not isinstance(settings, Mapping):
        raise ConfigError(["settings must be the pack config mapping"])
    section = settings.get(key)
    return section if isinstance(section, Mapping) else {}


def _int_setting(section: Mapping[str, Any], key: str, default: int, low: Optional[int],
                 high: Optional[int], problems: List[str], where: str = "mapping") -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) \
            or (low is not None and value < low) or (high is not None and value > high):
        bounds = ""
        if low is not None:
            bounds = " from {}".format(low) + ("" if high is None else " to {}".format(high))
        problems.append("{}.{}: must be an integer{}".format(where, key, bounds))
        return default
    return value


def _rating_table(table: Any, default_rating: int, default_confidence: int,
                  problems: List[str]) -> List[Tuple[int, int]]:
    """Per h_type rank: (rating, confidence)."""
    if not isinstance(table, Mapping):
        problems.append("mapping.rating_table: must map h_types to {rating, confidence}")
        table = {}
    for key in table:
        if key not in H_RANK:
            problems.append("mapping.rating_table.{}: unknown h_type (one of {})".format(
                key, ", ".join(H_TYPES)))
    by_rank = []
    for name in H_TYPES:
        entry = table.get(name) or {}
        if not isinstance(entry, Mapping):
            problems.append("mapping.rating_table.{}: must be {{rating, confidence}}".format(name))
            entry = {}
        rating = _int_setting(entry, "rating", default_rating, 0, 5, problems,
                              "mapping.rating_table." + name)
        confidence = _int_setting(entry, "confidence", default_confidence, 0, 100, problems,
                                  "mapping.rating_table." + name)
        by_rank.append((rating, confidence))
    return by_rank


# --------------------------------------------------------------------------- xid and dates

def group_xid(sid: str, group_type: str = "Report", owner: str = "") -> str:
    """The xid of the group created for submission ``sid``.

    ``assemblyline_threatconnect:<group type>:<sid>:<12 hex of sha256(owner)>``:
    readable, stable across runs, distinct per group type (so changing
    ``mapping.group_type`` creates a new group instead of clashing with the old
    one's type) and per ThreatConnect owner (xids are unique per instance).
    """
    owner_hash = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:12]
    if len(sid) > MAX_SID_IN_XID:  # any sid gives a bounded xid (still one per sid)
        sid = "sha256-" + hashlib.sha256(sid.encode("utf-8")).hexdigest()
    return "{}:{}:{}:{}".format(XID_PREFIX, group_type.lower(), sid, owner_hash)


def tc_datetime(value: Any) -> Optional[str]:
    """ISO 8601 (``Z``, offsets, fractions) -> ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    date_part, sep, time_part = text.partition("T")
    if sep and "." in time_part:  # fromisoformat on 3.8 wants exactly 3 or 6 fraction digits
        whole, _, rest = time_part.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
        time_part = whole + "." + (fraction + "000000")[:6] + zone
        text = date_part + "T" + time_part
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def score_h_type(score: Any, verdict: Any = None) -> Optional[str]:
    """h_type of a submission or file: from its score, else from the verdict string."""
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        verdict = verdict_for(score)  # Assemblyline's thresholds, in one place
    if isinstance(verdict, str):
        return VERDICT_H_TYPES.get(verdict.strip().lower())
    return None


# --------------------------------------------------------------------------- the build

class _Submission:
    """The parts of the results document every indicator needs."""

    def __init__(self, results: Mapping[str, Any]):
        if not isinstance(results, Mapping):
            raise InputError("submission results must be an object, got {}".format(
                type(results).__name__))
        sid = results.get("sid")
        if not isinstance(sid, str) or not sid or len(sid) > 64 \
                or not sid.replace("-", "").replace("_", "").isalnum() or not sid.isascii():
            raise InputError("submission results: 'sid' must be an Assemblyline submission id")
        self.sid = sid
        tags = results.get("tags")
        files = results.get("files")
        if tags is None:
            tags = []
        if files is None:
            files = []
        if not isinstance(tags, (list, tuple)):
            raise InputError("submission results: 'tags' must be a list")
        if not isinstance(files, (list, tuple)):
            raise InputError("submission results: 'files' must be a list")
        self.tags = tags
        self.files = [f for f in files if isinstance(f, Mapping)]
        self.invalid_files = [f for f in files if not isinstance(f, Mapping)]
        metadata = results.get("metadata")
        self.metadata = metadata if isinstance(metadata, Mapping) else {}
        score = results.get("max_score")
        self.score = score if isinstance(score, (int, float)) and not isinstance(score, bool) else None
        if self.score is not None and not math.isfinite(self.score):
            raise InputError("submission results: max_score must be a finite number, not {!r}".format(score))
        self.verdict = results.get("verdict") if isinstance(results.get("verdict"), str) else None
        self.h_type = score_h_type(self.score, self.verdict)
        self.classification = results.get("classification")
        self.date = tc_datetime(results.get("submitted_at"))
        self.completed = tc_datetime(results.get("completed_at"))
        al_url = results.get("al_url")
        self.al_url = al_url if isinstance(al_url, str) and al_url.startswith(("https://", "http://")) \
            and al_url.isprintable() and " " not in al_url else None
        self.state = results.get("state")
        self.partial = bool(results.get("partial"))
        truncated = results.get("truncated")
        cut = truncated.get("tags") if isinstance(truncated, Mapping) else None
        self.tags_cut = cut if type(cut) is int and cut > 0 else 0
        by_h_type = truncated.get("tags_by_h_type") if isinstance(truncated, Mapping) else None
        self.tags_cut_by_h_type = {str(k): v for k, v in by_h_type.items() if type(v) is int} \
            if isinstance(by_h_type, Mapping) else {}
        self.submitted = next((f for f in self.files if f.get("extracted") is not True), None)
        attack = results.get("attack")
        self.attack = attack if isinstance(attack, list) else []
        self.file_name = self._file_name()

    def _file_name(self) -> str:
        path = self.metadata.get("file_path")
        if isinstance(path, str) and path.strip():
            name = _split_path(path)[1]
            if name:
                return clean_text(name, MAX_FILE_NAME_LENGTH)
        if self.submitted is not None and isinstance(self.submitted.get("name"), str):
            name = clean_text(self.submitted["name"], MAX_FILE_NAME_LENGTH)
            if name:
                return name
        return self.sid


def _split_path(path: str) -> Tuple[str, str]:
    """(directory, file name) of a POSIX or Windows path."""
    module = ntpath if ("\\" in path and "/" not in path) or path[1:3] == ":\\" else posixpath
    return module.split(path.strip())


class _Rejections:
    def __init__(self):
        self.items: Dict[Tuple[str, str, str], Dict[str, str]] = {}

    def add(self, value: Any, tag_type: Any, reason: str, detail: str) -> None:
        text = value if isinstance(value, str) else repr(value)
        if len(text) > MAX_REJECTED_VALUE_LENGTH:
            text = text[:MAX_REJECTED_VALUE_LENGTH] + "...[{} more]".format(
                len(text) - MAX_REJECTED_VALUE_LENGTH)
        kind = tag_type if isinstance(tag_type, str) else repr(tag_type)
        key = (kind, text, reason)
        if key not in self.items:
            self.items[key] = {"value": text, "type": kind, "reason": reason, "detail": detail}

    def sorted(self) -> List[Dict[str, str]]:
        return [self.items[key] for key in sorted(self.items)]


def build_indicators(results: Mapping[str, Any], settings: Mapping[str, Any]) -> BuildResult:
    """Map one submission's results to ThreatConnect indicators and its group.

    Raises ``InputError`` when ``results`` is not a results document (no sid,
    tags not a list ...) and ``ConfigError`` for unusable mapping settings.
    Bad individual values never raise: they are listed in ``rejected``.
    """
    return _build(results, settings)


def _build(results: Mapping[str, Any], settings: Mapping[str, Any]) -> BuildResult:
    conf = MappingSettings(settings)
    sub = _Submission(results)
    counts = dict.fromkeys(TC_TYPES + FILTER_REASONS + OTHER_COUNTS, 0)
    rejections = _Rejections()
    xid = group_xid(sub.sid, conf.group_type, conf.owner)
    warnings: List[str] = []
    if sub.state not in (None, "completed"):
        warnings.append("submission state is {!r}, not 'completed'".format(sub.state))
    if sub.partial:
        warnings.append("submission results are partial; re-run when complete")
    if sub.tags_cut:
        levels = ", ".join("{} {}".format(n, h) for h, n in sorted(sub.tags_cut_by_h_type.items(),
                                                                  key=lambda kv: -H_RANK.get(kv[0], -1)))
        warnings.append("{} tags were cut by get_submission_results (max_tags; the most severe are "
                        "kept first){}: raise max_tags to map them".format(
                            sub.tags_cut, " ({})".format(levels) if levels else ""))

    merged, attributions = _collect_tags(sub.tags, conf, counts, rejections)
    for entry in sub.invalid_files:  # counted and listed, never dropped unseen
        rejections.add(entry, "file", "invalid_file_entry", "a files entry is not an object")
        counts["rejected"] += 1
    _collect_files(sub, conf, merged, counts, rejections)

    kept = _apply_cap(merged, conf.max_indicators, counts)
    context = _Context(sub, conf, attributions, xid, counts, warnings)
    named = _attribution_groups(attributions, conf)
    context.group_refs = [{"groupXid": xid}] + [{"groupXid": g["xid"]} for g in named]
    indicators = _render(merged, kept, context, conf, counts)
    group = _group(sub, conf, context, xid)
    return BuildResult(indicators, [group] + named, rejections.sorted(), counts, xid, warnings)


def _attribution_groups(attributions, conf: MappingSettings) -> List[Dict[str, Any]]:
    """A Malware / Adversary / Campaign group per family / actor / campaign
    (``mapping.attribution_groups``) and a Vulnerability group per CVE id among the exploits
    (``mapping.vulnerability_groups``); xids from owner, type and name, so every submission
    naming one shares it."""
    found: Dict[str, Dict[str, Any]] = {}
    for _, order, name, _ in attributions:
        tag_type = ATTRIBUTION_TYPES[order]
        group_type = ATTRIBUTION_GROUP_TYPES.get(tag_type) if conf.attribution_groups else None
        if tag_type == "attribution.exploit" and conf.vulnerability_groups and _CVE.match(name):
            group_type, name = "Vulnerability", name.upper()
        if group_type is None:
            continue
        xid = named_group_xid(group_type, name, conf.owner)
        if xid not in found:
            found[xid] = {"type": group_type, "name": name[:MAX_GROUP_NAME_LENGTH], "xid": xid,
                          "tag": [{"name": conf.source_tag}] if conf.source_tag else [],
                          "attribute": [{"type": ATTRIBUTE_TYPE, "displayed": True,
                                         "value": "Named by Assemblyline ({})".format(tag_type)}]}
    return [found[x] for x in sorted(found)]


def named_group_xid(group_type: str, name: str, owner: str = "") -> str:
    """One xid per (owner, group type, case-folded name)."""
    digest = hashlib.sha256("{}\n{}\n{}".format(owner, group_type, name.casefold()).encode("utf-8"))
    return "{}:{}:{}".format(XID_PREFIX, group_type.lower().replace(" ", "-"), digest.hexdigest()[:40])


def _collect_tags(tags: Sequence[Any], conf: MappingSettings, counts: Dict[str, int],
                  rejections: _Rejections):
    """One pass over the tags: filter, normalise, merge duplicates.

    Returns the sightings (``Buckets``) and the attribution tags
    ([(rank, order, name, sha256s)]).
    """
    merged: Buckets = {name: {} for name in TC_TYPES}
    attributions = []
    host_names = HostNames()  # shared by Host tags, URLs, e-mail addresses, non-web URIs
    values = _value_memos(host_names)
    routes = {}  # tag type -> (bucket, the kind's _ValueMemo and its tables)
    for type_name, kind in TAG_KINDS.items():
        if type_name in conf.tag_types:  # a switched-off type counts as not_indicator
            memo = values[kind]
            routes[type_name] = (merged[kind], memo, memo.summaries, memo.private, memo.refanged,
                                 memo.hosts)
    fields = _tag_fields
    rank_of = H_RANK
    min_rank = conf.min_rank
    drop_safelisted = conf.drop_safelisted
    drop_private = conf.drop_private
    safelisted = below = private = duplicate = refanged = not_indicator = rejected = 0
    for tag in tags:
        if type(tag) is not dict:
            if not isinstance(tag, Mapping):
                rejections.add(tag, "<tag>", "malformed_tag", "tag is not an object")
                rejected += 1
                continue
            tag = _tag_snapshot(tag)
        try:
            tag_type, raw, h_type, is_safelisted, classification, shas = fields(tag)
        except KeyError:  # a key is missing: read it as None, like dict.get
            tag_type, raw, h_type, is_safelisted, classification, shas = fields(_tag_snapshot(tag))
        if type(tag_type) is not str:
            rejections.add(raw, tag_type, "malformed_tag", "type is not a string")
            rejected += 1
            continue
        route = routes.get(tag_type)
        if route is None:
            if tag_type in _ATTRIBUTION_ORDER:
                attributions.append(tag)
            else:
                not_indicator += 1
            continue
        if drop_safelisted and is_safelisted and is_true(is_safelisted):
            safelisted += 1
            continue
        rank = rank_of.get(h_type) if type(h_type) is str else None
        if rank is None:
            rejections.add(raw, tag_type, "unknown_h_type",
                           "h_type must be one of " + ", ".join(H_TYPES))
            rejected += 1
            continue
        if rank < min_rank:
            below += 1
            continue
        if type(raw) is not str:
            rejections.add(raw, tag_type, "malformed_tag", "value is not a string")
            rejected += 1
            continue
        bucket, value_memo, summaries, not_public, was_refanged, url_hosts = route
        summary = summaries.get(raw)
        if summary is None:
            summary = summaries[raw] = value_memo.summary(raw)
        if type(summary) is not str:  # a ValueRejected
            moved = _authority_of_non_web_uri(raw, host_names) \
                if summary.reason == "unsupported_scheme" else None
            if moved is None:
                rejections.add(raw, tag_type, summary.reason, summary.detail)
                rejected += 1
                continue
            kind, summary, public = moved  # tcp://1.2.3.4:443/ -> the Address it contacts
            bucket, host = merged[kind], None
        else:
            if was_refanged and raw in was_refanged:
                refanged += 1
            public = summary not in not_public
            host = url_hosts.get(summary) if url_hosts else None
        if drop_private and not public:
            private += 1
            continue
        sighting = bucket.get(summary)
        if sighting is None:
            bucket[summary] = _sighting(rank, classification, _files_key(shas), None, host)
        else:
            duplicate += 1
            bucket[summary] = _merge(sighting, rank, classification, _files_key(shas))
    counts["tags_total"] += len(tags)
    counts["safelisted"] += safelisted
    counts["below_h_type"] += below
    counts["private"] += private
    counts["duplicate"] += duplicate
    counts["refanged"] += refanged
    counts["not_indicator"] += not_indicator
    counts["rejected"] += rejected
    return merged, _collect_attributions(attributions, conf, counts, rejections)


def _authority_of_non_web_uri(raw: str, host_names: HostNames) -> Optional[Tuple[str, str, bool]]:
    """``(TC type, summary, is_public)`` of the host a non-web URI (``tcp://``, ``udp://``,
    ``smb://`` ...) contacts: an Address or a Host; None when it has none worth sending."""
    try:
        host = url_host(refang_url(raw.strip()))
    except ValueRejected:
        return None
    if not host:
        return None
    try:
        address, public = normalise_ip(host)
        return "Address", address, public
    except ValueRejected:
        pass
    try:
        name, public = host_names(host)
    except ValueRejected:
        return None
    return "Host", name, public


def _hashable(shas) -> List[str]:
    try:
        return [sha for sha in shas if type(sha) is str]
    except TypeError:  # not iterable
        return []


class _ValueMemo:
    """One indicator kind's normaliser, memoised for one build: raw value -> summary.

    ``summaries`` maps each raw value met to its summary (a str) or to why it
    was rejected (a ``ValueRejected``). What else the build needs is kept
    beside it, in sets and dicts of strings: summaries that are not public
    (``private``), raw values that had to be refanged (``refanged``) and each
    URL summary's host (``hosts``). Strings are not containers: a tuple per
    value would add to the garbage collector's work (see ``Sighting``).
    """

    __slots__ = ("summaries", "private", "refanged", "hosts", "_normalise", "_unfang")

    def __init__(self, normalise: Callable[[str], Tuple[Any, ...]], unfang: Callable[[str], str]):
        self.summaries: Dict[str, Union[str, ValueRejected]] = {}
        self.private: set = set()
        self.refanged: set = set()
        self.hosts: Dict[str, str] = {}
        self._normalise = normalise  # value -> (summary, is_public[, url host])
        self._unfang = unfang

    def summary(self, raw: str) -> Union[str, ValueRejected]:
        """The outcome of a raw value not in ``summaries`` yet (the caller files it there)."""
        value = raw.strip()
        plain = self._unfang(value)
        try:
            found = self._normalise(plain)
        except ValueRejected as rejected:  # kept in the memo: a fresh copy holds no
            return ValueRejected(rejected.reason, rejected.detail)  # traceback (no cycle)
        summary = found[0]
        if not found[1]:
            self.private.add(summary)
        if plain != value:
            self.refanged.add(raw)
        if len(found) > 2:
            self.hosts[summary] = found[2]
        return summary


def _value_memos(host_names: HostNames) -> Dict[str, _ValueMemo]:
    """TC type -> its memoised normaliser, host names normalised through ``host_names``."""
    return {
        "Address": _ValueMemo(normalise_ip, refang),
        "Host": _ValueMemo(host_names, refang),
        "URL": _ValueMemo(lambda value: normalise_url(value, host_names), refang_url),
        "EmailAddress": _ValueMemo(lambda value: normalise_email(value, host_names), refang),
        "Mutex": _ValueMemo(normalise_mutex, str),
        "Registry Key": _ValueMemo(normalise_registry_key, str),
        "User Agent": _ValueMemo(normalise_user_agent, str),
    }


def _collect_attributions(tags, conf: MappingSettings, counts: Dict[str, int],
                          rejections: _Rejections):
    """Attribution tags that pass the filters: [(−rank, order, name, sha256s)]."""
    found = []
    for tag in tags:
        counts["attribution"] += 1
        if conf.drop_safelisted and is_true(tag.get("safelisted")):
            counts["safelisted"] += 1
            continue
        h_type = tag.get("h_type")
        rank = H_RANK.get(h_type) if type(h_type) is str else None
        if rank is None:
            rejections.add(tag.get("value"), tag.get("type"), "unknown_h_type",
                           "h_type must be one of " + ", ".join(H_TYPES))
            counts["rejected"] += 1
            continue
        if rank < conf.min_rank:
            counts["below_h_type"] += 1
            continue
        name = tag_name(tag.get("value"))
        if not name:
            rejections.add(tag.get("value"), tag.get("type"), "invalid_tag",
                           "not usable as a ThreatConnect tag name")
            counts["rejected"] += 1
            continue
        shas = tag.get("sha256s") or ()
        if type(shas) is str:
            shas = (shas,)
        found.append((-rank, _ATTRIBUTION_ORDER[tag["type"]], name,
                      frozenset(sha.lower() for sha in _hashable(shas))))
    return found


def _collect_files(sub: _Submission, conf: MappingSettings, merged: Buckets,
                   counts: Dict[str, int], rejections: _Rejections) -> None:
    """File indicators for the submitted file and, optionally, the extracted ones."""
    by_hash: Dict[Tuple[str, str], str] = {}  # (hash kind, digest) -> summary in merged["File"]
    for entry in sub.files:
        extracted = entry.get("extracted") is True
        if extracted and not conf.include_extracted:
            continue
        own_score = entry.get("score")
        if isinstance(own_score, float) and not math.isfinite(own_score):
            rejections.add(entry.get("sha256") or entry.get("name"), "file", "invalid_score",
                           "file score {!r} is not a finite number".format(own_score))
            counts["rejected"] += 1
            continue
        if isinstance(own_score, (int, float)) and not isinstance(own_score, bool):
            score, h_type = own_score, score_h_type(own_score)
        else:
            score, h_type = sub.score, sub.h_type
        if score is None and h_type is not None:  # only a verdict: use its threshold
            score = {"malicious": 1000, "suspicious": 300, "info": 0}.get(h_type, -1)
        if score is None or h_type is None or score < conf.min_file_score:
            counts["file_below_min_score"] += 1
            continue
        try:
            hashes = _file_hashes(entry)
        except ValueRejected as rejected:
            rejections.add(entry.get("sha256") or entry.get("md5") or entry.get("name"),
                           "file", rejected.reason, rejected.detail)
            counts["rejected"] += 1
            continue
        occurrence = _occurrence(sub, entry, conf.send_file_path)
        bucket = merged["File"]
        previous = next((s for k, s in by_hash.items() if hashes.get(k[0]) == k[1]), None)
        if previous is not None:  # the same file again (by any hash): merge
            counts["duplicate"] += 1
            same = bucket.pop(previous)
            file, same_rank = same[FILE], same[RANK]
            for kind, value in hashes.items():
                file["hashes"].setdefault(kind, value)
            hashes = file["hashes"]
            rank = max(same_rank, H_RANK[h_type])
            if occurrence not in file["occurrences"]:
                file["occurrences"].append(occurrence)
            if file["size"] is None:
                file["size"] = entry.get("size")
        else:
            file = {"hashes": hashes, "size": entry.get("size"), "occurrences": [occurrence]}
            rank = H_RANK[h_type]
        file["hashes"] = hashes = {k: hashes[k] for k in ("md5", "sha1", "sha256") if k in hashes}
        summary = " : ".join(hashes.values())
        bucket[summary] = _sighting(rank, sub.classification, hashes.get("sha256", ""), file, None)
        for kind, value in hashes.items():
            by_hash[(kind, value)] = summary


def _file_hashes(entry: Mapping[str, Any]) -> Dict[str, str]:
    hashes = {}
    for kind in ("md5", "sha1", "sha256"):
        value = entry.get(kind)
        if value is not None and value != "":
            hashes[kind] = normalise_hash(kind, value)
    if not hashes:
        raise ValueRejected("invalid_hash", "file has no md5, sha1 or sha256")
    return hashes


def _occurrence(sub: _Submission, entry: Mapping[str, Any], send_path: bool = False) -> Dict[str, str]:
    occurrence = {}
    path = sub.metadata.get("file_path")
    if entry is sub.submitted and isinstance(path, str) and path.strip():  # the file that was ingested
        directory, name = _split_path(path)
        name = clean_text(name, MAX_FILE_NAME_LENGTH)
        directory = clean_text(directory, 1000)
        if name:
            occurrence["fileName"] = name
        if directory and send_path:  # the st2 host's directory leaves the site only on opt-in
            occurrence["path"] = directory
    if "fileName" not in occurrence and isinstance(entry.get("name"), str):
        name = clean_text(entry["name"], MAX_FILE_NAME_LENGTH)
        if name:
            occurrence["fileName"] = name
    if sub.date:
        occurrence["date"] = sub.date
    return occurrence


def _apply_cap(merged: Buckets, cap: int, counts: Dict[str, int]):
    """None when everything fits, else the set of (type, summary) kept."""
    total = sum(len(bucket) for bucket in merged.values())
    if total <= cap:
        return None
    order = sorted((-sighting[RANK], tc_type, summary)
                   for tc_type, bucket in merged.items() for summary, sighting in bucket.items())
    counts["overflow"] = total - cap
    return {(tc_type, summary) for _, tc_type, summary in order[:cap]}


def _fit(text: str, suffix: str) -> str:
    """``text + suffix`` in MAX_ATTRIBUTE_LENGTH characters, shortening ``text``."""
    room = MAX_ATTRIBUTE_LENGTH - len(suffix)
    if len(text) > room:
        text = text[:max(room - 3, 0)] + "..."
    return (text + suffix)[:MAX_ATTRIBUTE_LENGTH]


class _Context:
    """Per-file-set tags and description, per-classification labels (memoised)."""

    def __init__(self, sub: _Submission, conf: MappingSettings, attributions, xid: str,
                 counts: Dict[str, int], warnings: List[str]):
        self.sub = sub
        self.conf = conf
        self.counts = counts
        self.warnings = warnings
        self.xid = xid
        self.group_refs = [{"groupXid": xid}]
        self.everywhere = [a for a in attributions if not a[3]]
        self.by_sha: Dict[str, list] = {}
        for attribution in attributions:
            for sha in attribution[3]:
                self.by_sha.setdefault(sha, []).append(attribution)
        self.all_attributions = attributions
        self.files: Dict[str, List[Dict[str, str]]] = {}  # _files_key -> tags
        self.by_names: Dict[Tuple[str, ...], List[Dict[str, str]]] = {}
        self.by_attributed: Dict[Tuple[str, ...], List[Dict[str, str]]] = {}
        self.all_tags: Optional[List[Dict[str, str]]] = None
        self.base_tags = [{"name": conf.source_tag}] if conf.source_tag else []
        self.attributes = [{"type": ATTRIBUTE_TYPE, "value": self.indicator_description(),
                            "displayed": True}]
        self.labels: Dict[Any, Optional[str]] = {}
        self.unmapped: Dict[str, None] = {}

    def tag_names(self, attributions) -> List[str]:
        names = [self.conf.source_tag] if self.conf.source_tag else []
        seen = {name.casefold() for name in names}
        limit = self.conf.max_attribution_tags
        added = 0
        for _, _, name, _ in sorted(set((a[0], a[1], a[2], None) for a in attributions)):
            if added >= limit:
                break
            folded = name.casefold()
            if folded in seen:
                continue
            seen.add(folded)
            names.append(name)
            added += 1
        return names

    def tag_list(self, names: Sequence[str]) -> List[Dict[str, str]]:
        """The shared ``tag`` list with these names (one list per distinct content)."""
        names = tuple(names)
        found = self.by_names.get(names)
        if found is None:
            found = self.by_names[names] = [{"name": name} for name in names]
        return found

    def for_files(self, files: str) -> List[Dict[str, str]]:
        """The tag list of an indicator found in these files (``_files_key``; shared by
        content, memoised)."""
        found = self.files.get(files)
        if found is None:
            found = self.files[files] = self._for_files(_files_of(files))
        return found

    def _for_files(self, strings: List[str]) -> List[Dict[str, str]]:
        if not self.all_attributions:
            return self.base_tags
        strings = [sha.lower() for sha in strings]
        if not strings:  # no file named: every attribution applies
            if self.all_tags is None:
                self.all_tags = self.tag_list(self.tag_names(self.all_attributions))
            return self.all_tags
        by_sha = self.by_sha
        attributed = tuple(sorted({sha for sha in strings if sha in by_sha}))
        found = self.by_attributed.get(attributed)
        if found is None:
            candidates = list(self.everywhere)
            for sha in attributed:
                candidates.extend(by_sha[sha])
            found = self.by_attributed[attributed] = self.tag_list(self.tag_names(candidates))
        return found

    def indicator_description(self) -> str:
        """Short on purpose: it is serialised once per indicator."""
        sub = self.sub
        # With attributeWriteType Singleton this is the latest sighting only; the record of
        # every submission is its group (associations are additive), with its own Description.
        if sub.al_url:
            return _fit("Latest Assemblyline analysis: {}".format(sub.file_name), ": " + sub.al_url)
        return _fit("Latest Assemblyline analysis: {}".format(sub.file_name),
                    ", submission {}".format(sub.sid))

    def group_description(self) -> str:
        sub = self.sub
        facts = ["submission " + sub.sid]
        if sub.score is not None:
            facts.append("score {}".format(sub.score))
        if sub.verdict:
            facts.append("verdict {}".format(clean_text(sub.verdict, 40)))
        if sub.submitted is not None and isinstance(sub.submitted.get("sha256"), str):
            facts.append("sha256 " + clean_text(sub.submitted["sha256"], 64))
        text = "Assemblyline analysis of {} ({})".format(sub.file_name, ", ".join(facts))
        return _fit(text, (": " + sub.al_url) if sub.al_url else "")

    def label(self, classification: Any) -> Tuple[Optional[List[Dict[str, str]]], bool]:
        """(securityLabel list or None, True when a classification had no label)."""
        if classification is _MIXED or classification is None or classification == "":
            classification = self.sub.classification
        if not isinstance(classification, str):
            classification = None if classification is None else repr(classification)
        found = self.labels.get(classification)
        if found is None:
            label = self.conf.label_for(classification)
            unmapped = label is None and bool(classification)
            if label and label.upper() in PERMISSIVE_LABELS and not self.conf.send_permissive_labels:
                label = ""  # mapped on purpose to no label: the indicator's other labels stand
            if unmapped and classification not in self.unmapped:
                self.unmapped[classification] = None
                self.warnings.append(
                    "classification {!r} has no security label in mapping.classification_labels"
                    .format(classification))
            found = self.labels[classification] = (
                [{"name": label}] if label else None, unmapped)
        return found


def _render(merged: Buckets, kept, context: _Context, conf: MappingSettings,
            counts: Dict[str, int]) -> List[Dict[str, Any]]:
    """The indicator dicts, sorted by type then summary.

    The fields an indicator shares with others (its ``tag``, ``securityLabel``,
    ``attribute`` and ``associatedGroups`` lists and the seen dates) are bound
    once per distinct tag and label list, in one ``shared`` dict, and the lists
    themselves are built once per distinct value (read-only output: copy an
    indicator before changing its lists).
    """
    indicators = []
    ratings = conf.rating_by_rank
    seen = _seen_dates(context.sub) if conf.seen_dates else None
    file_details = _file_details(context.sub.tags, conf.detail_attributes) \
        if conf.detail_attributes else {}
    shared_by_lists: Dict[Tuple[int, int], Dict[str, Any]] = {}  # (id(tags), id(labels)) -> fields
    labels_memo, tags_memo = context.labels, context.files  # read here before asking context
    urls: List[Dict[str, Any]] = []  # URL indicators and their hosts, for associations
    url_hosts: List[str] = []
    unmapped = 0
    sent: Dict[str, set] = {}  # Host and Address summaries sent, for URL associations
    for tc_type in TC_TYPES:
        bucket = merged[tc_type]
        built = 0
        start = len(indicators)
        for summary in sorted(bucket):
            if kept is not None and (tc_type, summary) not in kept:
                continue
            sighting = bucket.pop(summary)  # (freed as its indicator is made)
            classification = sighting[CLASSIFICATION]
            found = labels_memo.get(classification) if type(classification) is str else None
            labels, no_label = found if found is not None else context.label(classification)
            if no_label and conf.refuse_unlabelled:
                counts["unlabelled"] += 1
                continue
            unmapped += no_label
            rating, confidence = ratings[sighting[RANK]]
            tags = tags_memo.get(sighting[FILES])
            if tags is None:
                tags = context.for_files(sighting[FILES])
            if sighting[FILE] is not None:
                indicator = _file_indicator(summary, rating, confidence, sighting[FILE], tags, labels,
                                            context, file_details, seen)
            else:
                shared = shared_by_lists.get((id(tags), id(labels)))
                if shared is None:
                    shared = shared_by_lists[(id(tags), id(labels))] = _shared_fields(
                        tags, labels, context.attributes, context.group_refs, seen)
                indicator = {"type": tc_type, "summary": summary, "rating": rating,
                             "confidence": confidence, **shared}
                if sighting[HOST] is not None:
                    urls.append(indicator)
                    url_hosts.append(sighting[HOST])
            indicators.append(indicator)
            built += 1
        counts[tc_type] = built
        if tc_type in ("Host", "Address"):
            sent[tc_type] = {indicator["summary"] for indicator in indicators[start:]}
    counts["unmapped_classification"] += unmapped
    if conf.url_host_associations:
        _associate_urls_with_hosts(urls, url_hosts, sent)
    return indicators


def _shared_fields(tags: List[Dict[str, str]], labels: Optional[List[Dict[str, str]]],
                   attributes: List[Dict[str, Any]], groups: List[Dict[str, str]],
                   seen: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """An indicator's fields after ``confidence``, in output order."""
    fields: Dict[str, Any] = {"tag": tags}
    if labels is not None:
        fields["securityLabel"] = labels
    fields["attribute"] = attributes
    fields["associatedGroups"] = groups
    if seen:
        fields.update(seen)
    return fields


def _file_indicator(summary: str, rating: int, confidence: int, file: Mapping[str, Any],
                    tags: List[Dict[str, str]], labels: Optional[List[Dict[str, str]]],
                    context: _Context, file_details: Mapping[str, List[Dict[str, Any]]],
                    seen: Optional[Dict[str, str]]) -> Dict[str, Any]:
    indicator = {"type": "File", "summary": summary, "rating": rating, "confidence": confidence}
    _file_fields(indicator, file)
    details = file_details.get(file["hashes"].get("sha256"))
    attributes = context.attributes + details if details else context.attributes
    indicator.update(_shared_fields(tags, labels, attributes, context.group_refs, seen))
    return indicator


def _associate_urls_with_hosts(urls: List[Dict[str, Any]], hosts: List[str],
                               sent: Mapping[str, set]) -> None:
    """Each URL indicator is associated with the Host or Address indicator of its host when
    that one is sent too (``associatedIndicators``, one per URL)."""
    for indicator, host in zip(urls, hosts):
        for kind in ("Host", "Address"):
            if host in sent[kind]:
                indicator["associatedIndicators"] = [{"summary": host, "indicatorType": kind}]
                break


def _file_details(tags: Sequence[Any], attribute_types: Mapping[str, str]) -> Dict[str, List[Dict[str, Any]]]:
    """sha256 -> File attributes from section tags (ports, JA3, imphash, certificate
    thumbprints), typed as ``mapping.detail_attributes`` says; sorted, each value once."""
    found: Dict[str, Dict[Tuple[str, str], None]] = {}
    for tag in tags:
        if not isinstance(tag, Mapping) or tag.get("type") not in attribute_types or is_true(tag.get("safelisted")):
            continue
        value = tag.get("value")
        text = clean_text(str(value), MAX_DETAIL_LENGTH) if isinstance(value, (str, int)) else ""
        if not text:
            continue
        for sha256 in tag.get("sha256s") or ():
            if isinstance(sha256, str):
                found.setdefault(sha256.lower(), {})[(attribute_types[tag["type"]], text)] = None
    return {sha: [{"type": t, "value": v} for t, v in sorted(pairs)] for sha, pairs in found.items()}


def _seen_dates(sub: _Submission) -> Optional[Dict[str, str]]:
    """firstSeen = when the file was submitted, lastSeen = when the analysis completed."""
    seen = {}
    if sub.date:
        seen["firstSeen"] = sub.date
    if sub.completed or sub.date:
        seen["lastSeen"] = sub.completed or sub.date
    return seen or None


def most_restrictive_labels(labels: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """One TLP label, the most restrictive of ``labels``; other labels kept, in order."""
    tlp = [label for label in labels if str(label.get("name", "")).upper() in TLP_RANK]
    if len(tlp) < 2:
        return list(labels)
    keep = max(tlp, key=lambda label: TLP_RANK[str(label["name"]).upper()])
    return [label for label in labels if label is keep or label not in tlp]


def _file_fields(indicator: Dict[str, Any], extra: Mapping[str, Any]) -> None:
    indicator.update(extra["hashes"])
    size = extra.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        indicator["size"] = size
    occurrences = sorted((o for o in extra["occurrences"] if o),
                         key=lambda o: (o.get("fileName", ""), o.get("path", ""), o.get("date", "")))
    if occurrences:
        indicator["fileOccurrence"] = occurrences


def _attack_tag_names(attack: Sequence[Any], min_rank: int) -> List[str]:
    """``T1059 - Command and Scripting Interpreter`` per ATT&CK pattern at or above min_h_type."""
    names = []
    for entry in attack:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            continue
        if H_RANK.get(entry.get("h_type"), -1) < min_rank:
            continue
        pattern = entry.get("pattern") if isinstance(entry.get("pattern"), str) else ""
        name = tag_name("{} - {}".format(entry["id"], pattern) if pattern.strip() else entry["id"])
        if name:
            names.append(name)
    return names


def _group(sub: _Submission, conf: MappingSettings, context: _Context, xid: str) -> Dict[str, Any]:
    group_type = conf.group_type
    prefix = "Assemblyline {}: ".format(sub.sid)
    name = prefix + sub.file_name
    if len(name) > MAX_GROUP_NAME_LENGTH:
        name = name[:MAX_GROUP_NAME_LENGTH - 3].rstrip() + "..."
    group: Dict[str, Any] = {"type": group_type, "name": name, "xid": xid}
    for field in GROUP_REQUIRED_FIELDS[group_type]:
        if field == "fileName":
            group["fileName"] = sub.file_name
        elif field in ("publishDate", "eventDate"):
            if sub.date is None:
                raise InputError("submission results: 'submitted_at' must be an ISO 8601 date "
                                 "for a {} group ({})".format(group_type, field))
            group[field] = sub.date
        elif field == "status":
            group["status"] = INCIDENT_STATUS
    names = context.tag_names(context.all_attributions)
    if conf.attack_tags:
        folded = {n.casefold() for n in names}
        names += [n for n in _attack_tag_names(sub.attack, conf.min_rank) if n.casefold() not in folded]
    group["tag"] = [{"name": n} for n in names]
    labels = context.label(None)[0]
    if labels is not None:
        group["securityLabel"] = [dict(label) for label in labels]
    group["attribute"] = [{"type": ATTRIBUTE_TYPE, "value": context.group_description(),
                           "displayed": True}]
    return group
