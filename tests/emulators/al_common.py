"""Small shared helpers for the Assemblyline emulator: errors, clock, ids, time formats."""
import datetime
import json
import random
import threading
import time
from typing import Any, Dict, Optional

SERVER_VERSION = "4.7.0.stable1"
CLASSIFICATION = "TLP:C"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class ApiError(Exception):
    """An error answered with the standard envelope (status + api_error_message)."""

    def __init__(self, status: int, message: str, response: Any = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.response = response


class Clock:
    """Wall clock plus a test-controlled offset (``advance``) or a frozen time."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen = None  # type: Optional[float]
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            else:
                self._offset += seconds

    def freeze(self, at: Optional[float] = None) -> None:
        now = self.now() if at is None else at
        with self._lock:
            self._frozen = now

    def reset(self) -> None:
        with self._lock:
            self._offset, self._frozen = 0.0, None

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - time.time()
            self._frozen = None


def iso(ts: float) -> str:
    """Format an epoch timestamp the way Assemblyline does (``...T..:..:..ffffffZ``)."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(ISO_FORMAT)


def parse_iso(value: Any) -> Optional[float]:
    """Parse an Assemblyline ISO timestamp back to epoch seconds (None if unparsable)."""
    if not isinstance(value, str):
        return None
    for fmt in (ISO_FORMAT, "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            parsed = datetime.datetime.strptime(value, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()
    return None


def base62(number: int) -> str:
    out = ""
    while number:
        number, rem = divmod(number, 62)
        out = BASE62[rem] + out
    return out or "0"


class IdFactory:
    """Random base62 ids like Assemblyline's ``get_random_id()`` (uuid4 -> ~22 chars)."""

    def __init__(self, seed: Optional[int] = None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            bits = self._rng.getrandbits(128)
        # Force the uuid4 version/variant bits so the length distribution matches.
        bits = (bits & ~(0xF << 76)) | (0x4 << 76)
        bits = (bits & ~(0x3 << 62)) | (0x2 << 62)
        return base62(bits)


def envelope(response: Any, error: str = "", status: int = 200) -> Dict[str, Any]:
    return {
        "api_response": response,
        "api_error_message": error,
        "api_server_version": SERVER_VERSION,
        "api_status_code": status,
    }


def flatten(data: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Flatten nested dicts into dotted keys (lists and scalars are leaves)."""
    out = {}  # type: Dict[str, Any]
    for key, value in data.items():
        dotted = "%s.%s" % (prefix, key) if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def stringify(value: Any) -> str:
    """Metadata values: strings stay, everything else is JSON-encoded (5 -> "5")."""
    return value if isinstance(value, str) else json.dumps(value)


def queue_key(user: str, name: str) -> str:
    """Per-user notification queue key: ``nq-<UPPERHEX(utf8 user)>-<name>``."""
    return "nq-%s-%s" % (user.encode("utf-8").hex().upper(), name)
