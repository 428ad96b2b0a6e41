"""Validation of ``POST /api/v4/ingest/`` the way the Assemblyline UI server does it."""
import base64
import binascii
import copy
import json
from typing import Any, Callable, Dict, Optional, Tuple

from .al_common import CLASSIFICATION, ApiError, flatten, stringify
from .al_multipart import BAD_REQUEST, parse_multipart

# The release's default submission profiles (config ``submission.profiles``): display name, services.
BASE_SERVICES = ["Filtering", "Antivirus", "Static Analysis", "Extraction", "Networking"]
SUBMISSION_PROFILES = {
    "static": ("Static Analysis [OFFLINE]", BASE_SERVICES),
    "static_with_dynamic": ("Static + Dynamic Analysis [OFFLINE]", BASE_SERVICES + ["Dynamic Analysis"]),
    "static_with_internet": ("Static Analysis [ONLINE]", BASE_SERVICES + ["Internet Connected"]),
    "static_and_dynamic_with_internet": (
        "Static + Dynamic Analysis [ONLINE]", BASE_SERVICES + ["Internet Connected", "Dynamic Analysis"]),
}
FETCH_METHODS = ("sha256", "sha1", "md5", "tlsh", "ssdeep", "url")
INGEST_MAX_PRIORITY = 250
MAX_EXTRACTED = 100

Lookup = Callable[[str, str], Optional[bytes]]


class IngestConfig:
    """The server settings ingest validation depends on (a snapshot of the knobs)."""

    def __init__(self, max_file_size: int, submission_customize: bool, restricted_params: Tuple[str, ...],
                 allow_url_submissions: bool, max_dtl: int) -> None:
        self.max_file_size = max_file_size
        self.submission_customize = submission_customize
        self.restricted_params = restricted_params
        self.allow_url_submissions = allow_url_submissions
        self.max_dtl = max_dtl


class IngestRequest:
    def __init__(self, name: str, content: bytes, params: Dict[str, Any], metadata: Dict[str, str],
                 queue: Optional[str], threshold: Optional[int]) -> None:
        self.name = name
        self.content = content
        self.params = params
        self.metadata = metadata
        self.queue = queue
        self.threshold = threshold


def default_params(user: str) -> Dict[str, Any]:
    return {
        "auto_archive": False, "classification": CLASSIFICATION, "deep_scan": False,
        "delete_after_archive": False, "description": "", "filetype_override": None, "generate_alert": False,
        "groups": ["USERS"], "ignore_cache": False, "ignore_filtering": False,
        "ignore_recursion_prevention": False, "ignore_size": False, "initial_data": None, "malicious": False,
        "max_extracted": MAX_EXTRACTED, "max_supplementary": MAX_EXTRACTED, "never_drop": False,
        "priority": 1000, "psid": None, "quota_item": False, "service_spec": {},
        "services": {"excluded": [], "rescan": [], "resubmit": [], "selected": list(BASE_SERVICES)},
        "submitter": user, "trace": False, "ttl": 30, "type": "INGEST", "use_archive_alternate_dtl": False,
    }


def _recursive_update(base: Dict[str, Any], changes: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _recursive_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _json_object(raw: bytes) -> Dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, BAD_REQUEST)
    if not isinstance(data, dict):
        raise ApiError(400, BAD_REQUEST)
    return data


def _basename(name: Any) -> str:
    return str(name or "").rsplit("/", 1)[-1]


def read_body(content_type: str, body: bytes) -> Tuple[Dict[str, Any], Optional[bytes], str,
                                                          Optional[Tuple[str, str]]]:
    """(json data, binary or None, name, (fetch method, value) or None)."""
    if "multipart/form-data" in content_type:
        parts = parse_multipart(body, content_type)
        data = _json_object(parts["json"].data) if "json" in parts else {}
        if "bin" not in parts or parts["bin"].filename is None:
            raise ApiError(400, BAD_REQUEST)
        binary = parts["bin"].data
        return data, binary, _basename(data.get("name", parts["bin"].filename)), None
    if "application/json" in content_type:
        data = _json_object(body)
        binary = _inline_binary(data)
        fetch = next(((m, data[m]) for m in FETCH_METHODS if data.get(m)), None)
        if fetch and fetch[0] == "url":
            return data, binary, str(fetch[1]), fetch
        name = _basename(data.get("name") or (fetch[1] if fetch else ""))
        return data, binary, name, fetch
    raise ApiError(400, "Invalid content type")


def _inline_binary(data: Dict[str, Any]) -> Optional[bytes]:
    if data.get("plaintext"):
        return str(data["plaintext"]).encode()
    if data.get("base64"):
        try:
            return base64.b64decode(data["base64"]) or None
        except (binascii.Error, ValueError, TypeError):
            raise ApiError(400, BAD_REQUEST)
    return None


def resolve_params(data: Dict[str, Any], user: str, config: IngestConfig) -> Dict[str, Any]:
    """Defaults <- profile <- request params (profile users cannot change the services)."""
    requested = data.get("params") or {}
    if not isinstance(requested, dict):
        raise ApiError(400, "Invalid submission parameters")
    profile_name = data.get("submission_profile")
    params = default_params(user)
    if profile_name is None and not config.submission_customize:
        raise ApiError(400, "You must specify a submission profile. One of: %s" % list(SUBMISSION_PROFILES))
    if profile_name is not None and profile_name not in SUBMISSION_PROFILES:
        raise ApiError(400, "Submission profile '%s' does not exist" % profile_name)
    profile = SUBMISSION_PROFILES.get(profile_name) if profile_name else None
    if profile and not config.submission_customize:
        for key in requested:
            if key in config.restricted_params:
                raise ApiError(400, "User isn't allowed to modify the \"%s\" parameters of \"%s\" profile"
                               % (key, profile[0]))
    if profile:
        params["services"]["selected"] = list(profile[1])
    _recursive_update(params, requested)
    if profile and not config.submission_customize:
        params["services"]["selected"] = list(profile[1])
    return params


def finalize_params(params: Dict[str, Any], user: str, name: str, is_url: bool,
                    config: IngestConfig) -> Dict[str, Any]:
    generate_alert = params.get("generate_alert", False)
    if not isinstance(generate_alert, bool):
        raise ApiError(400, "generate_alert should be a boolean")
    try:
        priority = int(params.get("priority", 1000))
    except (TypeError, ValueError):
        raise ApiError(400, "priority should be an int")
    description = params.get("description") or "Inspection of %s: %s" % ("URL" if is_url else "file", name)
    params.update({
        "description": "[%s] %s" % (params.get("type") or "INGEST", description),
        "generate_alert": generate_alert, "max_extracted": MAX_EXTRACTED, "max_supplementary": MAX_EXTRACTED,
        "priority": min(priority, INGEST_MAX_PRIORITY), "submitter": user,
    })
    if config.max_dtl > 0:
        ttl = int(params.get("ttl") or 0)
        params["ttl"] = min(ttl, config.max_dtl) if ttl else config.max_dtl
    return model_params(params)


def model_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """What survives the server building its ``SubmissionParams`` model: names the model does not
    have (here or under ``services``) are dropped without an error."""
    known = default_params("")
    kept = {k: v for k, v in params.items() if k in known}
    services = kept.get("services")
    if isinstance(services, dict):
        kept["services"] = {k: v for k, v in services.items() if k in known["services"]}
    return kept


def _fetch(fetch: Tuple[str, str], lookup: Lookup, config: IngestConfig) -> bytes:
    method, value = fetch
    if method == "url":
        if not config.allow_url_submissions:
            raise ApiError(400, "URL submissions are disabled in this system")
        return ("uri: %s\n" % value).encode()
    content = lookup(method, str(value).lower())
    if content is None:
        raise ApiError(404, "%s does not exist in Assemblyline and no external sources are available."
                       % method.upper())
    return content


def _metadata(data: Dict[str, Any]) -> Dict[str, str]:
    raw = data.get("metadata") or {}
    if not isinstance(raw, dict):
        raise ApiError(400, "Invalid metadata")
    return {k: stringify(v) for k, v in flatten(raw).items()}


def validate(content_type: str, body: bytes, user: str, config: IngestConfig, lookup: Lookup) -> IngestRequest:
    data, binary, name, fetch = read_body(content_type, body)
    if not name:
        raise ApiError(400, "Filename missing")
    threshold = data.get("notification_threshold")
    if threshold and not isinstance(threshold, int):
        raise ApiError(400, "notification_threshold should be and int")
    params = resolve_params(data, user, config)
    metadata = _metadata(data)
    if binary is None:
        if fetch is None:
            raise ApiError(400, "Missing file to scan. No binary or fetching method provided.")
        binary = _fetch(fetch, lookup, config)
    if len(binary) == 0:
        raise ApiError(400, "File empty.")
    params = finalize_params(params, user, name, bool(fetch and fetch[0] == "url"), config)
    if len(binary) > config.max_file_size and not params.get("ignore_size", False):
        raise ApiError(413, "File too big to be scanned (%d > %d)." % (len(binary), config.max_file_size))
    queue = data.get("notification_queue") or None
    return IngestRequest(name, binary, params, metadata, queue, threshold if isinstance(threshold, int) else None)
