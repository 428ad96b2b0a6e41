"""ThreatConnect V2 batch bodies: items as compact UTF-8 JSON, split into jobs.

A body is ``{"group":[...],"indicator":[...]}``. ``iter_jobs`` streams items
into bodies of at most ``batch_max_items`` items and ``batch_max_bytes``
bytes. Every item's bytes are ``plain_json(item)``, the json module's compact
text; ``encode_item`` gets them from orjson when it is installed and writes the
same bytes (JSON data without floats or nulls), and from the json module
otherwise.
"""
import json
from typing import Any, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional

try:
    import orjson
except ImportError:  # pragma: no cover (orjson is a requirement; the json module does it all)
    orjson = None


class BatchJob(NamedTuple):
    """One upload body and what it holds."""

    body: bytes
    groups: int
    indicators: int

    @property
    def items(self) -> int:
        return self.groups + self.indicators


_BODY_HEAD = b'{"group":['
_BODY_MIDDLE = b'],"indicator":['
_BODY_TAIL = b']}'
_BODY_OVERHEAD = len(_BODY_HEAD) + len(_BODY_MIDDLE) + len(_BODY_TAIL)
_PLAIN = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

# orjson and the json module write the same bytes for JSON data made of dicts with str keys,
# lists, tuples, str, int of 64 bits, bool and None: same key order, same string escapes
# (every code point is compared by the tests). Where they differ, json's bytes are taken:
# * subclasses (OrderedDict, a str subclass ...), dataclasses and datetimes: orjson writes them
#   its own way; with these options it hands them to ``_not_plain``, which refuses them;
# * what orjson refuses (non-str keys, ints over 64 bits, lone surrogates, sets, bytes, cycles);
# * floats: 1e16 is ``1e16`` to orjson and ``1e+16`` to json, and NaN and infinities are
#   ``null`` to orjson where json refuses them. A float or null token follows ``:``, ``,`` or
#   ``[`` and is a sign or digits then ``.``, ``e`` or ``E``, or ``null``: with signs and digits
#   deleted and those mapped to \0 and \1, it shows as ``\0\1``. Strings never hold a raw \0
#   or \1 (orjson escapes control characters), so the probe misses no float; text that merely
#   looks like one (``"2a00:26e::1"``) only costs the json module's encoding.
# Objects that are not JSON data at all and that orjson still writes natively (a plain Enum
# member, a uuid.UUID, an orjson.Fragment) are written by orjson where json refuses them.
# Items are JSON data (st2 action parameters, lib.indicators' output): checking every value's
# exact type (marshal, a walk) would cost more than the json module saves.
_OPTIONS = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
            | orjson.OPT_PASSTHROUGH_DATETIME) if orjson is not None else 0
_PROBE_TABLE = bytes.maketrans(b":,[.eEn", b"\0\0\0\1\1\1\1")
_PROBE_DELETE = b"0123456789+-"


def _not_plain(value: Any) -> Any:
    raise TypeError("{} is not plain JSON data".format(type(value).__name__))


# The reference text: json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False).
plain_text = _PLAIN.encode


def plain_json(item: Any) -> bytes:
    """``plain_text(item)`` as UTF-8."""
    return plain_text(item).encode("utf-8")


def encode_item(item: Any) -> bytes:
    """``plain_json(item)`` for JSON data: the same bytes, or the same exception."""
    if orjson is not None:
        try:
            data = orjson.dumps(item, default=_not_plain, option=_OPTIONS)
        except TypeError:  # (orjson.JSONEncodeError is a TypeError)
            return plain_json(item)
        if b"\0\1" not in data.translate(_PROBE_TABLE, _PROBE_DELETE):  # no float, no null
            return data
    return plain_json(item)


def iter_jobs(groups: Iterable[Any], indicators: Iterable[Any], max_items: int,
              max_bytes: int, rejected: List[Dict[str, Any]]) -> Iterator[BatchJob]:
    """Stream items into bodies of at most ``max_items`` items and ``max_bytes`` bytes.

    Groups come first so they fill the first job(s) and exist in the owner
    before any later job's indicators reference them. Each item is serialised
    once, as it is read; only the job being filled is held in memory. Items that
    cannot be sent (not a mapping, not JSON, larger than a whole job) are
    appended to ``rejected`` as ``{"reason", "source"}`` and skipped.
    """
    parts = {"group": [], "indicator": []}  # type: Dict[str, List[bytes]]
    size, count = _BODY_OVERHEAD, 0
    for kind, source in (("group", groups), ("indicator", indicators)):
        for item in source:
            data = item_bytes(kind, item, max_bytes, rejected)
            if data is None:
                continue
            if count and (count >= max_items or size + len(data) + 1 > max_bytes):
                yield _job_from(parts)
                parts = {"group": [], "indicator": []}
                size, count = _BODY_OVERHEAD, 0
            parts[kind].append(data)
            size += len(data) + 1  # the comma; one too many per array keeps it conservative
            count += 1
    if count:
        yield _job_from(parts)


def item_bytes(kind: str, item: Any, max_bytes: int,
               rejected: List[Dict[str, Any]]) -> Optional[bytes]:
    """Compact UTF-8 JSON of one item, or None (and a rejection) if unsendable."""
    if type(item) is not dict and not isinstance(item, Mapping):  # (typing's check is slow)
        rejected.append({"reason": "{} is not a mapping; not sent".format(kind),
                         "source": type(item).__name__})
        return None
    try:
        data = encode_item(item)
    except (TypeError, ValueError) as exc:
        rejected.append({"reason": "{} is not JSON serialisable ({}); not sent".format(
            kind, type(exc).__name__), "source": item_label(item)})
        return None
    if len(data) + _BODY_OVERHEAD > max_bytes:
        rejected.append({"reason": "{} of {} bytes exceeds batch_max_bytes {}; not sent".format(
            kind, len(data), max_bytes), "source": item_label(item)})
        return None
    return data


def _job_from(parts: Mapping[str, List[bytes]]) -> BatchJob:
    body = b"".join((_BODY_HEAD, b",".join(parts["group"]), _BODY_MIDDLE,
                     b",".join(parts["indicator"]), _BODY_TAIL))
    return BatchJob(body, len(parts["group"]), len(parts["indicator"]))


def item_label(item: Mapping[str, Any]) -> str:
    """A short name for an item in error reports (never the whole item)."""
    for key in ("summary", "xid", "hostName", "ip", "address", "text", "sha256", "sha1",
                "md5", "name"):
        value = item.get(key)
        if isinstance(value, str) and value:
            return value[:200]
    return str(item.get("type", "item"))[:200]
