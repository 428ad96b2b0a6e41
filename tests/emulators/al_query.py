"""A small Lucene subset for ``/api/v4/search/submission/``.

Supported: ``field:value``, ``field:"quoted value"``, wildcards ``*``/``?`` in unquoted
values, ranges ``field:[a TO b]`` / ``{a TO b}``, ``*:*``, ``id:*``, ``AND``/``&&``,
``OR``/``||``, ``NOT``/``-``/``!`` prefixes, implicit AND between terms. No parentheses.
"""
import copy
import fnmatch
import re
from typing import Any, Dict, List, Optional, Tuple

from .al_common import ApiError

_TERM_RE = re.compile(
    r'\s*(?:(?P<op>AND|OR|NOT|&&|\|\|)(?=\s|$)'
    r'|(?P<neg>[-!]?)(?P<field>[^\s:()"]+|\*):(?P<value>"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\{[^}]*\}'
    r'|(?:[^\s\\()"]|\\.)+))'
)
STORED_FIELDS = ("classification", "error_count", "file_count", "max_score", "params.description",
                 "params.submitter", "sid", "state", "times.submitted")
_MISSING = object()

Term = Tuple[bool, str, str]  # (negated, field, raw value)


def _bad(message: str) -> ApiError:
    return ApiError(400, "SearchException: %s" % message)


def parse_query(query: str) -> List[List[Term]]:
    """OR-groups of AND-ed terms."""
    groups = [[]]  # type: List[List[Term]]
    pos, negate_next = 0, False
    query = query.strip()
    while pos < len(query):
        match = _TERM_RE.match(query, pos)
        if not match or match.end() == pos:
            raise _bad("emulator cannot parse query %r near position %d" % (query, pos))
        pos = match.end()
        op = match.group("op")
        if op in ("OR", "||"):
            groups.append([])
        elif op == "NOT":
            negate_next = True
        elif op is None:
            negated = negate_next or bool(match.group("neg"))
            groups[-1].append((negated, match.group("field"), match.group("value")))
            negate_next = False
    if any(not g for g in groups):
        raise _bad("empty clause in query %r" % query)
    return groups


def field_values(obj: Any, path: str) -> List[Any]:
    """All values at a dotted path; lists fan out; flattened (dotted) keys are honoured."""
    if path == "":
        return obj if isinstance(obj, list) else [obj]
    if isinstance(obj, list):
        return [v for item in obj for v in field_values(item, path)]
    if not isinstance(obj, dict):
        return []
    if path in obj:
        value = obj[path]
        return value if isinstance(value, list) else [value]
    head, _, rest = path.partition(".")
    return field_values(obj[head], rest) if head in obj and rest else []


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _in_range(value: Any, spec: str) -> bool:
    inclusive = spec.startswith("[")
    low, sep, high = spec[1:-1].partition(" TO ")
    if not sep:
        raise _bad("bad range %r" % spec)
    for bound, is_low in ((low.strip(), True), (high.strip(), False)):
        if bound == "*":
            continue
        left, right = _comparable(value, bound)
        if is_low and (left < right or (not inclusive and left == right)):
            return False
        if not is_low and (left > right or (not inclusive and left == right)):
            return False
    return True


def _comparable(value: Any, bound: str) -> Tuple[Any, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return value, float(bound)
        except ValueError:
            pass
    return _as_text(value), _unescape(bound.strip('"'))


def _term_matches(record: Dict[str, Any], field: str, raw: str) -> bool:
    if field == "*" and raw == "*":
        return True
    values = [v for v in field_values(record, "sid" if field == "id" else field) if v is not None]
    if raw == "*":
        return bool(values)
    if raw[:1] in "[{":
        return any(_in_range(v, raw) for v in values)
    if raw.startswith('"'):
        wanted = _unescape(raw[1:-1])
        return any(_as_text(v) == wanted for v in values)
    if re.search(r"(?<!\\)[*?]", raw):
        return any(fnmatch.fnmatchcase(_as_text(v), raw) for v in values)
    wanted = _unescape(raw)
    return any(_as_text(v) == wanted for v in values)


def matches(record: Dict[str, Any], groups: List[List[Term]]) -> bool:
    return any(all(_term_matches(record, f, v) != neg for neg, f, v in group) for group in groups)


def project(record: Dict[str, Any], fields: List[str]) -> Dict[str, Any]:
    out = {}  # type: Dict[str, Any]
    for field in fields:
        if field == "id":
            out["id"] = record.get("sid")
            continue
        fragment = _project(record, field.split("."))
        if fragment is not _MISSING:
            _merge(out, fragment)
    return out


def _project(obj: Any, path: List[str]) -> Any:
    if isinstance(obj, list):
        items = [p for p in (_project(item, path) for item in obj) if p is not _MISSING]
        return items if items else _MISSING
    if not isinstance(obj, dict):
        return _MISSING
    if path == ["*"]:
        return copy.deepcopy(obj)
    joined = ".".join(path)
    if joined in obj:
        return {joined: copy.deepcopy(obj[joined])}
    head, rest = path[0], path[1:]
    if head not in obj:
        return _MISSING
    if not rest:
        return {head: copy.deepcopy(obj[head])}
    sub = _project(obj[head], rest)
    return _MISSING if sub is _MISSING else {head: sub}


def _merge(into: Dict[str, Any], fragment: Dict[str, Any]) -> None:
    for key, value in fragment.items():
        current = into.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value)
        elif isinstance(current, list) and isinstance(value, list) and len(current) == len(value):
            for left, right in zip(current, value):
                if isinstance(left, dict) and isinstance(right, dict):
                    _merge(left, right)
        else:
            into[key] = value


def _int_param(body: Dict[str, Any], key: str, default: int) -> int:
    try:
        return int(body.get(key, default))
    except (TypeError, ValueError):
        raise _bad("invalid value for %s: %r" % (key, body.get(key)))


def _sort_key(field: str):
    def key(record: Dict[str, Any]) -> Tuple[int, Any]:
        values = field_values(record, "sid" if field == "id" else field)
        value = values[0] if values else None
        return (0, value) if value is not None else (1, "")
    return key


def _sorted(records: List[Dict[str, Any]], sort: str) -> List[Dict[str, Any]]:
    for spec in reversed([s.strip() for s in sort.split(",") if s.strip()]):
        field, _, direction = spec.partition(" ")
        reverse = direction.strip().lower() == "desc"
        present = [r for r in records if _sort_key(field)(r)[0] == 0]
        absent = [r for r in records if _sort_key(field)(r)[0] == 1]
        records = sorted(present, key=_sort_key(field), reverse=reverse) + absent
    return records


def _page_start(body: Dict[str, Any]) -> Tuple[int, Optional[str]]:
    deep = body.get("deep_paging_id")
    if deep is None:
        return _int_param(body, "offset", 0), None
    if deep == "*":
        return 0, deep
    if isinstance(deep, str) and deep.startswith("emu-") and deep[4:].isdigit():
        return int(deep[4:]), deep
    raise _bad("invalid deep_paging_id %r" % deep)


def search(records: List[Dict[str, Any]], body: Dict[str, Any]) -> Dict[str, Any]:
    query = body.get("query")
    if not query:
        raise ApiError(400, "There was no search query.")
    filters = body.get("filters") or []
    filters = [filters] if isinstance(filters, str) else list(filters)
    parsed = [parse_query(q) for q in [query] + filters]
    hits = [r for r in records if all(matches(r, groups) for groups in parsed)]
    hits = _sorted(hits, body.get("sort") or "times.submitted desc")
    start, deep = _page_start(body)
    rows = _int_param(body, "rows", 25)
    page = hits[start:start + rows]
    fl = body.get("fl")
    fields = [f.strip() for f in fl.split(",") if f.strip()] if fl else list(STORED_FIELDS) + ["id"]
    out = {"offset": start, "rows": rows, "total": len(hits),
           "items": [project(r, fields) for r in page]}  # type: Dict[str, Any]
    if deep is not None and len(page) == rows and rows > 0:
        out["next_deep_paging_id"] = "emu-%d" % (start + rows)
    return out
