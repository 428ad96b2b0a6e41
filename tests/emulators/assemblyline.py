"""Test-only Assemblyline 4 server emulator (loopback HTTP, standard library only).

In-process::

    with AssemblylineEmulator(user="st2", apikey="key1:s3cret", analysis_delay=0) as emu:
        client = get_client(emu.url, apikey=("st2", "key1:s3cret"), retries=3, timeout=10)

Standalone (prints one ready line, then serves until killed)::

    python -m tests.emulators.assemblyline --host 127.0.0.1 --port 0 --user st2 --apikey key1:s3cret

Wire behaviour follows /work/shared/reference/assemblyline.md; the deterministic analysis
rules are described in :mod:`tests.emulators.al_analysis`; knobs in ``al_state.KNOB_DEFAULTS``.
"""
import argparse
import copy
import json
import re
import socket
import ssl
import sys
import threading
import time
import traceback
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from .al_common import ApiError, envelope, iso, parse_iso, queue_key
from .al_state import CONCURRENCY_MESSAGE, DAILY_API_MESSAGE, KNOB_DEFAULTS, State
from .tls import QuietTlsErrors, wrap_listener

__all__ = ["AssemblylineEmulator", "KNOB_DEFAULTS", "queue_key", "main"]

FAULT_MESSAGES = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Reply:
    """What a route handler returns: a JSON body (+ cookies), or a dropped connection."""

    def __init__(self, response: Any = None, status: int = 200, error: str = "",
                 cookies: Optional[Dict[str, str]] = None, drop: bool = False) -> None:
        self.response = response
        self.status = status
        self.error = error
        self.cookies = cookies or {}
        self.drop = drop


class Call:
    """One parsed HTTP request as route handlers see it."""

    def __init__(self, method: str, path: str, query: Dict[str, List[str]], headers: Any, body: bytes,
                 params: Dict[str, str], user: Optional[str], session_id: Optional[str]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.params = params
        self.user = user
        self.session_id = session_id

    def arg(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Dict[str, Any]:
        try:
            data = json.loads(self.body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "The browser (or proxy) sent a request that this server could not understand.")
        return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------- routes
def _login(state: State, call: Call) -> Reply:
    data = call.json() if call.body.strip() else {k: v[0] for k, v in call.query.items()}
    body, cookies = state.login(data)
    return Reply(body, cookies=cookies)


def _logout(state: State, call: Call) -> Reply:
    state.logout(call.session_id)
    return Reply({"success": True})


def _api_list(state: State, call: Call) -> Reply:
    return Reply(["v4"])


def _ingest(state: State, call: Call) -> Reply:
    return Reply(state.ingest(call.user or "", call.headers.get("Content-Type", ""), call.body))


def _pop(state: State, call: Call, count: int) -> Reply:
    messages = state.pop_messages(call.user or "", call.params["nq"], count)
    if messages and state.take_drop_after_pop():
        return Reply(drop=True)
    return Reply(messages)


def _get_message(state: State, call: Call) -> Reply:
    reply = _pop(state, call, 1)
    if not reply.drop:
        reply.response = reply.response[0] if reply.response else None
    return reply


def _get_message_list(state: State, call: Call) -> Reply:
    raw = call.arg("page_size", "-1")
    try:
        page_size = int(raw or "")
    except ValueError:
        raise ApiError(500, "Internal Server Error")
    return _pop(state, call, page_size)


def _submission(state: State, call: Call) -> Reply:
    return Reply(state.submission_record(call.params["sid"]))


def _summary(state: State, call: Call) -> Reply:
    return Reply(state.summary(call.params["sid"]))


def _full(state: State, call: Call) -> Reply:
    return Reply(state.full(call.params["sid"]))


def _tree(state: State, call: Call) -> Reply:
    full = state.full(call.params["sid"])
    return Reply({"classification": full["classification"], "filtered": False, "partial": False,
                  "supplementary": [], "tree": full["file_tree"]})


def _is_completed(state: State, call: Call) -> Reply:
    return Reply(state.is_completed(call.params["sid"]))


def _search_submission(state: State, call: Call) -> Reply:
    if call.method == "POST":
        body = call.json()
    else:
        body = {k: (v if k == "filters" else v[0]) for k, v in call.query.items()}
    return Reply(state.search_submissions(body))


def _file_result(state: State, call: Call) -> Reply:
    return Reply(state.file_result(call.params["sha256"].lower()))


Handler = Callable[[State, Call], Reply]
ROUTES = [
    (("GET", "POST"), r"/api/v4/auth/login/", _login, False),
    (("GET",), r"/api/v4/auth/logout/", _logout, True),
    (("GET",), r"/api/", _api_list, True),
    (("POST",), r"/api/v4/ingest/", _ingest, True),
    (("GET",), r"/api/v4/ingest/get_message/(?P<nq>[^/]+)/", _get_message, True),
    (("GET",), r"/api/v4/ingest/get_message_list/(?P<nq>[^/]+)/", _get_message_list, True),
    (("GET",), r"/api/v4/submission/summary/(?P<sid>[^/]+)/", _summary, True),
    (("GET",), r"/api/v4/submission/full/(?P<sid>[^/]+)/", _full, True),
    (("GET",), r"/api/v4/submission/tree/(?P<sid>[^/]+)/", _tree, True),
    (("GET",), r"/api/v4/submission/is_completed/(?P<sid>[^/]+)/", _is_completed, True),
    (("GET",), r"/api/v4/submission/(?P<sid>[^/]+)/", _submission, True),
    (("GET", "POST"), r"/api/v4/search/submission/", _search_submission, True),
    (("GET",), r"/api/v4/file/result/(?P<sha256>[0-9a-fA-F]{64})/", _file_result, True),
]  # type: List[Tuple[Tuple[str, ...], str, Handler, bool]]
_COMPILED = [(methods, re.compile(pattern + r"\Z"), handler, auth) for methods, pattern, handler, auth in ROUTES]


def match_route(method: str, path: str) -> Tuple[Handler, Dict[str, str], bool]:
    allowed = False
    for methods, regex, handler, auth in _COMPILED:
        found = regex.match(path)
        if found is None:
            continue
        if method in methods:
            return handler, {k: unquote(v) for k, v in found.groupdict().items()}, auth
        allowed = True
    if allowed:
        raise ApiError(405, "Method Not Allowed")
    raise ApiError(404, "Api does not exist (%s)" % path)


# ---------------------------------------------------------------------------------- HTTP
class _Server(QuietTlsErrors, ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], state: State) -> None:
        super().__init__(address, _RequestHandler)
        self.state = state
        self.open_sockets = set()  # type: Set[socket.socket]
        self.sockets_lock = threading.Lock()

    def close_open_sockets(self) -> None:
        with self.sockets_lock:
            sockets, self.open_sockets = list(self.open_sockets), set()
        for sock in sockets:
            _hard_close(sock)


def _hard_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AssemblylineEmulator/4"
    server = None  # type: Any

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.sockets_lock:
                self.server.open_sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _dispatch(self, method: str) -> None:
        state = self.server.state  # type: State
        generation = state.generation
        body = self._read_body()
        parts = urlsplit(self.path)
        entry = {"method": method, "path": parts.path, "query": parts.query, "user": None,
                 "status": 0, "time": state.clock.now()}  # type: Dict[str, Any]
        try:
            reply = self._handle(state, method, parts.path, parts.query, body, entry)
        except ApiError as err:
            reply = Reply(err.response, err.status, err.message)
        except Exception:  # pragma: no cover - emulator bug; answer like the real 500
            entry["error"] = traceback.format_exc()
            reply = Reply("", 500, "Internal Server Error")
        late = entry.get("late_fault")
        if late == "lost":
            reply.drop = True
        elif late == "timeout":
            time.sleep(float(state.knob("timeout_delay")))
        entry["status"] = 0 if reply.drop else reply.status
        if not entry.pop("delayed", False):
            _sleep(state)
        state.record(entry, generation)
        if reply.drop:
            self.close_connection = True
            _hard_close(self.connection)
            return
        self._send(reply)

    def _handle(self, state: State, method: str, path: str, query: str, body: bytes,
                entry: Dict[str, Any]) -> Reply:
        state.pump()
        fault = state.pick_fault(path)
        if fault in ("timeout", "lost"):  # the work is done; only the answer fails
            entry["late_fault"] = fault
        elif fault is not None:
            return _fault_reply(fault)
        handler, params, needs_auth = match_route(method, path)
        session_id = self._cookies().get("session")
        call = Call(method, path, parse_qs(query, keep_blank_values=True), self.headers, body, params,
                    None, session_id)
        if not needs_auth:
            return handler(state, call)
        call.user = entry["user"] = self._authenticate(state, session_id)
        state.begin_call(call.user)
        try:
            reply = handler(state, call)
            _sleep(state)  # inside the quota window, like a slow server
            entry["delayed"] = True
            return reply
        finally:
            state.end_call(call.user)

    def _cookies(self) -> Dict[str, str]:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie") or "")
        except Exception:
            return {}
        return {k: v.value for k, v in jar.items()}

    def _authenticate(self, state: State, session_id: Optional[str]) -> str:
        user, apikey = self.headers.get("X-USER"), self.headers.get("X-APIKEY")
        if user is not None and apikey is not None:
            if not state.check_apikey(user, apikey):
                raise ApiError(401, "Invalid user or APIKey")
            return user
        return state.session_user(session_id)

    def _send(self, reply: Reply) -> None:
        payload = json.dumps(envelope(reply.response, reply.error, reply.status)).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.cookies.items():
                extra = "; HttpOnly; SameSite=Strict" if name == "session" else "; SameSite=Strict"
                self.send_header("Set-Cookie", "%s=%s; Path=/%s" % (name, value, extra))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True


def _sleep(state: State) -> None:
    delay = float(state.knob("delay") or 0)
    if delay > 0:
        time.sleep(delay)


def _fault_reply(fault: Union[int, str]) -> Reply:
    if fault == "drop":
        return Reply(drop=True)
    if fault == "concurrency":
        return Reply("", 503, CONCURRENCY_MESSAGE % 10)
    if fault == "daily":
        return Reply("", 503, DAILY_API_MESSAGE % 10000)
    if fault == "session_expired":
        return Reply("", 401, "Session expired")
    status = int(fault)
    return Reply("", status, FAULT_MESSAGES.get(status, "Emulated fault"))


# ---------------------------------------------------------------------------------- public API
class AssemblylineEmulator:
    """Loopback Assemblyline 4 server for tests; see the module docstring."""

    def __init__(self, user: Optional[str] = "st2", apikey: Optional[str] = "key1:s3cret",
                 users: Optional[Dict[str, Union[str, Sequence[str]]]] = None,
                 host: str = "127.0.0.1", port: int = 0, tls: Optional[ssl.SSLContext] = None,
                 **knobs: Any) -> None:
        all_users = dict(users or {})
        if user and apikey:
            all_users.setdefault(user, apikey)
        if not all_users:
            raise ValueError("at least one user/apikey is required")
        self.state = State(all_users, knobs)
        self.host = host
        self._port = port
        self.tls = tls  # a server SSLContext: serve HTTPS (tests/emulators/tls.py)
        self._server = None  # type: Optional[_Server]
        self._thread = None  # type: Optional[threading.Thread]

    # -- lifecycle
    def start(self) -> "AssemblylineEmulator":
        if self._server is None:
            self._server = _Server((self.host, self._port), self.state)
            if self.tls is not None:
                wrap_listener(self._server, self.tls)
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="assemblyline-emulator", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_open_sockets()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "AssemblylineEmulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    # -- knobs and clock
    def set(self, **knobs: Any) -> None:
        """Change knobs at runtime (thread-safe); names as in ``KNOB_DEFAULTS``."""
        self.state.set_knobs(**knobs)

    def knob(self, name: str) -> Any:
        return self.state.knob(name)

    def now(self) -> float:
        return self.state.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the emulator clock forward (analysis delays, sessions, cache, queue expiry)."""
        self.state.clock.advance(seconds)
        self.state.pump()

    def freeze_clock(self, at: Optional[float] = None) -> None:
        self.state.clock.freeze(at)

    def unfreeze_clock(self) -> None:
        self.state.clock.unfreeze()

    # -- analysis hooks
    def pump(self) -> None:
        self.state.pump()

    def complete(self, sid: str) -> None:
        self.state.complete(sid)

    def complete_all(self) -> int:
        """Finish every running submission now (pushing its notifications); returns how many."""
        return self.state.complete_all()

    def add_file(self, content: bytes) -> str:
        """Make a file known to the file store (for sha256/md5/sha1 ingests); returns its sha256."""
        return self.state.store_file(content)

    def delete_submission(self, sid: str) -> bool:
        return self.state.delete_submission(sid)

    # -- queues
    @staticmethod
    def queue_key(user: str, name: str) -> str:
        return queue_key(user, name)

    def queue(self, user: str, name: str) -> List[Dict[str, Any]]:
        self.state.pump()
        with self.state.lock:
            return copy.deepcopy(self.state.queues.get(queue_key(user, name), []))

    def queues(self, user: Optional[str] = None) -> Dict[str, List[Dict[str, Any]]]:
        prefix = queue_key(user, "") if user is not None else "nq-"
        self.state.pump()
        with self.state.lock:
            return {k: copy.deepcopy(v) for k, v in self.state.queues.items() if k.startswith(prefix)}

    def push_message(self, user: str, name: str, message: Dict[str, Any]) -> None:
        self.state.push_message(user, name, message)

    def age_messages(self, seconds: float, user: Optional[str] = None, name: Optional[str] = None) -> None:
        """Shift ingest_time/notify_time of queued messages ``seconds`` into the past."""
        self.state.pump()
        with self.state.lock:
            for key, queue in self.state.queues.items():
                if user is not None and not key.startswith(queue_key(user, name or "")):
                    continue
                for message in queue:
                    for field in ("ingest_time", "notify_time"):
                        stamp = parse_iso(message.get(field))
                        if stamp is not None:
                            message[field] = iso(stamp - seconds)

    def run_plumber(self) -> List[str]:
        """Run the queue-expiry sweep now; returns the deleted queue keys."""
        self.state.pump()
        return self.state.run_plumber()

    # -- datastore / ingests
    def submissions(self) -> Dict[str, Dict[str, Any]]:
        self.state.pump()
        with self.state.lock:
            return {sid: copy.deepcopy(s.record) for sid, s in self.state.submissions.items()}

    def submission(self, sid: str) -> Dict[str, Any]:
        self.state.pump()
        return self.state.submission_record(sid)

    def ingests(self) -> List[Dict[str, Any]]:
        """Every accepted ingest with its outcome (submitted/duplicate/cache_hit/skipped/too_large)."""
        self.state.pump()
        with self.state.lock:
            return [t.describe() for t in self.state.tasks.values()]

    # -- sessions and faults
    def expire_sessions(self, user: Optional[str] = None) -> int:
        """Drop sessions: the next cookie call gets 401 "Session expired" (the client re-logs in)."""
        return self.state.expire_sessions(user)

    def fail_next(self, count: int = 1, kind: Union[int, str] = 503) -> None:
        """Fail the next ``count`` calls (matching ``fault_paths``): an HTTP status (502/503/504 JSON),
        "concurrency", "daily", "session_expired" or "drop" (close without answering)."""
        with self.state.lock:
            self.state.forced_faults.extend([kind] * count)

    # -- request log
    @property
    def request_log(self) -> List[Dict[str, Any]]:
        with self.state.lock:
            return [dict(e) for e in self.state.log]

    def clear_log(self) -> None:
        with self.state.lock:
            self.state.log = []

    def reset(self, knobs: bool = False) -> None:
        """Forget sessions, queues, submissions, files and the log; with ``knobs=True`` also
        restore the constructor's knobs and the real clock."""
        if knobs:
            self.state.restore_knobs()
            self.state.clock.reset()
        self.state.reset()


# ---------------------------------------------------------------------------------- CLI
def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.assemblyline", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--user", default="st2")
    parser.add_argument("--apikey", default="key1:s3cret")
    parser.add_argument("--extra-user", action="append", default=[], metavar="USER=NAME:SECRET")
    for name, default in KNOB_DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        kind = _csv if isinstance(default, tuple) else _knob_value
        parser.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS,
                            help=("knob %s (default %r)" % (name, default)).replace("%", "%%"))
    return parser.parse_args(argv)


def _csv(text: str) -> Tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def _knob_value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(text.lower(), text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    users = {args.user: [args.apikey]}  # type: Dict[str, List[str]]
    for spec in args.extra_user:
        name, _, key = spec.partition("=")
        users.setdefault(name, []).append(key)
    knobs = {k: getattr(args, k) for k in KNOB_DEFAULTS if hasattr(args, k)}
    emu = AssemblylineEmulator(None, None, users=users, host=args.host, port=args.port, **knobs)
    emu.start()
    print("assemblyline emulator ready on %s" % emu.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
