"""ThreatConnect v2 Batch API client (HMAC or token auth, on ``requests``).

Why a small client of our own instead of tcex: tcex needs Python >= 3.11, pulls
dozens of pinned packages and installs signal handlers that ``sys.exit``; the
pack needs four endpoints. Wire-format truth: ``threatconnect.md`` (reference).

Retry policy (decided per call, because HMAC signatures expire and some calls
are not idempotent):

* Connection failures before a byte is sent, and read failures of GETs, are
  retried by urllib3's ``Retry`` mounted on the session's adapter (capped
  backoff). POST read failures are not: the server may have acted.
* HTTP 429/5xx are retried by this module's own loop, not by urllib3, because
  each attempt must be signed afresh (an HMAC Timestamp is valid 5 minutes),
  because the decision needs the body (TC's plain-text 503 "batch job api is not
  available" is a configuration answer and is never retried) and because it
  differs per call:

  - GET status / errors / types: 429, 500, 502, 503, 504.
  - POST create batch: the same. A duplicate create leaves at most an empty job
    in ``Created`` state that holds no data and never runs: harmless.
  - POST upload and createAndUpload: 429 only (the server refused before doing
    anything). After a 5xx the job may be queued already; replaying would
    duplicate ``Append`` attributes, so the error is reported instead.

  ``Retry-After`` (seconds or HTTP date) is honoured; a wait longer than
  ``max_retry_after`` is not attempted (the error is reported instead).

``submit`` splits items into jobs, runs the jobs one after the other (a job
carrying groups completes before later jobs reference those groups) and returns
one aggregate dict; see ``submit``.
"""
import base64
import gzip as gzip_module
import hashlib
import hmac
import json
import logging
import re
import time
from email.utils import parsedate_to_datetime
from typing import (Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Mapping,
                    NamedTuple, Optional, Tuple, Union)
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util.retry import Retry

from lib.config import apply_defaults, load_schema, secret_values, tc_auth_problems
from lib.errors import ConfigError, InputError, ThreatConnectError
from lib.tls_warning import warn_unverified

LOG = logging.getLogger(__name__)

USER_AGENT = "stackstorm-assemblyline-threatconnect"
MAX_MESSAGE_CHARS = 500

# ---------------------------------------------------------------- BatchConfig

BATCH_ENUMS = {
    "version": ("V2",),
    "action": ("Create", "Delete"),
    "attributeWriteType": ("Append", "Replace", "Singleton", "Static"),
    "tagWriteType": ("Append", "Replace"),
    "securityLabelWriteType": ("Append", "Replace"),
    "fileMergeMode": ("Distribute", "Merge"),
    "hashCollisionMode": ("FavorExisting", "FavorIncoming", "IgnoreExisting",
                          "IgnoreIncoming", "Split"),
}
BATCH_BOOLEANS = ("haltOnError", "playbookTriggersEnabled")
BATCH_REQUIRED = ("owner", "haltOnError", "action", "attributeWriteType")
BATCH_FIELDS = frozenset(BATCH_ENUMS) | frozenset(BATCH_BOOLEANS) | {"owner"}

# Error reasons after which a job (and so the rest of a submission) is lost.
FATAL_REASONS = ("encountered an unexpected exception while processing batch job",
                 "would exceed the number of allowed indicators")


def validate_batch_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Check every BatchConfig field locally and return the config to send.

    TC answers a bad config with terse or plain-text errors after a round trip;
    checking here names the field. ``version`` is always ``V2`` (the object
    body this client writes). Unknown fields are refused so typos surface.
    """
    if not isinstance(config, Mapping):
        raise InputError("BatchConfig must be a mapping of field names to values")
    unknown = sorted(set(config) - BATCH_FIELDS)
    if unknown:
        raise InputError("BatchConfig field {} is unknown (known: {})".format(
            unknown[0], ", ".join(sorted(BATCH_FIELDS))))
    for name in BATCH_REQUIRED:
        if config.get(name) is None:
            raise InputError("BatchConfig field {} is required".format(name))
    owner = config["owner"]
    if not isinstance(owner, str) or not owner.strip():
        raise InputError("BatchConfig field owner must be a non-empty string")
    for name in BATCH_BOOLEANS:
        if name in config and not isinstance(config[name], bool):
            raise InputError("BatchConfig field {} must be true or false".format(name))
    for name, allowed in BATCH_ENUMS.items():
        if name in config and config[name] not in allowed:
            raise InputError("BatchConfig field {} must be one of {}".format(
                name, ", ".join(allowed)))
    checked = dict(config)
    checked["version"] = "V2"
    return checked


# Action parameter -> BatchConfig field, for the actions' per-run overrides.
BATCH_PARAMETERS = (("owner", "owner"), ("halt_on_error", "haltOnError"),
                    ("attribute_write_type", "attributeWriteType"),
                    ("tag_write_type", "tagWriteType"),
                    ("security_label_write_type", "securityLabelWriteType"),
                    ("file_merge_mode", "fileMergeMode"),
                    ("hash_collision_mode", "hashCollisionMode"))


def batch_overrides(**params: Any) -> Dict[str, Any]:
    """BatchConfig overrides from action parameters; ``None`` means "the pack's default"."""
    fields = dict(BATCH_PARAMETERS)
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise InputError("unknown batch parameter {}".format(unknown[0]))
    return {fields[name]: value for name, value in params.items() if value is not None}


# ----------------------------------------------------------------------- auth

def hmac_string_to_sign(path_url: str, method: str, timestamp: Union[int, str]) -> str:
    """``<path>[?<query>]:<METHOD>:<Timestamp>`` exactly as TC rebuilds it."""
    return "{}:{}:{}".format(path_url, method.upper(), timestamp)


def hmac_signature(secret_key: str, path_url: str, method: str,
                   timestamp: Union[int, str]) -> str:
    """Base64 HMAC-SHA256 of the string to sign, keyed by the secret key."""
    message = hmac_string_to_sign(path_url, method, timestamp).encode("utf-8")
    digest = hmac.new(secret_key.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class HmacAuth(AuthBase):
    """TC's Access ID + Secret Key scheme.

    Signs the *prepared* request's ``path_url`` (the path with the query exactly
    as it goes on the wire: ``params=`` encodes a space as ``+``, a literal URL
    keeps ``%20``) so the signature always matches the bytes sent.
    """

    def __init__(self, access_id: str, secret_key: str,
                 clock: Callable[[], float] = time.time):
        self._access_id = access_id
        self._secret_key = secret_key
        self._clock = clock

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        timestamp = str(int(self._clock()))
        signature = hmac_signature(self._secret_key, request.path_url, request.method or "GET",
                                   timestamp)
        request.headers["Timestamp"] = timestamp
        request.headers["Authorization"] = "TC {}:{}".format(self._access_id, signature)
        return request

    def __repr__(self) -> str:
        return "HmacAuth(access_id=<redacted>, secret_key=<redacted>)"


class TokenAuth(AuthBase):
    """TC's API token scheme (``Authorization: TC-Token <token>``, no Timestamp)."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = "TC-Token {}".format(self._token)
        return request

    def __repr__(self) -> str:
        return "TokenAuth(token=<redacted>)"


def auth_from_settings(settings: Mapping[str, Any],
                       clock: Callable[[], float] = time.time) -> AuthBase:
    """The auth object for the configured credentials (token or HMAC, never both)."""
    problems = tc_auth_problems(settings)
    if problems:
        raise ConfigError(problems)
    if settings.get("api_token"):
        return TokenAuth(settings["api_token"])
    return HmacAuth(settings["access_id"], settings["secret_key"], clock=clock)


# -------------------------------------------------------------------- session

class _ConnectRetry(Retry):
    """urllib3 retry for failures before a response exists, with a short backoff cap.

    The cap keeps even 20 retries well inside the 5-minute life of the HMAC
    signature urllib3 re-sends unchanged. urllib3 1.26 reads the cap from the
    class attribute, 2.x from the ``backoff_max`` argument (set in ``connect_retry``).
    """

    DEFAULT_BACKOFF_MAX = 10


def connect_retry(retries: int, backoff_factor: float = 0.5) -> Retry:
    """Retry connection errors (any method) and read errors (GET only), never statuses."""
    kwargs = dict(total=retries, connect=retries, read=retries, status=0, other=0,
                  redirect=False, allowed_methods=frozenset({"GET", "HEAD"}),
                  status_forcelist=None, backoff_factor=backoff_factor,
                  respect_retry_after_header=False, raise_on_status=False)
    try:
        return _ConnectRetry(backoff_max=_ConnectRetry.DEFAULT_BACKOFF_MAX, **kwargs)
    except TypeError:  # urllib3 1.26: no backoff_max argument
        return _ConnectRetry(**kwargs)


def tls_verify(settings: Mapping[str, Any]) -> Union[bool, str]:
    """``requests``' ``verify``: on by default, the CA bundle path when one is set."""
    if not settings.get("verify_tls", True):
        return False
    return settings.get("ca_bundle") or True


def build_session(settings: Mapping[str, Any],
                  clock: Callable[[], float] = time.time) -> requests.Session:
    """A session with TC auth, TLS settings, proxies and connection retries."""
    session = requests.Session()
    session.auth = auth_from_settings(settings, clock=clock)
    session.verify = tls_verify(settings)
    session.proxies.update(settings.get("proxies") or {})
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    adapter = HTTPAdapter(max_retries=connect_retry(int(settings.get("retries", 4))))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if session.verify is False:
        warn_unverified(LOG, "ThreatConnect", "threatconnect", settings.get("api_url") or "")
    return session


# ----------------------------------------------------------- batch splitting

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
_encode_item = _PLAIN.encode  # the reference: every body is what this gives, item by item
_encode_str = json.encoder.encode_basestring  # what it uses for str (no ASCII escaping)
try:
    from json.encoder import c_make_encoder as _c_make_encoder
except ImportError:  # pragma: no cover (CPython has the C accelerator)
    _c_make_encoder = None
_SCALARS = {True: "true", False: "false"}
_KIND_CODES = {str: "s", int: "i", bool: "b", list: "l", type(None): "n"}
# Value kind -> (type check, text) in a generated encoder; E, R, B and T are its arguments.
_KIND_SOURCE = {"s": ("type({}) is str", "E({})"), "i": ("type({}) is int", "R({})"),
                "b": ("type({}) is bool", "B[{}]"), "l": ("type({}) is list", "T[id({})]")}
_MAX_SHAPE_KEYS = 64
_MAX_SHAPES = 64  # per _ItemEncoder; items of further shapes take the plain path
_UNSHARED_LIMIT = 200  # after this many items sharing no list (90 %), stop looking
_MAX_FACTORIES = 256  # generated encoders kept per process (value kinds, not key names)
_SHAPE_FACTORIES = {}  # type: Dict[str, Callable[..., Callable[..., Optional[str]]]]


def _new_c_encoder() -> Any:
    """The C encoder ``_PLAIN.encode`` builds on every call, built once (None without C)."""
    if _c_make_encoder is None:
        return None
    return _c_make_encoder({}, _PLAIN.default, _encode_str, _PLAIN.indent, _PLAIN.key_separator,
                           _PLAIN.item_separator, _PLAIN.sort_keys, _PLAIN.skipkeys,
                           _PLAIN.allow_nan)


def _shape_encoder(keys: Tuple[str, ...], kinds: str) -> Callable[..., Optional[str]]:
    """``encode(item, texts)`` for dicts with exactly these keys, in order, and value kinds.

    ``kinds`` has one letter per value (``_KIND_CODES``). ``encode`` checks
    each value's exact type (None on a mismatch) and joins the keys' JSON
    (constants made here) with each value's JSON: ``encode_basestring`` for
    str, ``int.__repr__`` for int, ``true``/``false``, ``null``, and for a list
    ``texts[id(value)]`` (KeyError for a list not in ``texts``). That is what
    the C encoder writes for those types. The generated source depends only on
    the letters: the keys reach it as arguments, never as code.
    """
    constants = []
    pending = ""
    for index, (key, kind) in enumerate(zip(keys, kinds)):
        pending += ("{" if index == 0 else ",") + _encode_str(key) + ":"
        if kind == "n":
            pending += "null"
        else:
            constants.append(pending)
            pending = ""
    constants.append(pending + "}")
    factory = _SHAPE_FACTORIES.get(kinds)
    if factory is None:
        factory = _shape_factory(kinds)
        if len(_SHAPE_FACTORIES) < _MAX_FACTORIES:  # bounded in long-lived processes
            _SHAPE_FACTORIES[kinds] = factory
    return factory(_encode_str, int.__repr__, _SCALARS, *constants)


def _shape_factory(kinds: str) -> Callable[..., Callable[..., Optional[str]]]:
    names, checks, parts = [], [], []
    constant = 0
    for index, kind in enumerate(kinds):
        name = "v{}".format(index)
        names.append(name)
        if kind == "n":
            checks.append("{} is None".format(name))
            continue
        if kind not in _KIND_SOURCE:
            raise ValueError("unknown value kind {!r}".format(kind))
        check, part = _KIND_SOURCE[kind]
        parts.append("C{}".format(constant))
        constant += 1
        checks.append(check.format(name))
        parts.append(part.format(name))
    parts.append("C{}".format(constant))
    source = ("def factory(E, R, B, {constants}):\n"
              "    def encode(item, T):\n"
              "        {names}, = item.values()\n"
              "        if {checks}:\n"
              "            return ''.join(({parts},))\n"
              "        return None\n"
              "    return encode\n").format(
                  constants=", ".join("C{}".format(i) for i in range(constant + 1)),
                  names=", ".join(names), checks=" and ".join(checks), parts=", ".join(parts))
    namespace = {}  # type: Dict[str, Any]
    exec(compile(source, "<batch item shape {}>".format(kinds), "exec"), namespace)
    return namespace["factory"]


class _ItemEncoder:
    """Compact JSON of one item at a time: exactly the text ``_encode_item`` gives.

    Batch items from ``lib.indicators`` share their ``tag``, ``securityLabel``,
    ``attribute`` and ``associatedGroups`` lists; the plain encoder writes them
    out again for every item, which is most of its time. Here a plain dict
    whose keys are str and whose values are str, int, bool, None or lists is
    written by a function made for its shape (``_shape_encoder``: one per
    distinct key tuple, the keys JSON-encoded once), each list that recurs
    being encoded once and then taken from a memo keyed by the list's
    identity. Any other item or value shape goes to the plain encoder whole
    (its C part, built once instead of per call), and so does any failure:
    the text, or the exception, is the plain encoder's. When most items share
    no list (items parsed from JSON), it stops looking and encodes plainly.

    The memo keeps every list it holds alive (no id is reused while it lives)
    and is valid only while nothing but this encoder has run, since other
    code could change a list already encoded: ``iter_jobs`` drops it
    (``forget()``) after every item pulled from an iterator that is not a
    plain list or tuple, after an item that is not a plain dict or was
    rejected, and whenever it yields a job. Items are taken to be JSON data
    (a mapping subclass inside a list whose methods change other lists while
    being encoded is not supported).
    """

    __slots__ = ("_texts", "_alive", "_seen", "_shapes", "_c", "_sharing", "_items",
                 "_unshared")

    def __init__(self) -> None:
        self._texts = {}  # type: Dict[int, str]  # id(list) -> its JSON text
        self._alive = []  # type: List[list]  # the lists in _texts
        self._seen = {}  # type: Dict[int, list]  # lists seen once, not encoded alone yet
        self._shapes = {}  # type: Dict[Tuple[Any, ...], Optional[Callable[..., Optional[str]]]]
        self._c = _new_c_encoder()
        self._sharing = True  # False once most items turned out to share no list
        self._items = 0  # items that took the shape path
        self._unshared = 0  # of which had no list seen before

    def forget(self) -> None:
        if self._alive or self._seen:
            self._texts = {}
            self._alive = []
            self._seen = {}

    def __call__(self, item: Any) -> str:
        if type(item) is dict and self._sharing:
            keys = tuple(item)
            shape = self._shapes.get(keys, False)
            if shape is False:
                shape = self._new_shape(keys, item)
            if shape is not None:
                self._items += 1
                try:
                    try:
                        text = shape(item, self._texts)
                    except KeyError:  # a list not in the memo yet
                        text = shape(item, self._texts) if self._remember_lists(item) else None
                except Exception:  # the plain path gives the same text or exception
                    text = None
                if text is not None:
                    return text
        return self.plain(item)

    def plain(self, value: Any) -> str:
        """``_encode_item(value)``, without its per-call set-up."""
        encoder = self._c
        if encoder is None or type(value) is str:
            return _encode_item(value)
        try:
            return "".join(encoder(value, 0))
        except BaseException:
            self._c = _new_c_encoder()  # a failed call may leave circularity markers behind
            raise

    def _remember_lists(self, item: Dict[Any, Any]) -> bool:
        """Put the item's lists seen before in the memo; True when all of them are in it.

        A list seen for the first time is only noted: an item whose lists are
        not shared costs one plain encoding, not one per list.
        """
        texts = self._texts
        seen = self._seen
        complete = True
        shared = False
        for value in item.values():
            if type(value) is list:
                if id(value) in texts:
                    shared = True
                elif seen.get(id(value)) is value:
                    texts[id(value)] = self.plain(value)
                    self._alive.append(value)
                    shared = True
                else:
                    seen[id(value)] = value
                    complete = False
        if not shared:
            self._unshared += 1
            if self._unshared >= _UNSHARED_LIMIT and self._unshared * 10 > self._items * 9:
                self.forget()
                self._sharing = False  # lists are not shared here: plain from now on
        return complete

    def _new_shape(self, keys: Tuple[Any, ...], item: Dict[Any, Any]
                   ) -> Optional[Callable[..., Optional[str]]]:
        if len(self._shapes) >= _MAX_SHAPES:
            return None
        shape = None
        kinds = "".join(_KIND_CODES.get(type(value), "?") for value in item.values())
        if 0 < len(keys) <= _MAX_SHAPE_KEYS and "?" not in kinds \
                and all(type(key) is str for key in keys):
            shape = _shape_encoder(keys, kinds)
        self._shapes[keys] = shape
        return shape


def iter_jobs(groups: Iterable[Any], indicators: Iterable[Any], max_items: int,
              max_bytes: int, rejected: List[Dict[str, Any]]) -> Iterator[BatchJob]:
    """Stream items into bodies of at most ``max_items`` items and ``max_bytes`` bytes.

    Groups come first so they fill the first job(s) and exist in the owner
    before any later job's indicators reference them. Each item is serialised
    once, as it is read; only the job being filled is held in memory. Items that
    cannot be sent (not a mapping, not JSON, larger than a whole job) are
    appended to ``rejected`` as ``{"reason", "source"}`` and skipped.

    Bodies are byte for byte what the plain compact encoder gives
    (``_ItemEncoder``: lists shared between items are encoded once per job
    while the items come from plain lists or tuples).
    """
    parts = {"group": [], "indicator": []}  # type: Dict[str, List[bytes]]
    size, count = _BODY_OVERHEAD, 0
    limit = max_bytes - _BODY_OVERHEAD  # larger items are rejected by _serialise
    encode = _ItemEncoder()
    for kind, source in (("group", groups), ("indicator", indicators)):
        stable = type(source) in (list, tuple)  # iterating runs none of the caller's code
        for item in source:
            if not stable:
                encode.forget()
            data = None
            if type(item) is dict:
                try:
                    data = encode(item).encode("utf-8")
                except (TypeError, ValueError):
                    pass
                else:
                    if len(data) > limit:
                        data = None
            if data is None:  # the careful path: rejects, or takes a mapping that is not a dict
                data = _serialise(kind, item, max_bytes, rejected, encode)
                encode.forget()  # a mapping's own methods may have run
                if data is None:
                    continue
            if count and (count >= max_items or size + len(data) + 1 > max_bytes):
                yield _job_from(parts)
                encode.forget()  # the caller ran: lists may have changed
                parts = {"group": [], "indicator": []}
                size, count = _BODY_OVERHEAD, 0
            parts[kind].append(data)
            size += len(data) + 1  # the comma; one too many per array keeps it conservative
            count += 1
    if count:
        yield _job_from(parts)


def _serialise(kind: str, item: Any, max_bytes: int, rejected: List[Dict[str, Any]],
               encode: Callable[[Any], str] = _encode_item) -> Optional[bytes]:
    """Compact UTF-8 JSON of one item, or None (and a rejection) if unsendable."""
    if type(item) is not dict and not isinstance(item, Mapping):  # (typing's check is slow)
        rejected.append({"reason": "{} is not a mapping; not sent".format(kind),
                         "source": type(item).__name__})
        return None
    try:
        data = encode(item).encode("utf-8")
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


# --------------------------------------------------------- response helpers

def retry_after_seconds(value: Optional[str], now: Callable[[], float] = time.time
                        ) -> Optional[float]:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now())


def _is_json(response: requests.Response) -> bool:
    return "json" in response.headers.get("Content-Type", "").lower()


def _is_tc_refusal(response: requests.Response) -> bool:
    """TC's plain-text 503 (batch API disabled, unlicensed): configuration, not a hiccup.

    Proxies' busy pages are HTML and API failures JSON; those stay retryable.
    """
    content_type = response.headers.get("Content-Type", "").lower()
    return (response.status_code == 503 and bool(response.content.strip())
            and "json" not in content_type and "html" not in content_type)


def response_message(response: requests.Response) -> str:
    """TC's own words for a failed response.

    Batch 401/503 answers are plain text and v2/v3 failures are JSON, so the
    Content-Type decides how the body is read. HTML (proxies) is not quoted.
    """
    if _is_json(response):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping):
            for key in ("message", "description", "error", "errorMessage"):
                if isinstance(body.get(key), str) and body[key].strip():
                    return body[key].strip()[:MAX_MESSAGE_CHARS]
    content_type = response.headers.get("Content-Type", "").lower()
    text = response.text.strip() if response.content else ""
    if text and "html" not in content_type:
        return text[:MAX_MESSAGE_CHARS]
    return response.reason or "HTTP {}".format(response.status_code)


def exception_reason(exc: requests.RequestException, timeout: float) -> str:
    """A short cause of a transport failure, without urllib3's object dumps."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out after {:g} s".format(timeout)
    if isinstance(exc, requests.exceptions.ReadTimeout) or "Read timed out" in str(exc):
        return "no answer within {:g} s".format(timeout)  # (urllib3 wraps retried ones)
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (check threatconnect.verify_tls / ca_bundle)"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy error (check threatconnect.proxies)"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if found:
        return found.group(1).strip()
    return type(exc).__name__


class _Scrubber:
    """Replaces secret values in text that may reach a message or a log."""

    def __init__(self, settings: Mapping[str, Any]):
        values = secret_values({"threatconnect": settings})  # the schema's secret: true keys
        for proxy in (settings.get("proxies") or {}).values():
            parts = urlsplit(proxy) if isinstance(proxy, str) else None
            if parts is not None:
                values.extend([parts.username, parts.password])
        # Very short values would mangle ordinary text; real credentials are long.
        self._secrets = sorted({v for v in values if isinstance(v, str) and len(v) >= 4},
                               key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


# ---------------------------------------------------------------------- client

_RETRY_IDEMPOTENT = frozenset({429, 500, 502, 503, 504})
_RETRY_CREATE = _RETRY_IDEMPOTENT
_RETRY_NO_REPLAY = frozenset({429})

Aggregate = Dict[str, Any]


class ThreatConnectClient:
    """The Batch API calls the pack makes, configured from ``config["threatconnect"]``.

    ``sleep``, ``monotonic`` and the delays are injectable so tests run fast.
    """

    def __init__(self, settings: Mapping[str, Any], session: Optional[requests.Session] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 errors_retry_delay: float = 5.0, poll_initial: float = 1.0,
                 poll_max: float = 30.0, backoff_factor: float = 0.5,
                 backoff_max: float = 30.0, max_retry_after: float = 120.0):
        schema = load_schema()["properties"]["threatconnect"]
        self.settings = apply_defaults(dict(settings), schema)
        self.api_url = self.settings["api_url"].rstrip("/")
        self.owner = self.settings["owner"]
        self.session = session if session is not None else build_session(self.settings)
        self.verify = tls_verify(self.settings)
        self.proxies = dict(self.settings.get("proxies") or {})
        self.timeout = float(self.settings["timeout"])
        self.retries = int(self.settings["retries"])
        self.max_items = int(self.settings["batch_max_items"])
        self.max_bytes = int(self.settings["batch_max_bytes"])
        self.gzip = bool(self.settings["batch_gzip"])
        self.poll_timeout = float(self.settings["poll_timeout"])
        self._sleep = sleep
        self._monotonic = monotonic
        self.errors_retry_delay = errors_retry_delay
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._scrub = _Scrubber(self.settings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> "ThreatConnectClient":
        """Build from the whole validated pack config."""
        return cls(config["threatconnect"], **kwargs)

    def __repr__(self) -> str:
        return "ThreatConnectClient(api_url={!r}, owner={!r}, auth={!r})".format(
            self.api_url, self.owner, self.session.auth)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "ThreatConnectClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- HTTP core

    def _send(self, method: str, path: str, retry_on: FrozenSet[int],
              **kwargs: Any) -> requests.Response:
        """One call with the status retry loop; returns the final response.

        Every attempt goes through ``session.request`` again, so HMAC signs it
        with a fresh Timestamp.
        """
        attempt, resigned = 0, False
        while True:
            started = self._monotonic()
            try:
                response = self.session.request(
                    method, self.api_url + path, timeout=self.timeout, verify=self.verify,
                    proxies=self.proxies, allow_redirects=False, **kwargs)
            except requests.RequestException as exc:
                LOG.debug("ThreatConnect %s %s failed: %s", method, path, type(exc).__name__)
                raise ThreatConnectError(self._scrub("{} {}: cannot reach ThreatConnect: {}".format(
                    method, path, exception_reason(exc, self.timeout))), None) from None
            LOG.debug("ThreatConnect %s %s -> HTTP %s (%.2f s)", method, path,
                      response.status_code, self._monotonic() - started)
            if (response.status_code == 401 and not resigned
                    and isinstance(self.session.auth, HmacAuth)
                    and "timestamp" in response.text.lower()):
                resigned = True  # a stale signature (slow connect retries): sign again once
                continue
            delay = self._retry_delay(response, retry_on, attempt)
            if delay is None:
                return response
            attempt += 1
            LOG.warning("ThreatConnect %s %s answered HTTP %s; retry %d of %d in %.1f s",
                        method, path, response.status_code, attempt, self.retries, delay)
            response.close()
            self._sleep(delay)

    def _retry_delay(self, response: requests.Response, retry_on: FrozenSet[int],
                     attempt: int) -> Optional[float]:
        """Seconds to wait before retrying, or None when the answer is final."""
        status = response.status_code
        if status not in retry_on or attempt >= self.retries:
            return None
        if _is_tc_refusal(response):
            return None
        asked = retry_after_seconds(response.headers.get("Retry-After"))
        if asked is not None:
            return asked if asked <= self.max_retry_after else None
        return min(self.backoff_max, self.backoff_factor * (2 ** attempt))

    def _fail(self, response: requests.Response, what: str) -> ThreatConnectError:
        message = response_message(response)
        if 300 <= response.status_code < 400:
            message = "unexpected redirect to {} (check threatconnect.api_url)".format(
                response.headers.get("Location", "?"))
        return ThreatConnectError(self._scrub("{}: {}".format(what, message)),
                                  response.status_code)

    def _json(self, response: requests.Response, what: str) -> Any:
        """Parse a successful JSON body; anything else is an error, not a crash."""
        try:
            return response.json()
        except ValueError:
            raise ThreatConnectError("{}: answer is not JSON ({})".format(
                what, response.headers.get("Content-Type", "no content type")),
                response.status_code) from None

    # ------------------------------------------------------------------ calls

    def batch_config(self, action: str = "Create",
                     overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The validated BatchConfig from the pack settings, with ``overrides`` on top."""
        config = {
            "version": "V2",
            "owner": self.owner,
            "action": action,
            "haltOnError": bool(self.settings["halt_on_error"]),
            "attributeWriteType": self.settings["attribute_write_type"],
            "tagWriteType": self.settings["tag_write_type"],
            "securityLabelWriteType": self.settings["security_label_write_type"],
        }
        config.update(overrides or {})
        return validate_batch_config(config)

    def create_batch(self, config: Mapping[str, Any]) -> int:
        """POST /v2/batch: create a job and return its batch id."""
        body = json.dumps(validate_batch_config(config), separators=(",", ":")).encode("utf-8")
        response = self._send("POST", "/v2/batch", _RETRY_CREATE, data=body,
                              headers={"Content-Type": "application/json; charset=utf-8"})
        if response.status_code not in (200, 201):
            raise self._fail(response, "create batch job")
        payload = self._json(response, "create batch job")
        batch_id = _dig(payload, "data", "batchId")
        if _dig(payload, "status") != "Success" or not _is_id(batch_id):
            raise ThreatConnectError("create batch job: answer has no batch id",
                                     response.status_code)
        return int(batch_id)

    def upload(self, batch_id: int, body: bytes, gzip: Optional[bool] = None) -> Dict[str, Any]:
        """POST /v2/batch/{id}: upload the job's body (raw JSON, octet-stream).

        ``gzip=None`` follows ``batch_gzip``. The byte limit applies to the
        uncompressed body (TC's counting is unverified; this is the safe side).
        """
        batch_id = _checked_id(batch_id)
        self._check_size(body)
        data, headers = body, {"Content-Type": "application/octet-stream"}
        if self.gzip if gzip is None else gzip:
            data = gzip_module.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        response = self._send("POST", "/v2/batch/{}".format(batch_id), _RETRY_NO_REPLAY,
                              data=data, headers=headers)
        if not 200 <= response.status_code < 300:
            raise self._fail(response, "upload batch {}".format(batch_id))
        payload = self._json(response, "upload batch {}".format(batch_id))
        return payload if isinstance(payload, dict) else {}

    def create_and_upload(self, config: Mapping[str, Any], body: bytes,
                          include_additional: bool = True) -> Dict[str, Any]:
        """POST /v2/batch/createAndUpload (multipart ``config`` + ``content``).

        Undocumented REST call used by the SDKs; returns ``data.batchStatus``.
        ``submit`` uses the documented two-step calls instead.
        """
        config_body = json.dumps(validate_batch_config(config), separators=(",", ":"))
        self._check_size(body)
        files = {"config": ("config", config_body.encode("utf-8"), "application/json"),
                 "content": ("content", body, "application/octet-stream")}
        params = {"includeAdditional": "true"} if include_additional else None
        response = self._send("POST", "/v2/batch/createAndUpload", _RETRY_NO_REPLAY,
                              params=params, files=files)
        if not 200 <= response.status_code < 300:
            raise self._fail(response, "create and upload batch")
        return self._batch_status(response, "create and upload batch")

    def status(self, batch_id: int, include_additional: bool = True) -> Dict[str, Any]:
        """GET /v2/batch/{id}: the job's ``data.batchStatus`` object."""
        batch_id = _checked_id(batch_id)
        params = {"includeAdditional": "true"} if include_additional else None
        response = self._send("GET", "/v2/batch/{}".format(batch_id), _RETRY_IDEMPOTENT,
                              params=params)
        if response.status_code != 200:
            raise self._fail(response, "status of batch {}".format(batch_id))
        return self._batch_status(response, "status of batch {}".format(batch_id))

    def _batch_status(self, response: requests.Response, what: str) -> Dict[str, Any]:
        status = _dig(self._json(response, what), "data", "batchStatus")
        if not isinstance(status, dict) or not isinstance(status.get("status"), str):
            raise ThreatConnectError("{}: answer has no data.batchStatus".format(what),
                                     response.status_code)
        return status

    def errors(self, batch_id: int, just_completed: bool = False) -> List[Dict[str, Any]]:
        """GET /v2/batch/{id}/errors: the error file (a gzip JSON array); 404 means none.

        TC may answer 404 for a moment after a job completes; with
        ``just_completed`` a 404 is retried once after ``errors_retry_delay``.
        """
        batch_id = _checked_id(batch_id)
        path = "/v2/batch/{}/errors".format(batch_id)
        for attempt in range(2):
            response = self._send("GET", path, _RETRY_IDEMPOTENT)
            if response.status_code == 404:
                if just_completed and attempt == 0:
                    self._sleep(self.errors_retry_delay)
                    continue
                return []
            if response.status_code != 200:
                raise self._fail(response, "errors of batch {}".format(batch_id))
            return _parse_error_file(response.content, batch_id, response.status_code)
        return []

    def indicator_types(self) -> List[Dict[str, Any]]:
        """GET /v2/types/indicatorTypes: a cheap authenticated call (connection test)."""
        response = self._send("GET", "/v2/types/indicatorTypes", _RETRY_IDEMPOTENT)
        if response.status_code != 200:
            raise self._fail(response, "indicator types")
        types = _dig(self._json(response, "indicator types"), "data", "indicatorType")
        if not isinstance(types, list):
            raise ThreatConnectError("indicator types: answer has no data.indicatorType",
                                     response.status_code)
        return types

    def owners(self) -> List[str]:
        """GET /v2/owners: the names of the owners this API user can access (check_config)."""
        response = self._send("GET", "/v2/owners", _RETRY_IDEMPOTENT)
        if response.status_code != 200:
            raise self._fail(response, "owners")
        owners = _dig(self._json(response, "owners"), "data", "owner")
        if not isinstance(owners, list):
            raise ThreatConnectError("owners: answer has no data.owner", response.status_code)
        return [o["name"] for o in owners if isinstance(o, dict) and isinstance(o.get("name"), str)]

    def wait(self, batch_id: int, timeout: Optional[float] = None
             ) -> Tuple[Dict[str, Any], bool]:
        """Poll until ``Completed`` (TC's only end state) or the deadline.

        Polls at once (small jobs finish in a second), then after 1, 2, 4 ... s
        capped at ``poll_max``. Returns the last status and whether it completed.
        """
        deadline = self._monotonic() + (self.poll_timeout if timeout is None else timeout)
        delay = self.poll_initial
        while True:
            status = self.status(batch_id)
            if status["status"] == "Completed":
                return status, True
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return status, False
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, self.poll_max)

    def _check_size(self, body: bytes) -> None:
        if not isinstance(body, bytes):
            raise InputError("batch body must be bytes")
        if len(body) > self.max_bytes:
            raise InputError("batch body is {} bytes, more than threatconnect.batch_max_bytes "
                             "({})".format(len(body), self.max_bytes))

    # ----------------------------------------------------------------- submit

    def submit(self, indicators: Iterable[Mapping[str, Any]],
               groups: Iterable[Mapping[str, Any]] = (), action: str = "Create",
               overrides: Optional[Mapping[str, Any]] = None) -> Aggregate:
        """Send any number of items as batch jobs and return one aggregate.

        Jobs run one after the other: create, upload, poll to completion, fetch
        errors when ``errorCount > 0``. All groups go first (first job, or the
        first jobs if they do not fit one), so every later job's
        ``associatedGroups`` resolve against groups already in the owner and no
        group is sent twice (a repeat would duplicate ``Append`` attributes).

        A submission stops early (rest counted in ``totals.not_submitted``)
        when a job with ``haltOnError`` reports an error, when a job reports a
        fatal reason, or when a job is still unfinished at ``poll_timeout``.
        If a request fails after retries, ``ThreatConnectError`` is raised with
        the aggregate so far in its ``partial_result`` attribute.

        Aggregate::

            {"owner", "action",
             "jobs": [{"batch_id", "status", "items", "groups", "indicators",
                       "success_count", "error_count", "unprocessed_count"}],
             "totals": {"items", "success", "error", "unprocessed", "rejected",
                        "not_submitted"},
             "errors": [{"reason", "source", "batch_id"}],   # all of them
             "unfinished": [batch_id, ...],
             "stopped": None | {"reason": "halt_on_error" | "fatal_error" |
                                "poll_timeout", "batch_id", "message"}}
        """
        config = self.batch_config(action, overrides)
        result = _new_aggregate(config)
        rejected = []  # type: List[Dict[str, Any]]
        try:
            for job in iter_jobs(groups, indicators, self.max_items, self.max_bytes, rejected):
                _take_rejected(result, rejected)
                if result["stopped"]:
                    result["totals"]["not_submitted"] += job.items
                else:
                    self._run_job(config, job, result)
            _take_rejected(result, rejected)
        except ThreatConnectError as exc:
            _take_rejected(result, rejected)
            exc.partial_result = result  # type: ignore[attr-defined]
            raise
        return result

    def start_job(self, config: Mapping[str, Any], job: BatchJob,
                  created: Optional[Callable[[int], None]] = None) -> int:
        """Create a job and upload its body once (see ``_upload_once``); return its batch id.

        ``created(batch_id)`` is called between the two calls, so a caller can
        report a job whose upload then fails.
        """
        batch_id = self.create_batch(config)
        if created is not None:
            created(batch_id)
        self._upload_once(batch_id, job.body)
        LOG.info("ThreatConnect batch %s: %d items uploaded (%d bytes)", batch_id, job.items,
                 len(job.body))
        return batch_id

    def _run_job(self, config: Mapping[str, Any], job: BatchJob, result: Aggregate) -> None:
        """Create, upload, poll and collect errors of one job into ``result``."""
        entry = {"batch_id": None, "status": "Created", "items": job.items,
                 "groups": job.groups, "indicators": job.indicators,
                 "success_count": 0, "error_count": 0, "unprocessed_count": 0}

        def created(batch_id: int) -> None:
            entry["batch_id"] = batch_id
            result["jobs"].append(entry)
            result["totals"]["items"] += job.items

        batch_id = self.start_job(config, job, created)
        entry["status"] = "Queued"
        status, finished = self.wait(batch_id)
        _apply_status(entry, status, result["totals"])
        if not finished:
            result["unfinished"].append(batch_id)
            _stop(result, "poll_timeout", batch_id,
                  "batch {} not completed within {:g} s".format(batch_id, self.poll_timeout))
            return
        if entry["error_count"]:
            self._collect_errors(batch_id, entry["error_count"], result)
        if entry["error_count"] and config.get("haltOnError"):
            _stop(result, "halt_on_error", batch_id,
                  "batch {} halted at its first error".format(batch_id))

    def _upload_once(self, batch_id: int, body: bytes) -> None:
        """Upload a job's body exactly once, even when the answer is lost.

        An upload is never replayed blindly (TC may have taken it, and a second
        copy would duplicate ``Append`` attributes). After an ambiguous failure
        (no answer, or a 5xx that is not TC's "batch api not available") the
        job's status decides: still ``Created`` means the body never arrived and
        it is sent again; any later state means it was accepted.
        """
        attempt = 0
        while True:
            try:
                self.upload(batch_id, body)
                return
            except ThreatConnectError as error:
                ambiguous = error.status is None or 500 <= error.status < 600
                if not ambiguous or attempt >= self.retries:
                    raise
                attempt += 1
                state = self.status(batch_id, include_additional=False).get("status")
                if state != "Created":
                    LOG.warning("ThreatConnect batch %s: upload answer lost (%s) but the job is %s: "
                                "accepted, not sent again", batch_id, error.status, state)
                    return
                LOG.warning("ThreatConnect batch %s: upload failed (%s) and the job is still "
                            "Created: sending it again (%d of %d)", batch_id, error.status,
                            attempt, self.retries)
                self._sleep(min(self.backoff_max, self.backoff_factor * (2 ** attempt)))

    def _collect_errors(self, batch_id: int, count: int, result: Aggregate) -> None:
        for error in self.job_errors(batch_id, count):
            result["errors"].append(error)
            if is_fatal(error["reason"]):
                _stop(result, "fatal_error", batch_id, error["reason"][:MAX_MESSAGE_CHARS])

    def job_errors(self, batch_id: int, count: int) -> List[Dict[str, Any]]:
        """A completed job's errors as ``{"reason", "source", "batch_id"}``.

        A job that counted errors but has no error file gets one entry saying so.
        """
        found = [dict(zip(("reason", "source"), _error_fields(raw)), batch_id=batch_id)
                 for raw in self.errors(batch_id, just_completed=True)]
        if not found and count:
            found.append({"reason": "ThreatConnect counted {} errors but returned no error file".format(
                count), "source": None, "batch_id": batch_id})
        return found


def is_fatal(reason: str) -> bool:
    """Whether an error reason is one of TC's whole-job failures (nothing more was processed)."""
    return any(fatal in reason.lower() for fatal in FATAL_REASONS)


# ------------------------------------------------------------ small helpers

def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _checked_id(batch_id: Any) -> int:
    if not _is_id(batch_id):
        raise InputError("batch id must be a positive integer")
    return batch_id


def _parse_error_file(content: bytes, batch_id: int, status: int) -> List[Dict[str, Any]]:
    """The error file's JSON array, whatever the content type said.

    ``requests`` inflates it when Content-Encoding says gzip; gzip bytes sent
    without that header are inflated here.
    """
    try:
        if content[:2] == b"\x1f\x8b":
            content = gzip_module.decompress(content)
        entries = json.loads(content.decode("utf-8")) if content.strip() else []
    except (OSError, EOFError, ValueError):
        raise ThreatConnectError("errors of batch {}: error file is not gzip/JSON".format(
            batch_id), status) from None
    if not isinstance(entries, list):
        raise ThreatConnectError("errors of batch {}: error file is not a JSON array".format(
            batch_id), status)
    return [e if isinstance(e, dict) else {"errorReason": str(e)} for e in entries]


def _error_fields(raw: Mapping[str, Any]) -> Tuple[str, Any]:
    reason = raw.get("errorReason") or raw.get("errorMessage") or "unknown error"
    return str(reason), raw.get("errorSource")


def _new_aggregate(config: Mapping[str, Any]) -> Aggregate:
    return {"owner": config["owner"], "action": config["action"], "jobs": [],
            "totals": {"items": 0, "success": 0, "error": 0, "unprocessed": 0,
                       "rejected": 0, "not_submitted": 0},
            "errors": [], "unfinished": [], "stopped": None}


def _take_rejected(result: Aggregate, rejected: List[Dict[str, Any]]) -> None:
    for entry in rejected:
        result["errors"].append(dict(entry, batch_id=None))
    result["totals"]["rejected"] += len(rejected)
    del rejected[:]


def _apply_status(entry: Dict[str, Any], status: Mapping[str, Any],
                  totals: Dict[str, int]) -> None:
    entry["status"] = status.get("status", entry["status"])
    entry["success_count"] = _count(status, "successCount")
    entry["error_count"] = _count(status, "errorCount")
    entry["unprocessed_count"] = _count(status, "unprocessCount", "unprocessedCount")
    totals["success"] += entry["success_count"]
    totals["error"] += entry["error_count"]
    totals["unprocessed"] += entry["unprocessed_count"]


def _count(status: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = status.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _stop(result: Aggregate, reason: str, batch_id: int, message: str) -> None:
    if result["stopped"] is None:
        result["stopped"] = {"reason": reason, "batch_id": batch_id, "message": message}
