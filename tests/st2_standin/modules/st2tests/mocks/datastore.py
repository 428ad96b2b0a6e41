"""Datastore stand-in with st2's real semantics.

Unlike st2tests' mock it behaves like the real service: values are stored as
``str(value)``, ``local=True`` names become ``<pack>.<ClassName>:<name>``,
TTLs expire, and values written with ``encrypt=True`` read back as ciphertext
unless ``decrypt=True`` is asked for. As in st2tests, ``list_values`` ignores
``limit``/``offset`` and returns every match.
"""
import base64
import time
from typing import Callable, Dict, List, Optional, Tuple

from st2common.constants.keyvalue import ALLOWED_SCOPES, SYSTEM_SCOPE

class KeyValuePair:
    def __init__(self, name: str, value: str, secret: bool = False,
                 expire_timestamp: Optional[float] = None):
        self.name = name
        self.value = value
        self.secret = secret
        self.expire_timestamp = expire_timestamp

    def __repr__(self):
        return "KeyValuePair(name={!r})".format(self.name)


class MockDatastoreService:
    def __init__(self, logger=None, pack_name="tests", class_name="Unknown", api_username=None,
                 clock: Callable[[], float] = time.time):
        self._logger = logger
        self._pack_name = pack_name
        self._class_name = class_name
        self._clock = clock
        # full name -> (value, secret, expires_at)
        self._store: Dict[str, Tuple[str, bool, Optional[float]]] = {}
        self.write_count = 0

    # -- naming ---------------------------------------------------------
    def get_key_prefix(self) -> str:
        return "{}.{}:".format(self._pack_name, self._class_name)

    def _full_name(self, name: str, local: bool) -> str:
        return self.get_key_prefix() + name if local else name

    @staticmethod
    def _check_scope(scope: str) -> None:
        if scope not in ALLOWED_SCOPES:
            raise ValueError('Scope "{}" is not allowed; use "{}"'.format(scope, SYSTEM_SCOPE))

    def _live(self, full_name: str):
        entry = self._store.get(full_name)
        if entry is None:
            return None
        if entry[2] is not None and entry[2] <= self._clock():
            del self._store[full_name]
            return None
        return entry

    # -- the four datastore methods -------------------------------------
    def list_values(self, local=True, prefix=None, limit=None, offset=None) -> List[KeyValuePair]:
        """Every live name under the prefix, sorted. Like st2tests' mock, ``limit`` and
        ``offset`` are accepted and ignored (the real API pages; the pack's paging is tested
        against a paging fake in tests/test_datastore.py)."""
        start = self.get_key_prefix() if local else ""
        start += prefix or ""
        names = sorted(n for n in list(self._store) if n.startswith(start) and self._live(n))
        return [self._pair(n, decrypt=False) for n in names]

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False) -> Optional[str]:
        self._check_scope(scope)
        full_name = self._full_name(name, local)
        if not self._live(full_name):
            return None
        return self._pair(full_name, decrypt).value

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False) -> bool:
        self._check_scope(scope)
        if ttl is not None and int(ttl) <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        expires = self._clock() + int(ttl) if ttl else None
        self._store[self._full_name(name, local)] = (str(value), bool(encrypt), expires)
        self.write_count += 1
        return True

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE) -> bool:
        self._check_scope(scope)
        return self._store.pop(self._full_name(name, local), None) is not None

    def _pair(self, full_name: str, decrypt: bool) -> KeyValuePair:
        value, secret, expires = self._store[full_name]
        if secret and not decrypt:
            value = "ENCRYPTED:" + base64.b64encode(value.encode("utf-8")).decode("ascii")
        return KeyValuePair(full_name, value, secret, expires)
