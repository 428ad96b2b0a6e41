"""st2's metadata rules, checked without StackStorm (test helper).

Each ``check_*`` function returns a list of problems, each naming the file and
the key (``actions/x.yaml: parameters.foo: 'format' is not allowed``), so a
broken file fails a test with a message that says where to look. The rules
come from ``shared/reference/stackstorm.md`` (st2's API models).
"""
import ast
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import jsonschema
import yaml

PACK_REF_RE = re.compile(r"^[a-z0-9_]+$")
SEMVER_RE = re.compile(r"^(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)(?:-[\da-z\-]+(?:\.[\da-z\-]+)*)?"
                       r"(?:\+[\da-z\-]+(?:\.[\da-z\-]+)*)?$")
ST2_VERSION_RE = re.compile(r"^((>?>|>=|=|<=|<?<)\s*[0-9]+\.[0-9]+\.[0-9]+?(\s*,)?\s*)+$")
RESERVED_PACKS = {"_global", "core", "packs"}

DRAFT4_KEYWORDS = {
    "$schema", "id", "title", "description", "default", "multipleOf", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "additionalItems", "items",
    "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties", "required",
    "additionalProperties", "definitions", "properties", "patternProperties", "dependencies", "enum",
    "type", "allOf", "anyOf", "oneOf", "not", "$ref",
}
PARAMETER_KEYS = (DRAFT4_KEYWORDS - {"format"}) | {"position", "secret", "immutable"}
JSON_TYPES = {"array", "boolean", "integer", "null", "number", "object", "string"}
ACTION_KEYS = {"name", "runner_type", "description", "enabled", "entry_point", "pack", "parameters",
               "output_schema", "tags", "notify"}
RUNNER_PARAMETERS = {
    "python-script": {"timeout", "log_level", "env", "debug"},
    "orquesta": set(),
}
RUNNER_OVERRIDE_KEYS = {"default", "description", "enum", "immutable", "required"}
SENSOR_KEYS = {"class_name", "entry_point", "description", "enabled", "poll_interval", "trigger_types"}
TRIGGER_KEYS = {"name", "description", "payload_schema", "parameters_schema", "tags"}
RULE_KEYS = {"name", "pack", "description", "enabled", "trigger", "criteria", "action", "context", "tags"}
ALIAS_KEYS = {"name", "action_ref", "pack", "description", "enabled", "formats", "ack", "result", "extra",
              "immutable_parameters"}
CRITERIA_OPERATORS = {
    "matchwildcard", "matchregex", "regex", "iregex", "eq", "equals", "neq", "nequals", "ieq", "iequals",
    "contains", "icontains", "ncontains", "incontains", "startswith", "istartswith", "endswith",
    "iendswith", "lt", "lessthan", "gt", "greaterthan", "td_lt", "timediff_lt", "td_gt", "timediff_gt",
    "exists", "nexists", "in", "inside", "nin", "ninside", "search",
}
# Actions and triggers of st2's own packs that the pack may reference.
EXTERNAL_ACTIONS = {"core.echo", "core.noop", "core.error", "core.local", "core.http", "core.sendmail",
                    "core.inject_trigger", "core.pause", "core.uuid", "st2.kv.get", "st2.kv.set",
                    "chatops.post_message", "chatops.post_result"}
EXTERNAL_TRIGGERS = {"core.st2.IntervalTimer", "core.st2.DateTimer", "core.st2.CronTimer",
                     "core.st2.webhook", "core.st2.generic.actiontrigger",
                     "core.st2.generic.notifytrigger", "core.st2.action.file_written"}


class PackLayout:
    """Paths and parsed metadata of one pack directory."""

    def __init__(self, pack_dir: str):
        self.dir = pack_dir

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.dir)

    def yaml_files(self, sub: str) -> List[str]:
        directory = self.path(sub)
        if not os.path.isdir(directory):
            return []
        return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                      if n.endswith((".yaml", ".yml")))

    def load(self, path: str) -> Tuple[Any, List[str]]:
        """Parse a YAML file; a syntax error becomes a problem naming the file and line."""
        try:
            with open(path, encoding="utf-8") as handle:
                return yaml.safe_load(handle), []
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = " line {}".format(mark.line + 1) if mark else ""
            return None, ["{}:{} invalid YAML: {}".format(self.rel(path), where,
                                                          getattr(exc, "problem", exc))]
        except OSError as exc:
            return None, ["{}: cannot read: {}".format(self.rel(path), exc.strerror)]

    def pack_ref(self) -> str:
        meta, _ = self.load(self.path("pack.yaml"))
        return (meta or {}).get("ref") or (meta or {}).get("name") or ""

    def action_refs(self) -> Set[str]:
        ref = self.pack_ref()
        names = set()
        for path in self.yaml_files("actions"):
            meta, _ = self.load(path)
            if isinstance(meta, dict) and meta.get("name"):
                names.add("{}.{}".format(ref, meta["name"]))
        return names

    def trigger_refs(self) -> Set[str]:
        ref = self.pack_ref()
        refs = set()
        for path in self.yaml_files("sensors"):
            meta, _ = self.load(path)
            for trigger in (meta or {}).get("trigger_types") or []:
                if isinstance(trigger, dict) and trigger.get("name"):
                    refs.add("{}.{}".format(ref, trigger["name"]))
        return refs


def _mapping_problems(where: str, meta: Any, allowed: Set[str], required: Iterable[str]) -> List[str]:
    if not isinstance(meta, dict):
        return ["{}: must be a mapping".format(where)]
    problems = ["{}: {}: unknown key (allowed: {})".format(where, k, ", ".join(sorted(allowed)))
                for k in meta if k not in allowed]
    problems += ["{}: {}: required key missing".format(where, k) for k in required if k not in meta]
    return problems


# -- pack.yaml and config ---------------------------------------------------

def check_pack_file(pack: PackLayout) -> List[str]:
    meta, problems = pack.load(pack.path("pack.yaml"))
    if problems:
        return problems
    where = "pack.yaml"
    problems = _mapping_problems(where, meta, set(meta) if isinstance(meta, dict) else set(),
                                 ("name", "description", "version", "author"))
    if problems:
        return problems
    ref = meta.get("ref") or meta["name"]
    if not PACK_REF_RE.match(str(ref)):
        problems.append("{}: ref: {!r} must match {}".format(where, ref, PACK_REF_RE.pattern))
    if ref in RESERVED_PACKS:
        problems.append("{}: ref: {!r} is reserved".format(where, ref))
    if not SEMVER_RE.match(str(meta["version"])):
        problems.append("{}: version: {!r} is not semver (e.g. 0.1.0)".format(where, meta["version"]))
    versions = meta.get("python_versions")
    if versions is not None and (not isinstance(versions, list) or not 1 <= len(versions) <= 2
                                 or len(set(versions)) != len(versions)
                                 or not set(versions) <= {"2", "3"}):
        problems.append("{}: python_versions: 1-2 unique values of \"2\", \"3\"".format(where))
    st2_version = meta.get("stackstorm_version")
    if st2_version is not None and not ST2_VERSION_RE.match(str(st2_version)):
        problems.append("{}: stackstorm_version: {!r} is not a version range".format(where, st2_version))
    return problems


def check_config_schema(pack: PackLayout, path: Optional[str] = None) -> List[str]:
    path = path or pack.path("config.schema.yaml")
    schema, problems = pack.load(path)
    if problems:
        return problems
    where = pack.rel(path)
    if not isinstance(schema, dict):
        return ["{}: must map config keys to schemas".format(where)]
    for key, item in schema.items():
        if not re.match(r"^\w+$", str(key)):
            problems.append("{}: {}: config keys must match ^\\w+$".format(where, key))
        problems += check_parameter("{}: {}".format(where, key), item)
        problems += _secret_naming_problems("{}: {}".format(where, key), key, item)
    return problems


SECRET_NAME_RE = re.compile(r"(api_?key|secret|token|password|passwd)", re.IGNORECASE)


def _secret_naming_problems(where: str, name: str, schema: Any) -> List[str]:
    """Every credential-looking key must be ``secret: true``."""
    if not isinstance(schema, dict):
        return []
    problems = []
    if SECRET_NAME_RE.search(str(name)) and schema.get("type") == "string" and not schema.get("secret"):
        problems.append("{}: looks like a credential but is not secret: true".format(where))
    for sub_name, sub in (schema.get("properties") or {}).items():
        problems += _secret_naming_problems("{}.{}".format(where, sub_name), sub_name, sub)
    return problems


def check_parameter(where: str, schema: Any) -> List[str]:
    """st2's action-parameter rules, applied to nested schemas too."""
    if not isinstance(schema, dict):
        return ["{}: must be a mapping".format(where)]
    problems = ["{}: {!r} is not allowed in st2 parameters".format(where, k)
                for k in schema if k not in PARAMETER_KEYS]
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind not in JSON_TYPES):
        problems.append("{}: type must be one of {} (a list is rejected)".format(
            where, ", ".join(sorted(JSON_TYPES))))
    for flag in ("required", "secret", "immutable"):
        if flag in schema and not isinstance(schema[flag], bool):
            problems.append("{}: {} must be true or false".format(where, flag))
    if schema.get("immutable") and "default" not in schema:
        problems.append("{}: an immutable parameter needs a default".format(where))
    for name, sub in (schema.get("properties") or {}).items():
        problems += check_parameter("{}.{}".format(where, name), sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            problems += check_parameter("{}.{}".format(where, key), schema[key])
    return problems


# -- actions ------------------------------------------------------------------

def check_actions(pack: PackLayout) -> List[str]:
    problems: List[str] = []
    names: Dict[str, str] = {}
    for path in pack.yaml_files("actions"):
        meta, load_problems = pack.load(path)
        if load_problems:
            problems += load_problems
            continue
        where = pack.rel(path)
        problems += check_action(pack, where, meta)
        if isinstance(meta, dict) and meta.get("name") in names:
            problems.append("{}: name: {!r} also used by {}".format(where, meta["name"], names[meta["name"]]))
        elif isinstance(meta, dict):
            names[meta.get("name")] = where
    return problems


def check_action(pack: PackLayout, where: str, meta: Any) -> List[str]:
    problems = _mapping_problems(where, meta, ACTION_KEYS, ("name", "runner_type", "entry_point"))
    if problems:
        return problems
    runner = meta["runner_type"]
    if runner not in RUNNER_PARAMETERS:
        return ["{}: runner_type: {!r} is not one this pack uses ({})".format(
            where, runner, ", ".join(sorted(RUNNER_PARAMETERS)))]
    entry = pack.path("actions", meta["entry_point"])
    if not os.path.isfile(entry):
        problems.append("{}: entry_point: {} does not exist".format(where, pack.rel(entry)))
    params = meta.get("parameters") or {}
    if not isinstance(params, dict):
        return problems + ["{}: parameters: must be a mapping".format(where)]
    problems += _parameter_problems(where, params, RUNNER_PARAMETERS[runner])
    problems += check_output_schema(where, meta.get("output_schema"), required=runner == "python-script")
    if runner == "python-script" and os.path.isfile(entry):
        declared = set(params) - RUNNER_PARAMETERS[runner]
        problems += check_run_signature(where, entry, declared)
    return problems


def _parameter_problems(where: str, params: Mapping[str, Any], runner_params: Set[str]) -> List[str]:
    problems = []
    positions = []
    for name, schema in params.items():
        p_where = "{}: parameters.{}".format(where, name)
        if name in runner_params:
            extra = set(schema or {}) - RUNNER_OVERRIDE_KEYS
            if extra:
                problems.append("{}: a runner parameter may only override {}".format(
                    p_where, ", ".join(sorted(RUNNER_OVERRIDE_KEYS))))
            continue
        problems += check_parameter(p_where, schema)
        if isinstance(schema, dict) and "type" not in schema:
            problems.append("{}: type is missing".format(p_where))
        if isinstance(schema, dict) and "position" in schema:
            positions.append(schema["position"])
    if positions and sorted(positions) != list(range(len(positions))):
        problems.append("{}: parameters: positions must be unique and contiguous from 0".format(where))
    return problems


def check_output_schema(where: str, schema: Any, required: bool) -> List[str]:
    if schema is None:
        return ["{}: output_schema: missing".format(where)] if required else []
    if not isinstance(schema, dict) or schema.get("type") != "object" or \
            not isinstance(schema.get("properties"), dict):
        return ["{}: output_schema: must be a full JSON schema (type: object with properties)".format(where)]
    try:
        jsonschema.Draft4Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return ["{}: output_schema: invalid JSON schema: {}".format(where, exc.message)]
    return []


def check_run_signature(where: str, entry: str, declared: Set[str]) -> List[str]:
    """The action class's ``run`` (or ``run_action`` under PackAction) takes exactly the parameters."""
    with open(entry, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=entry)
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    if len(classes) != 1:
        return ["{}: entry_point must define exactly one class (st2 loads the first), found {}".format(
            where, len(classes))]
    methods = {n.name: n for n in classes[0].body if isinstance(n, ast.FunctionDef)}
    method = methods.get("run_action") or methods.get("run")
    if method is None:
        return ["{}: class {} defines neither run nor run_action".format(where, classes[0].name)]
    args = method.args
    if args.vararg or args.kwarg:
        return ["{}: {}.{} must name its parameters instead of *args/**kwargs".format(
            where, classes[0].name, method.name)]
    accepted = {a.arg for a in args.args[1:] + args.kwonlyargs}
    problems = []
    if accepted - declared:
        problems.append("{}: {}() accepts undeclared parameters: {}".format(
            where, method.name, ", ".join(sorted(accepted - declared))))
    if declared - accepted:
        problems.append("{}: parameters not accepted by {}(): {}".format(
            where, method.name, ", ".join(sorted(declared - accepted))))
    return problems


# -- sensors, rules, aliases -------------------------------------------------

def check_sensors(pack: PackLayout) -> List[str]:
    problems: List[str] = []
    for path in pack.yaml_files("sensors"):
        meta, load_problems = pack.load(path)
        if load_problems:
            problems += load_problems
            continue
        where = pack.rel(path)
        found = _mapping_problems(where, meta, SENSOR_KEYS, ("class_name", "entry_point"))
        if found:
            problems += found
            continue
        entry = pack.path("sensors", meta["entry_point"])
        if not os.path.isfile(entry):
            problems.append("{}: entry_point: {} does not exist".format(where, pack.rel(entry)))
        elif not _defines_class(entry, meta["class_name"]):
            problems.append("{}: class_name: {} is not defined in {}".format(
                where, meta["class_name"], pack.rel(entry)))
        interval = meta.get("poll_interval")
        if interval is not None and (not isinstance(interval, (int, float)) or interval < 4):
            problems.append("{}: poll_interval: must be a number >= 4".format(where))
        for index, trigger in enumerate(meta.get("trigger_types") or []):
            t_where = "{}: trigger_types[{}]".format(where, index)
            found = _mapping_problems(t_where, trigger, TRIGGER_KEYS, ("name",))
            problems += found
            if not found and trigger.get("payload_schema") is not None:
                problems += check_payload_schema(t_where, trigger["payload_schema"])
    return problems


def check_payload_schema(where: str, schema: Any) -> List[str]:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return ["{}.payload_schema: must be a JSON schema of type object".format(where)]
    try:
        jsonschema.Draft4Validator.check_schema(_without_bool_required(schema))
    except jsonschema.SchemaError as exc:
        return ["{}.payload_schema: invalid JSON schema: {}".format(where, exc.message)]
    return []


def _without_bool_required(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_bool_required(v) for k, v in schema.items()
                if not (k == "required" and isinstance(v, bool))}
    if isinstance(schema, list):
        return [_without_bool_required(v) for v in schema]
    return schema


def _defines_class(path: str, class_name: str) -> bool:
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    return any(isinstance(n, ast.ClassDef) and n.name == class_name for n in tree.body)


def check_rules(pack: PackLayout) -> List[str]:
    problems: List[str] = []
    triggers = pack.trigger_refs() | EXTERNAL_TRIGGERS
    actions = pack.action_refs() | EXTERNAL_ACTIONS
    for path in pack.yaml_files("rules"):
        meta, load_problems = pack.load(path)
        if load_problems:
            problems += load_problems
            continue
        where = pack.rel(path)
        found = _mapping_problems(where, meta, RULE_KEYS, ("name", "trigger", "action"))
        if found:
            problems += found
            continue
        trigger_type = (meta["trigger"] or {}).get("type")
        if trigger_type not in triggers:
            problems.append("{}: trigger.type: {!r} is not declared by the pack's sensors".format(
                where, trigger_type))
        action_ref = (meta["action"] or {}).get("ref")
        if action_ref not in actions:
            problems.append("{}: action.ref: {!r} is not an action of the pack".format(where, action_ref))
        for key, criterion in (meta.get("criteria") or {}).items():
            if not isinstance(criterion, dict) or criterion.get("type") not in CRITERIA_OPERATORS:
                problems.append("{}: criteria.{}: type must be an st2 operator".format(where, key))
            if not str(key).startswith("trigger."):
                problems.append("{}: criteria.{}: keys start with trigger.".format(where, key))
    return problems


def check_aliases(pack: PackLayout, parser_cls: Any, parse_error: Any = ValueError) -> List[str]:
    problems: List[str] = []
    actions = pack.action_refs() | EXTERNAL_ACTIONS
    for path in pack.yaml_files("aliases"):
        meta, load_problems = pack.load(path)
        if load_problems:
            problems += load_problems
            continue
        where = pack.rel(path)
        found = _mapping_problems(where, meta, ALIAS_KEYS, ("name", "action_ref", "formats"))
        if found:
            problems += found
            continue
        if meta["action_ref"] not in actions:
            problems.append("{}: action_ref: {!r} is not an action of the pack".format(
                where, meta["action_ref"]))
        for index, item in enumerate(meta["formats"] or []):
            strings = [item] if isinstance(item, str) else (item or {}).get("representation") or []
            for fmt in strings:
                try:  # public API only, so this runs against real st2 too
                    parser_cls(fmt, "").get_extracted_param_value()
                except parse_error:
                    pass  # the format compiled; "" just does not match it
                except re.error as exc:
                    problems.append("{}: formats[{}]: {!r} does not compile: {}".format(where, index, fmt, exc))
    return problems


def check_workflow_refs(pack: PackLayout) -> List[str]:
    """Every task of every Orquesta definition calls an action that exists."""
    problems: List[str] = []
    actions = pack.action_refs() | EXTERNAL_ACTIONS
    for path in pack.yaml_files(os.path.join("actions", "workflows")):
        meta, load_problems = pack.load(path)
        if load_problems:
            problems += load_problems
            continue
        where = pack.rel(path)
        for name, task in ((meta or {}).get("tasks") or {}).items():
            action = (task or {}).get("action")
            if action is None:
                continue
            ref = str(action).split()[0]
            if ref not in actions:
                problems.append("{}: tasks.{}.action: {!r} does not exist".format(where, name, ref))
    return problems
