"""Strict multipart/form-data parser (enough for what requests/urllib3 send)."""
import re
from typing import Dict, Optional
from urllib.parse import unquote

from .al_common import ApiError

_PARAM_RE = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
BAD_REQUEST = "The browser (or proxy) sent a request that this server could not understand."


class Part:
    def __init__(self, headers: Dict[str, str], data: bytes) -> None:
        self.headers = headers
        self.data = data
        disposition = headers.get("content-disposition", "")
        params = header_params(disposition)
        self.is_form_data = disposition.split(";", 1)[0].strip().lower() == "form-data"
        self.name = params.get("name")  # type: Optional[str]
        self.filename = params.get("filename")  # type: Optional[str]

    @property
    def content_type(self) -> Optional[str]:
        return self.headers.get("content-type")


def header_params(value: str) -> Dict[str, str]:
    """Parameters of a header value (``; k=v; k2="v 2"``), RFC 2231 ``k*=`` decoded."""
    params = {}  # type: Dict[str, str]
    for key, raw in _PARAM_RE.findall(value):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            # urllib3 2.x HTML5-style escaping of quotes/newlines in filenames
            raw = raw.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
        key = key.lower()
        if key.endswith("*"):
            charset, _, encoded = raw.partition("''")
            params[key[:-1]] = unquote(encoded, encoding=charset or "utf-8")
        else:
            params.setdefault(key, raw)
    return params


def boundary_of(content_type: str) -> str:
    boundary = header_params(content_type).get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise ApiError(400, BAD_REQUEST)
    return boundary


def parse_multipart(body: bytes, content_type: str) -> Dict[str, Part]:
    """Parts by field name; any framing error is a 400 like werkzeug's."""
    delimiter = b"\r\n--" + boundary_of(content_type).encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise ApiError(400, BAD_REQUEST)
    parts = {}  # type: Dict[str, Part]
    for chunk in chunks[1:-1]:
        part = _parse_part(chunk)
        if part.name is not None:
            parts.setdefault(part.name, part)
    return parts


def _parse_part(chunk: bytes) -> Part:
    line_end = chunk.find(b"\r\n")
    if line_end < 0 or chunk[:line_end].strip(b" \t"):
        raise ApiError(400, BAD_REQUEST)
    head, sep, data = chunk[line_end + 2:].partition(b"\r\n\r\n")
    if not sep:
        if not chunk[line_end + 2:].startswith(b"\r\n"):
            raise ApiError(400, BAD_REQUEST)
        head, data = b"", chunk[line_end + 4:]
    headers = {}  # type: Dict[str, str]
    for line in head.decode("utf-8", "replace").split("\r\n"):
        if not line:
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise ApiError(400, BAD_REQUEST)
        headers[key.strip().lower()] = value.strip()
    part = Part(headers, data)
    if not part.is_form_data:
        raise ApiError(400, BAD_REQUEST)
    return part
