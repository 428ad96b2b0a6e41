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


def check_sid(sid: Any) -> str:
    """The sid, stripped; raises ``InputError`` unless it looks like an Assemblyline sid."""
    text = sid.strip() if isinstance(sid, str) else ""
    if not text or "/" in text or not text.isprintable() or " " in text:
        raise InputError("sid must be an Assemblyline submission ID")
    return text


def fetch_results(service: Any, sid: Any, max_tags: int = 1000, max_files: int = 100) -> Dict[str, Any]:
    """Fetch one submission's full result and summary and shape them (``shape_results``)."""
    sid = check_sid(sid)
    full = service.full(sid)
    summary = service.summary(sid)
    return shape_results(summary, full, service.submission_link(sid), max_tags, max_files)


def shape_results(summary: Mapping[str, Any], full: Mapping[str, Any], link: str,
                  max_tags: int = 1000, max_files: int = 100) -> Dict[str, Any]:
    files = list(_files(full))
    tags = sorted(_tags(summary), key=_tag_order)
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
        "al_url": link,
        "truncated": {"files": max(0, len(files) - max_files), "tags": max(0, len(tags) - max_tags),
                      "metadata": metadata_dropped},
    }


# Summary groups kept first when ``max_tags`` cuts the list: indicators, then attribution.
_GROUP_PRIORITY = {"ioc": 0, "attribution": 1}


def _tag_order(tag: Mapping[str, Any]) -> Tuple[int, str, str, str]:
    return (_GROUP_PRIORITY.get(tag["group"], 2), tag["group"], tag["type"], tag["value"])


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
    safelisted = bool(item[2]) if len(item) > 2 else False
    classification = item[3] if len(item) > 3 else None
    return item[0], str(item[1]), safelisted, classification


def _files(full: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
    """Submitted files first, then extracted ones depth-first, each sha256 once."""
    infos = full.get("file_infos") or {}
    seen = set()
    for entry in full.get("files") or []:
        sha256 = entry.get("sha256")
        if sha256 and sha256 not in seen:
            seen.add(sha256)
            yield _file(sha256, entry.get("name"), entry.get("size"), infos, extracted=False, parent=None)
    for sha256, node in (full.get("file_tree") or {}).items():
        yield from _children(sha256, node or {}, infos, seen)


def _children(parent: str, node: Mapping[str, Any], infos: Mapping[str, Any], seen: set) -> Iterator[Dict[str, Any]]:
    for sha256, child in (node.get("children") or {}).items():
        child = child or {}
        if sha256 not in seen:
            seen.add(sha256)
            names = child.get("name") or []
            name = names[0] if isinstance(names, list) and names else names or None
            yield _file(sha256, name, child.get("size"), infos, extracted=True, parent=parent)
        yield from _children(sha256, child, infos, seen)


def _file(sha256: str, name: Any, size: Any, infos: Mapping[str, Any], extracted: bool,
          parent: Optional[str]) -> Dict[str, Any]:
    info = infos.get(sha256) or {}
    return {"name": name, "sha256": sha256, "md5": info.get("md5"), "sha1": info.get("sha1"),
            "size": info.get("size", size), "type": info.get("type"), "extracted": extracted,
            "parent_sha256": parent}


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
