"""Shape an Assemblyline analysis into the pack's compact, bounded result.

Input: the submission summary (``/submission/summary/<sid>/``: tag tuples
``[value, h_type, safelisted, classification]`` grouped by kind, plus ``map``
tying tags to files) and the full result (``/submission/full/<sid>/``: the
record with ``file_infos`` hashes and the ``file_tree`` of extracted files).
Output: the dict ``get_submission_results`` returns and ``build_indicators``
consumes; its size is bounded by ``max_tags`` and ``max_files``.
"""
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from lib.errors import InputError

# Assemblyline's score thresholds (reference §6); below 0 is safe.
VERDICT_THRESHOLDS = ((1000, "malicious"), (700, "highly_suspicious"), (300, "suspicious"), (0, "info"))
# Assemblyline's tag levels (``h_type``), least to most severe.
H_TYPES = ("safe", "info", "suspicious", "malicious")
H_RANK = {name: rank for rank, name in enumerate(H_TYPES)}
# Verdict (verdict_for) -> h_type: the tag h_types have no "highly suspicious".
VERDICT_H_TYPES = {"malicious": "malicious", "highly_suspicious": "suspicious",
                   "suspicious": "suspicious", "info": "info", "safe": "safe"}
METADATA_VALUE_LIMIT = 1024
METADATA_KEY_LIMIT = 100  # most metadata keys returned; the rest are counted in truncated.metadata
# Kept first when a submission has more keys than the limit: what the pack itself set and reads back.
METADATA_FIRST = ("file_path", "hostname", "sha256", "ingest_id", "type", "ts")


def verdict_for(score: Optional[int]) -> Optional[str]:
    if score is None:
        return None
    for threshold, verdict in VERDICT_THRESHOLDS:
        if score >= threshold:
            return verdict
    return "safe"


# Assemblyline sids are base62 UUIDs (22 characters); older releases used dashed UUIDs.
_SID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
MAX_SID_LENGTH = 64


def check_sid(sid: Any) -> str:
    """The sid, stripped; raises ``InputError`` unless it looks like an Assemblyline sid."""
    text = sid.strip() if isinstance(sid, str) else ""
    if not text or len(text) > MAX_SID_LENGTH or not _SID_CHARS.issuperset(text):
        raise InputError("sid must be an Assemblyline submission ID (letters, digits, '-' or '_')")
    return text


def is_true(value: Any) -> bool:
    """A JSON flag: ``True`` or the string ``"true"`` (any case); ``"false"``, 0, None are false."""
    if value is True:
        return True
    return isinstance(value, str) and value.strip().lower() == "true"


class TagOrder:
    """The order in which ``max_tags`` keeps tags: what the mapping would drop anyway goes
    last (safelisted ones when ``drop_safelisted``, those below ``min_h_type``), then by
    ``h_type`` (malicious first), then IOC before attribution before the rest."""

    def __init__(self, min_h_type: str = "safe", drop_safelisted: bool = False):
        self.min_rank = H_RANK.get(min_h_type, 0)
        self.drop_safelisted = drop_safelisted

    @classmethod
    def from_mapping(cls, mapping: Optional[Mapping[str, Any]]) -> "TagOrder":
        mapping = mapping or {}
        return cls(mapping.get("min_h_type", "suspicious"), bool(mapping.get("drop_safelisted", True)))

    def key(self, tag: Mapping[str, Any]) -> Tuple[bool, int, int, str, str, str]:
        rank = H_RANK.get(tag["h_type"], -1)
        dropped = rank < self.min_rank or (self.drop_safelisted and tag["safelisted"])
        return (dropped, -rank, _GROUP_PRIORITY.get(tag["group"], 2), tag["group"], tag["type"], tag["value"])


def fetch_results(service: Any, sid: Any, max_tags: int = 1000, max_files: int = 100,
                  order: Optional[TagOrder] = None) -> Dict[str, Any]:
    """Fetch one submission's full result and summary and shape them (``shape_results``)."""
    sid = check_sid(sid)
    full = service.full(sid)
    summary = service.summary(sid)
    return shape_results(summary, full, service.submission_link(sid), max_tags, max_files, order)


def shape_results(summary: Mapping[str, Any], full: Mapping[str, Any], link: str,
                  max_tags: int = 1000, max_files: int = 100,
                  order: Optional[TagOrder] = None) -> Dict[str, Any]:
    files = list(_files(full))
    tags = sorted(list(_tags(summary)) + list(_section_tags(full)), key=(order or TagOrder()).key)
    cut: Dict[str, int] = {}
    for tag in tags[max_tags:]:
        cut[tag["h_type"]] = cut.get(tag["h_type"], 0) + 1
    times = full.get("times") or {}
    score = full.get("max_score")
    metadata, metadata_dropped = _metadata(full.get("metadata") or {})
    return {
        "sid": full.get("sid"),
        "state": full.get("state"),
        "max_score": score,
        "verdict": verdict_for(score),
        "error_count": int(full.get("error_count") or 0),
        "partial": bool(summary.get("partial")) or full.get("state") != "completed",
        "classification": summary.get("classification") or full.get("classification"),
        "submitted_at": times.get("submitted"),
        "completed_at": times.get("completed"),
        "metadata": metadata,
        "files": files[:max_files],
        "tags": tags[:max_tags],
        "attack": _attack(summary),
        "al_url": link,
        "truncated": {"files": max(0, len(files) - max_files), "tags": max(0, len(tags) - max_tags),
                      "tags_by_h_type": dict(sorted(cut.items())), "metadata": metadata_dropped},
    }


# Summary groups kept first, at one h_type, when ``max_tags`` cuts the list.
_GROUP_PRIORITY = {"ioc": 0, "section": 0, "attribution": 1}

# Tag types the summary does not carry, read from the full result's sections.
SECTION_TAG_TYPES = frozenset(("network.tls.sni", "dynamic.mutex", "dynamic.registry_key",
                               "network.user_agent", "network.port", "network.tls.ja3_hash",
                               "file.pe.imports.imphash", "cert.thumbprint"))


def h_type_for(score: Any) -> str:
    """Assemblyline's tag level for the score of the heuristic of the section holding it."""
    if isinstance(score, bool) or not isinstance(score, int):
        return "info"  # a section without a heuristic
    return VERDICT_H_TYPES[verdict_for(score)]


MAX_ATTACK_PATTERNS = 100


def _attack(summary: Mapping[str, Any]) -> List[Dict[str, str]]:
    """The summary's ``attack_matrix`` (``{category: [[id, pattern, h_type], ...]}``): one
    entry per ATT&CK id, its highest level, sorted by id; at most ``MAX_ATTACK_PATTERNS``."""
    found: Dict[str, Dict[str, str]] = {}
    matrix = summary.get("attack_matrix")
    for entries in (matrix.values() if isinstance(matrix, Mapping) else ()):
        for entry in entries if isinstance(entries, (list, tuple)) else ():
            if not isinstance(entry, (list, tuple)) or not entry or not isinstance(entry[0], str):
                continue
            attack_id = entry[0].strip()
            pattern = entry[1] if len(entry) > 1 and isinstance(entry[1], str) else ""
            h_type = entry[2] if len(entry) > 2 and entry[2] in H_RANK else "info"
            current = found.get(attack_id)
            if current is None or H_RANK[h_type] > H_RANK[current["h_type"]]:
                found[attack_id] = {"id": attack_id, "pattern": pattern, "h_type": h_type}
    return [found[k] for k in sorted(found)][:MAX_ATTACK_PATTERNS]


def _section_tags(full: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
    """The ``SECTION_TAG_TYPES`` tags of every service result, one per (type, value): the
    highest level of its sections, every file that produced it, safelisted only if always."""
    found: Dict[Tuple[str, str], Dict[str, Any]] = {}
    results = full.get("results")
    for key, record in (results.items() if isinstance(results, Mapping) else ()):
        result = record.get("result") if isinstance(record, Mapping) else None
        if not isinstance(result, Mapping):
            continue
        sha256 = key.split(".", 1)[0] if isinstance(key, str) else None
        for section in result.get("sections") or ():
            if not isinstance(section, Mapping):
                continue
            heuristic = section.get("heuristic")
            h_type = h_type_for(heuristic.get("score") if isinstance(heuristic, Mapping) else None)
            for tag in section.get("tags") or ():
                if not isinstance(tag, Mapping) or tag.get("type") not in SECTION_TAG_TYPES \
                        or not isinstance(tag.get("value"), str):
                    continue
                entry = found.get((tag["type"], tag["value"]))
                if entry is None:
                    entry = found[(tag["type"], tag["value"])] = {
                        "group": "section", "type": tag["type"], "value": tag["value"], "h_type": h_type,
                        "safelisted": is_true(tag.get("safelisted")),
                        "classification": section.get("classification") or full.get("classification"),
                        "sha256s": []}
                elif H_RANK[h_type] > H_RANK[entry["h_type"]]:
                    entry["h_type"] = h_type
                entry["safelisted"] = entry["safelisted"] and is_true(tag.get("safelisted"))
                if sha256 and sha256 not in entry["sha256s"]:
                    entry["sha256s"].append(sha256)
    for entry in found.values():
        entry["sha256s"].sort()
        yield entry


def _tags(summary: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
    tag_map = summary.get("map") or {}
    for group, by_type in (summary.get("tags") or {}).items():
        for tag_type, tuples in (by_type or {}).items():
            for item in tuples or []:
                parsed = _tag_tuple(item)
                if parsed is None:
                    continue
                value, h_type, safelisted, classification = parsed
                yield {"group": group, "type": tag_type, "value": value, "h_type": h_type,
                       "safelisted": safelisted, "classification": classification,
                       "sha256s": sorted(tag_map.get("{}__{}".format(tag_type, value)) or [])}


def _tag_tuple(item: Any) -> Optional[Tuple[str, str, bool, Optional[str]]]:
    """``[value, h_type, safelisted, classification]``; anything else is skipped."""
    if not isinstance(item, (list, tuple)) or len(item) < 2 or not isinstance(item[0], str):
        return None
    safelisted = is_true(item[2]) if len(item) > 2 else False
    classification = item[3] if len(item) > 3 else None
    return item[0], str(item[1]), safelisted, classification


def _files(full: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
    """Submitted files first, then extracted ones depth-first, each sha256 once."""
    infos = full.get("file_infos") or {}
    tree = full.get("file_tree") or {}
    seen = set()
    for entry in full.get("files") or []:
        sha256 = entry.get("sha256") if isinstance(entry, Mapping) else None
        if sha256 and sha256 not in seen:
            seen.add(sha256)
            node = tree.get(sha256) if isinstance(tree.get(sha256), Mapping) else {}
            yield _file(sha256, entry.get("name"), entry.get("size"), infos, extracted=False, parent=None,
                        score=node.get("score"))
    for sha256, node in tree.items():
        yield from _children(sha256, node if isinstance(node, Mapping) else {}, infos, seen)


def _children(parent: str, node: Mapping[str, Any], infos: Mapping[str, Any], seen: set) -> Iterator[Dict[str, Any]]:
    for sha256, child in (node.get("children") or {}).items():
        child = child if isinstance(child, Mapping) else {}
        if sha256 not in seen:
            seen.add(sha256)
            names = child.get("name") or []
            name = names[0] if isinstance(names, list) and names else names or None
            yield _file(sha256, name, child.get("size"), infos, extracted=True, parent=parent,
                        score=child.get("score"))
        yield from _children(sha256, child, infos, seen)


def _file(sha256: str, name: Any, size: Any, infos: Mapping[str, Any], extracted: bool,
          parent: Optional[str], score: Any = None) -> Dict[str, Any]:
    """One file; ``score`` is the file's own (its ``file_tree`` node), not the submission's."""
    info = infos.get(sha256) or {}
    if isinstance(score, bool) or not isinstance(score, int):
        score = None
    return {"name": name, "sha256": sha256, "md5": info.get("md5"), "sha1": info.get("sha1"),
            "size": info.get("size", size), "type": info.get("type"), "extracted": extracted,
            "parent_sha256": parent, "score": score}


def _metadata(metadata: Mapping[str, Any]) -> Tuple[Dict[str, str], int]:
    """Metadata as strings, bounded in values and keys (it travels in triggers and results).

    At most ``METADATA_KEY_LIMIT`` keys: the pack's own keys first, then the
    others in name order; returns the kept keys and how many were dropped.
    """
    if not isinstance(metadata, Mapping):
        return {}, 0
    names = sorted(metadata, key=lambda k: (str(k) not in METADATA_FIRST, str(k)))
    kept = names[:METADATA_KEY_LIMIT]
    return ({str(k): str(metadata[k])[:METADATA_VALUE_LIMIT] for k in sorted(kept, key=str)},
            len(names) - len(kept))
