"""ThreatConnect API authentication: HMAC (Access ID + Secret Key) or an API token.

Wire-format truth: ``threatconnect.md`` (reference). Secrets never appear in a
repr, a message or a log.
"""
import base64
import hashlib
import hmac
import time
from typing import Any, Callable, Mapping, Union

import requests
from requests.auth import AuthBase

from lib.config import tc_auth_problems
from lib.errors import ConfigError


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
