"""Validated pack configuration.

``load_config(raw)`` takes the dict StackStorm hands to an action or sensor,
validates it against ``config.schema.yaml`` (the same file st2 registers, so
there is one source of truth), applies the schema's defaults and returns a new
plain ``dict``. Every problem is reported at once in one ``ConfigError``.

Messages name keys and expectations, never values: a secret typed into the
wrong key must not leak through an error.
"""
import copy
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional
from urllib.parse import urlsplit

import jsonschema
import yaml

from lib.errors import ConfigError

PACK_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA_PATH = os.path.join(PACK_DIR, "config.schema.yaml")

# Keywords st2 allows in config schemas that JSON Schema draft 4 does not know
# (or, for ``required``, knows with another meaning).
_ST2_ONLY_KEYWORDS = ("secret", "position", "immutable", "required")

_cached_schema: Optional[Dict[str, Any]] = None


def load_schema(path: str = SCHEMA_PATH) -> Dict[str, Any]:
    """Read an st2 config schema file and return it as a draft 4 JSON schema."""
    global _cached_schema
    if path == SCHEMA_PATH and _cached_schema is not None:
        return _cached_schema
    try:
        with open(path, encoding="utf-8") as handle:
            st2_schema = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(["cannot read {}: {}".format(path, exc)], source="config schema")
    if not isinstance(st2_schema, dict):
        raise ConfigError(["{} must map config keys to schemas".format(path)], source="config schema")
    schema = to_json_schema({"type": "object", "properties": st2_schema, "additionalProperties": False})
    if path == SCHEMA_PATH:
        _cached_schema = schema
    return schema


def to_json_schema(st2_schema: Mapping[str, Any]) -> Dict[str, Any]:
    """Translate st2's per-property ``required: true`` into draft 4 ``required`` lists."""
    schema = {k: v for k, v in st2_schema.items() if k not in _ST2_ONLY_KEYWORDS}
    properties = st2_schema.get("properties")
    if isinstance(properties, Mapping):
        schema["properties"] = {name: to_json_schema(sub) for name, sub in properties.items()}
        required = [name for name, sub in properties.items() if sub.get("required") is True]
        if required:
            schema["required"] = required
    for key in ("items", "additionalProperties"):
        if isinstance(st2_schema.get(key), Mapping):
            schema[key] = to_json_schema(st2_schema[key])
    return schema


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Return ``value`` with schema defaults filled in, recursing into objects.

    A missing object whose properties have defaults is created, so
    ``cfg["ingest"]["max_file_size"]`` always exists after loading.
    """
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), Mapping):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        return value  # the validator reports the wrong type
    result = dict(value)
    for name, sub in schema["properties"].items():
        if name not in result or result[name] is None:
            if "default" in sub:
                result[name] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and _has_defaults(sub):
                result[name] = {}
            else:
                result.pop(name, None)
                continue
        result[name] = apply_defaults(result[name], sub)
    return result


def _has_defaults(schema: Mapping[str, Any]) -> bool:
    return any("default" in sub or _has_defaults(sub)
               for sub in schema.get("properties", {}).values())


def load_config(raw: Optional[Mapping[str, Any]], schema_path: str = SCHEMA_PATH) -> Dict[str, Any]:
    """Validate the raw st2 config and return it with defaults applied."""
    schema = load_schema(schema_path)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(["the config must be a mapping of keys to values, got {}".format(
            _json_type(raw))])
    config = apply_defaults(_plain(raw), schema)
    problems = schema_problems(config, schema) + semantic_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def _plain(value: Any) -> Any:
    """Copy mappings (st2 hands a ``PackConfigDict``) into plain dicts."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def schema_problems(config: Any, schema: Mapping[str, Any]) -> List[str]:
    validator = jsonschema.Draft4Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.path])
    # draft 4 reports one error per missing key; each description lists them all
    return list(dict.fromkeys(describe_error(error) for error in errors))


def describe_error(error: "jsonschema.ValidationError") -> str:
    """Describe a validation error by key and rule, without the offending value."""
    where = ".".join(str(p) for p in error.path) or "<top level>"
    rule, expected = error.validator, error.validator_value
    if rule == "required":
        missing = [name for name in expected if name not in (error.instance or {})]
        keys = ", ".join(".".join([str(p) for p in error.path] + [m]) for m in missing)
        return "missing required key{} {}".format("s" if len(missing) > 1 else "", keys)
    if rule == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        keys = ", ".join(".".join([str(p) for p in error.path] + [e]) for e in extra)
        return "unknown key {} (check the spelling against config.schema.yaml)".format(keys)
    if rule == "type":
        return "{}: expected {}, got {}".format(where, expected, _json_type(error.instance))
    if rule == "enum":
        return "{}: must be one of {}".format(where, ", ".join(map(str, expected)))
    if rule in ("minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength"):
        return "{}: {} is {}".format(where, rule, expected)
    if rule == "pattern":
        return "{}: must match {}".format(where, expected)
    return "{}: fails the {!r} rule".format(where, rule)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def semantic_problems(config: Mapping[str, Any]) -> List[str]:
    """Checks JSON Schema cannot express (st2 config schemas may not use ``format``).

    Runs alongside the schema check, so it skips values of the wrong type
    (the schema check reports those) instead of assuming them.
    """
    al, tc = _section(config, "assemblyline"), _section(config, "threatconnect")
    ingest = _section(config, "ingest")
    problems: List[str] = []
    for key, url in (("assemblyline.url", al.get("url")), ("assemblyline.ui_url", al.get("ui_url")),
                     ("threatconnect.api_url", tc.get("api_url"))):
        problems.extend(url_problems(key, url))
    api_url = tc.get("api_url")
    if _checkable(api_url) and not url_problems("", api_url) \
            and not urlsplit(api_url).path.rstrip("/").endswith("/api"):
        problems.append("threatconnect.api_url: must end with /api, e.g. https://app.threatconnect.com/api")
    api_key = al.get("api_key")
    if _checkable(api_key) and ":" not in api_key.strip(":"):
        problems.append("assemblyline.api_key: must have the form keyname:secret")
    if tc:
        problems.extend(tc_auth_problems(tc))
    for name, section in (("assemblyline", al), ("threatconnect", tc)):
        bundle = section.get("ca_bundle")
        if _checkable(bundle) and not os.path.isfile(bundle):
            problems.append("{}.ca_bundle: no such file".format(name))
    roots = ingest.get("allowed_roots")
    problems.extend(_allowed_root_problems(roots if isinstance(roots, list) else []))
    drop = ingest.get("drop_directory")
    if _checkable(drop) and not os.path.isabs(drop):
        problems.append("ingest.drop_directory: must be an absolute path")
    return problems


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name)
    return section if isinstance(section, Mapping) else {}


def _checkable(value: Any) -> bool:
    """A non-empty string that is not an unresolved template."""
    return isinstance(value, str) and bool(value) and not is_template(value)


def is_template(value: Any) -> bool:
    """True for an unresolved st2 dynamic value such as ``{{ st2kv.system.k }}``.

    st2 resolves these before an action or sensor sees the config; they only
    reach this module when a config file is checked on its own (as st2 does
    at registration, where dynamic values are not validated either).
    """
    return isinstance(value, str) and value.strip().startswith("{{") and value.strip().endswith("}}")


def url_problems(key: str, url: Any) -> List[str]:
    if not _checkable(url):
        return []
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        return ["{}: must start with https:// (or http://)".format(key)]
    if not parts.hostname:
        return ["{}: has no host name".format(key)]
    if parts.username or parts.password:
        return ["{}: must not carry credentials; use the secret keys".format(key)]
    if parts.query or parts.fragment:
        return ["{}: must not have a query or fragment".format(key)]
    return []


def tc_auth_problems(tc: Mapping[str, Any]) -> List[str]:
    hmac_keys = [k for k in ("access_id", "secret_key") if tc.get(k)]
    token = bool(tc.get("api_token"))
    if token and hmac_keys:
        return ["threatconnect: configure either api_token or access_id + secret_key, not both"]
    if not token and not hmac_keys:
        return ["threatconnect: no credentials; set api_token or access_id + secret_key"]
    if len(hmac_keys) == 1:
        missing = ({"access_id", "secret_key"} - set(hmac_keys)).pop()
        return ["threatconnect.{}: required with {}".format(missing, hmac_keys[0])]
    return []


def _allowed_root_problems(roots: Iterable[str]) -> List[str]:
    problems = []
    for index, root in enumerate(roots):
        if not _checkable(root):
            continue
        if not os.path.isabs(root):
            problems.append("ingest.allowed_roots.{}: must be an absolute path".format(index))
        elif os.path.realpath(root) == os.path.sep:
            problems.append("ingest.allowed_roots.{}: the file system root is not allowed".format(index))
    return problems


def secret_values(config: Mapping[str, Any], schema_path: str = SCHEMA_PATH) -> List[str]:
    """Every configured secret value (for scrubbing text before it is logged)."""
    schema = _raw_schema(schema_path)
    found: List[str] = []
    _collect_secrets(config, {"properties": schema}, found)
    return [value for value in found if value]


def _raw_schema(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _collect_secrets(value: Any, schema: Mapping[str, Any], found: List[str]) -> None:
    if not isinstance(value, Mapping):
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in value:
            continue
        if sub.get("secret") and isinstance(value[name], str):
            found.append(value[name])
            if name == "api_key" and ":" in value[name]:
                found.append(value[name].split(":", 1)[1])
        _collect_secrets(value[name], sub, found)


MASK = "********"


def masked_config(config: Mapping[str, Any], schema_path: str = SCHEMA_PATH) -> Dict[str, Any]:
    """A copy of ``config`` with every ``secret: true`` value replaced by a mask."""
    return _mask(config, {"properties": _raw_schema(schema_path)})


def _mask(value: Any, schema: Mapping[str, Any]) -> Any:
    if not isinstance(value, Mapping):
        return value
    properties = schema.get("properties", {})
    masked = {}
    for name, item in value.items():
        sub = properties.get(name, {})
        masked[name] = MASK if sub.get("secret") and item else _mask(item, sub)
    return masked
