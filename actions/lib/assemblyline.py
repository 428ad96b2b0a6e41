"""Assemblyline access through the official ``assemblyline-client``.

``AssemblylineService`` builds the client from the validated config section
(API key auth, TLS verification on by default with an optional CA bundle,
proxies, and always an explicit ``retries`` and ``timeout``: the library's
default ``retries=0`` means retry forever), connects lazily (``get_client``
logs in over the network, which must not happen in a sensor's ``setup``), and
turns every client failure into an ``AssemblylineError`` carrying the HTTP
status and a message free of secrets.

The client is built by ``connect``, which is ``get_client`` except that every
request carries the pack's ``verify`` explicitly: the official client sets it
only on its ``requests`` session, and ``requests`` lets ``REQUESTS_CA_BUNDLE``
or ``CURL_CA_BUNDLE`` in the environment override a session's ``verify``, so
``ca_bundle`` and ``verify_tls: false`` were silently ignored on hosts that set
either variable.
"""
import contextlib
import logging
import re
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import requests
from assemblyline_client import ClientError, Connection
from assemblyline_client.v3_client import Client as Client3
from assemblyline_client.v4_client.client import Client as Client4

from lib.errors import AssemblylineError
from lib.tls_warning import warn_unverified

LOG = logging.getLogger(__name__)

# What the official client answers when TLS fails during its login.
TLS_LOGIN_STATUS = 495


class _Connection(Connection):
    """The official client's connection, passing ``verify`` with every request (see above)."""

    def request(self, func, path, process, **kw):  # type: ignore[no-untyped-def]
        kw.setdefault("verify", self.verify)
        return super().request(func, path, process, **kw)


def connect(server: str, apikey: Any, verify: Any, timeout: float, retries: int,
            proxies: Optional[Dict[str, str]]) -> Any:
    """``get_client(...)`` with the pack's TLS setting pinned per request; logs in."""
    connection = _Connection(server=server, auth=None, cert=None, debug=lambda _path: None,
                             headers=None, retries=retries, silence_warnings=True, apikey=apikey,
                             verify=verify, timeout=timeout, oauth=None, proxies=proxies)
    return Client4(connection) if connection.is_v4 else Client3(connection)


class AssemblylineService:
    def __init__(self, settings: Mapping[str, Any], connect: Callable[..., Any] = connect):
        self.settings = settings
        self._connect = connect
        self._client = None
        self._secrets = _secret_parts(settings.get("api_key") or "")
        self._tls_warned = False  # once per service: a sensor rebuilding its client must not flood the log

    # -- connection --------------------------------------------------------
    @property
    def client(self):
        """The logged-in client, created on first use (and again after ``reset``)."""
        if self._client is None:
            arguments = self.client_arguments()
            if arguments["verify"] is False and not self._tls_warned:
                self._tls_warned = True
                warn_unverified(LOG, "Assemblyline", "assemblyline", self.settings["url"])
            with self.errors("login"):
                self._client = self._connect(**arguments)
        return self._client

    def client_arguments(self) -> Dict[str, Any]:
        s = self.settings
        verify: Any = bool(s.get("verify_tls", True))
        if verify and s.get("ca_bundle"):
            verify = s["ca_bundle"]
        return {
            "server": s["url"].rstrip("/"),
            "apikey": (s["user"], s["api_key"]),
            "verify": verify,
            "timeout": float(s.get("timeout", 30)),
            "retries": max(1, int(s.get("retries", 5))),  # 0 would mean forever
            "proxies": dict(s.get("proxies") or {}) or None,
        }

    def reset(self) -> None:
        """Drop the client so the next call logs in again (e.g. after repeated failures)."""
        self._client = None

    @property
    def ui_url(self) -> str:
        return (self.settings.get("ui_url") or self.settings["url"]).rstrip("/")

    def submission_link(self, sid: str) -> str:
        return "{}/submission/{}".format(self.ui_url, sid)

    # -- error mapping -----------------------------------------------------
    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            if exc.status_code == TLS_LOGIN_STATUS:
                raise AssemblylineError(self._tls_message(what, exc.args[0] if exc.args else ""),
                                        exc.status_code) from None
            raise AssemblylineError(self._scrub("{} failed: {}".format(what, _text(exc.args[0] if exc.args else exc))),
                                    exc.status_code) from None
        except requests.exceptions.SSLError as exc:
            raise AssemblylineError(self._tls_message(what, exc)) from None
        except requests.exceptions.ProxyError:
            raise AssemblylineError("{} failed: the proxy refused the connection".format(what)) from None
        except requests.exceptions.Timeout:
            raise AssemblylineError("{} failed: no answer within {} s (assemblyline.timeout)".format(
                what, self.settings.get("timeout", 30))) from None
        except requests.exceptions.RequestException as exc:
            raise AssemblylineError(self._scrub("{} failed: {}".format(what, type(exc).__name__))) from None
        except (KeyError, ValueError) as exc:
            # the client indexes server answers directly; a foreign server trips it
            raise AssemblylineError("{} failed: unexpected answer from the server ({})".format(
                what, type(exc).__name__)) from None

    def _tls_message(self, what: str, cause: Any) -> str:
        found = re.search(r"\[SSL: [A-Z_]+\] ([^(']+)", str(cause))
        reason = found.group(1).strip() if found else "TLS error"
        return self._scrub("{} failed: TLS with {} failed: {} (check assemblyline.ca_bundle and "
                           "assemblyline.verify_tls)".format(what, self.settings["url"], reason))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    # -- calls -------------------------------------------------------------
    def ingest(self, handle, name: str, params: Mapping[str, Any], metadata: Mapping[str, Any],
               queue: str, threshold: Optional[int] = None,
               submission_profile: Optional[str] = None) -> str:
        """Submit an open file to the ingest queue and return its ingest_id."""
        with self.errors("ingest of {}".format(name)):
            answer = self.client.ingest(
                fh=handle, fname=name, params=dict(params), metadata=dict(metadata), nq=queue,
                nt=threshold, ingest_type=self.settings.get("ingest_type", "STACKSTORM"),
                submission_profile=submission_profile or self.settings.get("submission_profile"))
        ingest_id = (answer or {}).get("ingest_id") if isinstance(answer, dict) else None
        if not ingest_id:
            raise AssemblylineError("ingest of {} failed: the server returned no ingest_id".format(name))
        return ingest_id

    def pop_messages(self, queue: str, page_size: int) -> List[Any]:
        """Pop up to ``page_size`` notification messages (destructive read)."""
        with self.errors("reading notification queue {}".format(queue)):
            messages = self.client.ingest.get_message_list(queue, page_size=page_size)
        if messages is None:
            return []
        if not isinstance(messages, list):
            raise AssemblylineError("reading notification queue {} failed: expected a list".format(queue))
        return messages

    def submission(self, sid: str) -> Dict[str, Any]:
        with self.errors("fetching submission {}".format(sid)):
            return self.client.submission(sid)

    def summary(self, sid: str) -> Dict[str, Any]:
        with self.errors("fetching the summary of submission {}".format(sid)):
            return self.client.submission.summary(sid)

    def full(self, sid: str) -> Dict[str, Any]:
        with self.errors("fetching the full result of submission {}".format(sid)):
            return self.client.submission.full(sid)

    def is_completed(self, sid: str) -> bool:
        with self.errors("checking submission {}".format(sid)):
            return bool(self.client.submission.is_completed(sid))

    def search_submissions(self, query: str, fl: str, rows: int = 25) -> List[Dict[str, Any]]:
        with self.errors("searching submissions"):
            answer = self.client.search.submission(query, fl=fl, rows=rows)
        return list((answer or {}).get("items") or [])


def quote_query_value(value: str) -> str:
    """Quote a value for a Lucene query (``metadata.ingest_id:"<value>"``)."""
    return '"{}"'.format(str(value).replace("\\", "\\\\").replace('"', '\\"'))


def _secret_parts(api_key: str) -> List[str]:
    parts = [api_key] if api_key else []
    if ":" in api_key:
        parts.append(api_key.split(":", 1)[1])
    return [p for p in parts if len(p) >= 4]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    return text[:500] if text else "no message"
