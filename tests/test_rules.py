"""The shipped rules: disabled where they act on their own, and wired to real actions and parameters."""
import glob
import os

import jsonschema
import pytest
import yaml

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# core.st2.IntervalTimer's parameters_schema (st2: st2common/constants/triggers.py)
INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
RULE_FILES = sorted(glob.glob(os.path.join(PACK_DIR, "rules", "*.yaml")))


def load(*parts):
    with open(os.path.join(PACK_DIR, *parts), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def pack_ref():
    meta = load("pack.yaml")
    return meta.get("ref") or meta["name"]


def action_meta(ref):
    pack, _, name = ref.partition(".")
    assert pack == pack_ref(), "{} is not an action of this pack".format(ref)
    for path in glob.glob(os.path.join(PACK_DIR, "actions", "*.yaml")):
        meta = load("actions", os.path.basename(path))
        if meta.get("name") == name:
            return meta
    raise AssertionError("no action named {} in actions/".format(name))


def is_template(value):
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def test_there_are_rules():
    assert [os.path.basename(p) for p in RULE_FILES] == ["ingest_drop_directory.yaml"]


def test_ingest_drop_directory_ships_disabled_on_an_interval_timer():
    rule = load("rules", "ingest_drop_directory.yaml")
    assert rule["name"] == "ingest_drop_directory" and rule["pack"] == pack_ref()
    assert rule["enabled"] is False  # it submits files on its own: the operator enables it
    assert rule["trigger"]["type"] == "core.st2.IntervalTimer"
    timer = rule["trigger"]["parameters"]
    assert set(timer) == {"unit", "delta"} and timer["unit"] in INTERVAL_UNITS
    assert isinstance(timer["delta"], int) and not isinstance(timer["delta"], bool) and timer["delta"] > 0
    assert rule["action"]["ref"] == pack_ref() + ".ingest_directory"
    assert "criteria" not in rule  # every tick runs it


def action_problems(rule):
    """What is wrong with a rule's action part: unknown action, undeclared, missing or ill-typed parameters."""
    try:
        meta = action_meta(rule["action"]["ref"])
    except AssertionError as exc:
        return [str(exc)]
    declared = meta.get("parameters") or {}
    given = rule["action"].get("parameters") or {}
    problems = ["parameter {!r} is not declared by {}".format(name, meta["name"])
                for name in sorted(set(given) - set(declared))]
    problems += ["required parameter {!r} of {} is not passed".format(name, meta["name"])
                 for name, spec in sorted(declared.items())
                 if spec.get("required") and "default" not in spec and name not in given]
    for name, value in sorted(given.items()):
        if name in declared and not is_template(value):  # st2 renders templates at run time
            schema = {k: v for k, v in declared[name].items() if k not in ("position", "secret", "required")}
            try:
                jsonschema.validate(value, schema)
            except jsonschema.ValidationError as exc:
                problems.append("parameter {!r}: {}".format(name, exc.message))
    return problems


@pytest.mark.parametrize("path", RULE_FILES, ids=os.path.basename)
def test_rule_action_and_parameters_exist(path):
    assert action_problems(load("rules", os.path.basename(path))) == []


def test_the_check_names_what_a_stale_rule_gets_wrong():
    rule = load("rules", "ingest_drop_directory.yaml")
    rule["action"]["parameters"] = {"recursive": True, "concurrency": "4", "max_file_size": 1000,
                                    "directory": "{{ st2kv.system.drop }}"}
    assert action_problems(rule) == [
        "parameter 'recursive' is not declared by ingest_directory",
        "parameter 'concurrency': '4' is not of type 'integer'",
    ]
    rule["action"]["ref"] = pack_ref() + ".ingest_everything"
    assert action_problems(rule) == ["no action named ingest_everything in actions/"]
    rule["action"] = {"ref": pack_ref() + ".ingest_file", "parameters": {}}
    assert action_problems(rule) == ["required parameter 'path' of ingest_file is not passed"]
