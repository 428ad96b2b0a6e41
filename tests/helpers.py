"""Shared test helpers: pack configs pointing at the emulators, a minimal TC transport."""
import gzip
import json
from collections.abc import Mapping
from typing import Any, Dict, Optional, Sequence

AL_USER = "st2"
AL_APIKEY = "st2key:al-s3cret-9d1f"
TC_ACCESS_ID = "12345678901234567890"
TC_SECRET_KEY = "tc-s3cret-key-0a7c"
TC_TOKEN = "tc-t0ken-5e2b"
TC_OWNER = "Example Org"
SECRETS = (AL_APIKEY.split(":", 1)[1], TC_SECRET_KEY, TC_TOKEN)
# What tests/conftest.py's sweep looks for after every test: these secrets, and
# "LEAKCHECK", which every other secret value a test makes up contains.
LEAK_MARKER = "LEAKCHECK"
LEAK_MARKERS = SECRETS + (LEAK_MARKER,)


def pack_config(al_url: str = "https://al.example.org", tc_url: str = "https://tc.example.org/api",
                roots: Sequence[str] = (), drop_directory: Optional[str] = None,
                **sections: Dict[str, Any]) -> Dict[str, Any]:
    """A raw st2 config (before validation), like /opt/stackstorm/configs/<pack>.yaml."""
    config: Dict[str, Any] = {
        "assemblyline": {"url": al_url, "user": AL_USER, "api_key": AL_APIKEY, "retries": 2, "timeout": 5},
        "threatconnect": {"api_url": tc_url, "owner": TC_OWNER, "access_id": TC_ACCESS_ID,
                          "secret_key": TC_SECRET_KEY},
        "ingest": {"allowed_roots": list(roots)},
    }
    if drop_directory:
        config["ingest"]["drop_directory"] = drop_directory
    for name, values in sections.items():
        config[name] = dict(config.get(name, {}), **values)
    return config


def assert_no_secrets(*texts: Any) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), "a secret leaked"


def batch_adapter(keep_bodies: bool = False) -> Any:
    """A ``requests`` transport standing in for TC's batch calls; every job completes at once.

    ``keep_bodies=True`` records each (un-gzipped) upload body in ``.bodies``;
    otherwise it keeps only counts, so tracemalloc sees the client alone.
    """
    import requests
    from requests.adapters import BaseAdapter

    class BatchAdapter(BaseAdapter):
        def __init__(self) -> None:
            super().__init__()
            self.next_id, self.bodies, self.items = 1, [], {}  # type: int, list, dict

        def send(self, request, **kwargs):
            response = requests.Response()
            response.request, response.url = request, request.url
            response.headers["Content-Type"] = "application/json"
            path = request.path_url.split("?")[0]
            if path.endswith("/v2/batch"):
                response.status_code = 201
                body = {"status": "Success", "data": {"batchId": self.next_id}}
                self.next_id += 1
            elif request.method == "POST":
                batch_id = int(path.rsplit("/", 1)[1])
                if keep_bodies:
                    data = request.body
                    if request.headers.get("Content-Encoding") == "gzip":
                        data = gzip.decompress(data)
                    self.bodies.append(data)
                    parsed = json.loads(data)
                    self.items[batch_id] = len(parsed["group"]) + len(parsed["indicator"])
                else:
                    self.items[batch_id] = request.body.count(b'"summary":')
                response.status_code, body = 202, {"status": "Queued"}
            else:
                batch_id = int(path.rsplit("/", 1)[1])
                response.status_code = 200
                body = {"status": "Success", "data": {"batchStatus": {
                    "id": batch_id, "status": "Completed", "successCount": self.items[batch_id],
                    "errorCount": 0, "unprocessCount": 0}}}
            response._content = json.dumps(body).encode()
            return response

        def close(self):
            pass

    return BatchAdapter()


def quarantine_dir(tmp_path, sample: bytes):
    """A drop directory (the ingest actions' allowed root) holding ``dropper.exe``."""
    root = tmp_path / "quarantine"
    root.mkdir()
    (root / "dropper.exe").write_bytes(sample)
    return root


class MappingView(Mapping):
    """A read-only mapping that is not a dict (what code must accept besides plain dicts)."""

    def __init__(self, data):
        self._data = data

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)
