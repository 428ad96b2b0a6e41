"""File trees, service results, summaries: the result side of a finished analysis."""
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .al_analysis import (
    ERROR_MARKER, SERVICE_VERSION, SUMMARY_TAG_TYPES, Rules, file_info, h_type_for_score,
    ioc_sections, marker_children, marker_sections, section, zip_members,
)
from .al_common import CLASSIFICATION, iso, parse_iso

HEUR_RANK = {"safe": 0, "info": 1, "suspicious": 2, "malicious": 3}
ERROR_SERVICE = "Characterize"
EMPTY_RESULT_DTL_DAYS = 5  # submission.emptyresult_dtl


class FileNode:
    """One analysed file: info, service results/errors keyed like Assemblyline, children."""

    def __init__(self, name: str, content: bytes, info: Dict[str, Any]) -> None:
        self.name = name
        self.content = content
        self.info = info
        self.sha256 = info["sha256"]  # type: str
        self.results = {}  # type: Dict[str, Dict[str, Any]]
        self.errors = {}  # type: Dict[str, Dict[str, Any]]
        self.children = []  # type: List[FileNode]

    @property
    def score(self) -> int:
        return sum(r["result"]["score"] for r in self.results.values())

    def walk(self) -> Iterator["FileNode"]:
        yield self
        for child in self.children:
            for node in child.walk():
                yield node


def result_key(sha256: str, service: str) -> str:
    return "%s.%s.v%s.c0" % (sha256, service, SERVICE_VERSION.replace(".", "_"))


def _service_result(node: FileNode, service: str, sections: List[Dict[str, Any]],
                    extracted: List[Dict[str, str]], ts: str) -> Dict[str, Any]:
    score = sum(s["heuristic"]["score"] for s in sections if s["heuristic"])
    return {
        "archive_ts": None, "classification": CLASSIFICATION, "created": ts, "drop_file": False,
        "expiry_ts": None, "from_archive": False, "partial": False,
        "response": {
            "extracted": extracted, "milestones": {"service_started": ts, "service_completed": ts},
            "service_context": None, "service_debug_info": None, "service_name": service,
            "service_tool_version": None, "service_version": SERVICE_VERSION, "supplementary": [],
        },
        "result": {"score": score, "sections": sections},
        "sha256": node.sha256, "size": node.info["size"], "type": node.info["type"],
    }


ERROR_TYPE_CODES = {"UNKNOWN": 0, "EXCEPTION": 1, "MAX DEPTH REACHED": 10, "MAX FILES REACHED": 11,
                    "MAX RETRY REACHED": 12, "SERVICE BUSY": 20, "SERVICE DOWN": 21, "TASK PRE-EMPTED": 30}


def _service_error(node: FileNode, ts: str) -> Tuple[str, Dict[str, Any]]:
    message = "Emulated service failure (AL-EMU:ERROR marker)"
    error_type = "EXCEPTION"
    # Error keys end in ".e<numeric error type>" (1 for EXCEPTION), after the result-style prefix.
    key = "%s.e%d" % (result_key(node.sha256, ERROR_SERVICE), ERROR_TYPE_CODES[error_type])
    return key, {
        "archive_ts": None, "created": ts, "expiry_ts": None, "sha256": node.sha256,
        "response": {"message": message, "service_debug_info": None, "service_name": ERROR_SERVICE,
                     "service_tool_version": None, "service_version": SERVICE_VERSION,
                     "status": "FAIL_NONRECOVERABLE"},
        "severity": "error", "type": error_type,
    }


def _scan_text(content: bytes) -> str:
    lines = (line for line in content.split(b"\n") if not line.startswith(b"EXTRACT:"))
    return b"\n".join(lines).decode("latin-1")


def analyse(name: str, content: bytes, rules: Rules, ts: str, max_depth: int = 5,
            budget: Optional[List[int]] = None, depth: int = 0) -> FileNode:
    """Analyse ``content`` and its extracted children (``budget`` = [max extracted files])."""
    budget = [100] if budget is None else budget
    node = FileNode(name, content, file_info(content, ts))
    children = zip_members(content) if node.info["type"] == "archive/zip" else marker_children(content)
    if node.info["type"] != "archive/zip":
        text = _scan_text(content)
        _add(node, "FrankenStrings", ioc_sections(text, rules), [], ts)
        _add(node, "YARA", marker_sections(text, rules), [], ts)
    if ERROR_MARKER in content:
        key, error = _service_error(node, ts)
        node.errors[key] = error
    if children and depth < max_depth:
        _extract(node, children, rules, ts, max_depth, budget, depth)
    return node


def _empty_result(node: FileNode, service: str, ts: str) -> Dict[str, Any]:
    """What the datastore makes up for an empty-result key (``...c0.e``): it keeps only the key, so
    the version comes back as the key spells it and the file's type and size are not known."""
    started = parse_iso(ts) or 0.0
    return {
        "archive_ts": None, "classification": CLASSIFICATION, "created": ts, "drop_file": False,
        "expiry_ts": iso(started + EMPTY_RESULT_DTL_DAYS * 86400), "from_archive": False, "partial": False,
        "response": {
            "extracted": [], "milestones": {"service_started": ts, "service_completed": ts},
            "service_context": None, "service_debug_info": None, "service_name": service,
            "service_tool_version": None, "service_version": SERVICE_VERSION.replace(".", "_"), "supplementary": [],
        },
        "result": {"score": 0, "sections": []},
        "sha256": node.sha256, "size": None, "type": None,
    }


def _add(node: FileNode, service: str, sections: List[Dict[str, Any]],
         extracted: List[Dict[str, str]], ts: str) -> None:
    result = _service_result(node, service, sections, extracted, ts)
    if not sections and not extracted and result["result"]["score"] == 0:
        # An empty result is not stored as a result: its key gets ".e" (the summary skips those)
        node.results[result_key(node.sha256, service) + ".e"] = _empty_result(node, service, ts)
    else:
        node.results[result_key(node.sha256, service)] = result


def _extract(node: FileNode, children: List[Tuple[str, bytes]], rules: Rules, ts: str,
             max_depth: int, budget: List[int], depth: int) -> None:
    extracted = []
    for child_name, data in children:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        child = analyse(child_name, data, rules, ts, max_depth, budget, depth + 1)
        node.children.append(child)
        extracted.append({"name": child_name, "sha256": child.sha256,
                          "description": "Extracted from %s" % node.name, "classification": CLASSIFICATION,
                          "is_section_image": False, "parent_relation": "EXTRACTED", "allow_dynamic_recursion": False})
    body = "\n".join("%s (%s)" % (e["name"], e["sha256"]) for e in extracted)
    sec = section("Extracted %d file(s)" % len(extracted), body, None, [], rules)
    _add(node, "Extract", [sec], extracted, ts)


# --------------------------------------------------------------------------- views
def file_tree(root: FileNode) -> Dict[str, Any]:
    return _tree_level([root])


def _tree_level(nodes: List[FileNode]) -> Dict[str, Any]:
    level = {}  # type: Dict[str, Any]
    for node in nodes:
        entry = level.get(node.sha256)
        if entry is None:
            level[node.sha256] = {
                "name": [node.name], "type": node.info["type"], "sha256": node.sha256,
                "size": node.info["size"], "score": node.score, "truncated": False,
                "children": _tree_level(node.children),
            }
        elif node.name not in entry["name"]:
            entry["name"].append(node.name)
    return level


def unique_nodes(root: FileNode) -> Dict[str, FileNode]:
    nodes = {}  # type: Dict[str, FileNode]
    for node in root.walk():
        nodes.setdefault(node.sha256, node)
    return nodes


def iter_sections(nodes: Dict[str, FileNode]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    for sha256, node in nodes.items():
        for result in node.results.values():
            for sec in result["result"]["sections"]:
                yield sha256, sec


def summary(nodes: Dict[str, FileNode], partial: bool) -> Dict[str, Any]:
    """The ``/submission/summary/<sid>/`` body (tags as [value, h_type, safelisted, classification])."""
    out = {
        "attack_matrix": {}, "classification": CLASSIFICATION, "filtered": False, "heuristic_name_map": {},
        "heuristic_sections": {}, "heuristics": {}, "map": {}, "partial": partial,
        "tags": {"attribution": {}, "behavior": {}, "ioc": {}},
    }  # type: Dict[str, Any]
    if partial:
        return out
    _summary_heuristics(out, nodes)
    _summary_tags(out, nodes)
    return out


def _link(out_map: Dict[str, List[str]], key: str, sha256: str) -> None:
    for left, right in ((key, sha256), (sha256, key)):
        bucket = out_map.setdefault(left, [])
        if right not in bucket:
            bucket.append(right)


def _summary_heuristics(out: Dict[str, Any], nodes: Dict[str, FileNode]) -> None:
    for sha256, sec in iter_sections(nodes):
        heur = sec["heuristic"]
        if not heur:
            continue
        level = h_type_for_score(heur["score"])
        for attack in heur["attack"]:
            _link(out["map"], "attack_pattern__%s" % attack["attack_id"], sha256)
            for cat in attack["categories"]:
                item = [attack["attack_id"], attack["pattern"], level]
                if item not in out["attack_matrix"].setdefault(cat, []):
                    out["attack_matrix"][cat].append(item)
        _link(out["map"], "heuristic__%s" % heur["heur_id"], sha256)
        item = [heur["heur_id"], heur["name"]]
        if item not in out["heuristics"].setdefault(level, []):
            out["heuristics"][level].append(item)
        out["heuristic_sections"].setdefault(heur["heur_id"], []).append(sec)
        names = out["heuristic_name_map"].setdefault(heur["name"], [])
        if heur["heur_id"] not in names:
            names.append(heur["heur_id"])


def _summary_group(tag_type: str) -> Optional[str]:
    for group, types in SUMMARY_TAG_TYPES.items():
        if tag_type in types:
            return group
    return None


def _summary_tags(out: Dict[str, Any], nodes: Dict[str, FileNode]) -> None:
    merged = {}  # type: Dict[Tuple[str, str], List[Any]]
    for sha256, sec in iter_sections(nodes):
        level = h_type_for_score(sec["heuristic"]["score"] if sec["heuristic"] else None)
        for tag in sec["tags"]:
            group = _summary_group(tag["type"])
            if group is None or tag["value"] == "":
                continue
            _link(out["map"], "%s__%s" % (tag["type"], tag["value"]), sha256)
            key = (tag["type"], tag["value"])
            current = merged.get(key)
            if current is None:
                merged[key] = [tag["value"], level, tag["safelisted"], CLASSIFICATION]
                out["tags"][group].setdefault(tag["type"], []).append(merged[key])
            elif HEUR_RANK[level] > HEUR_RANK[current[1]]:
                current[1] = level


def file_tags(node: FileNode) -> Dict[str, List[List[Any]]]:
    """``/file/result/<sha256>/`` style tags: {type: [[value, h_type, safelisted, classification]]}."""
    tags = {}  # type: Dict[str, List[List[Any]]]
    seen = {}  # type: Dict[Tuple[str, str], List[Any]]
    for _, sec in iter_sections({node.sha256: node}):
        level = h_type_for_score(sec["heuristic"]["score"] if sec["heuristic"] else None)
        for tag in sec["tags"]:
            key = (tag["type"], tag["value"])
            if key not in seen:
                seen[key] = [tag["value"], level, tag["safelisted"], CLASSIFICATION]
                tags.setdefault(tag["type"], []).append(seen[key])
            elif HEUR_RANK[level] > HEUR_RANK[seen[key][1]]:
                seen[key][1] = level
    return tags
