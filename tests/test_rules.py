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


# Actions of other packs the rules call: their parameters as those packs declare them
# (chatops pack v1.1.0 actions/post_message.yaml).
EXTERNAL_ACTIONS = {
    "chatops.post_message": {"name": "post_message", "parameters": {
        "channel": {"type": "string", "required": True}, "message": {"type": "string", "required": True},
        "user": {"type": "string"}, "whisper": {"type": "boolean"}, "route": {"type": "string"},
        "extra": {"type": "object"}}},
}


def action_meta(ref):
    if ref in EXTERNAL_ACTIONS:
        return EXTERNAL_ACTIONS[ref]
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
    assert [os.path.basename(p) for p in RULE_FILES] == [
        "ingest_drop_directory.yaml", "submission_completed_to_threatconnect.yaml",
        "submission_failed_report.yaml", "submission_overdue_report.yaml"]


@pytest.mark.parametrize("path", RULE_FILES, ids=os.path.basename)
def test_every_rule_ships_disabled(path):
    assert load("rules", os.path.basename(path))["enabled"] is False


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


def completed_payload(score, **metadata):
    return {"ingest_id": "5bJ1Fq8n3xWkYtR0aZc2Lm", "sid": "5bJ1Fq8n3xWkYtR0aZc2Lm", "score": score,
            "files": [{"name": "dropper.exe", "sha256": "a" * 64, "size": 10}], "cached": False,
            "metadata": dict({"file_path": "/var/quarantine/dropper.exe", "ingest_id": "5bJ1Fq8n3xWkYtR0aZc2Lm"},
                             **metadata)}


@pytest.mark.parametrize("payload, expected", [
    (completed_payload(300), True),          # at the threshold
    (completed_payload(2000), True),
    (completed_payload(299), False),         # below it
    (completed_payload(0), False),
    (completed_payload(700, origin="ingest_to_threatconnect"), False),  # the bulk workflow sends those
    (completed_payload(700, origin="edr"), True),
])
def test_submission_completed_rule_criteria(payload, expected):
    from tests.rule_criteria import criteria_match
    rule = load("rules", "submission_completed_to_threatconnect.yaml")
    assert rule["trigger"]["type"] == pack_ref() + ".submission_completed"
    assert criteria_match(rule, payload) is expected


def test_submission_completed_rule_passes_the_trigger_to_the_workflow():
    import jinja2
    rule = load("rules", "submission_completed_to_threatconnect.yaml")
    payload = completed_payload(700)
    rendered = {name: jinja2.Template(value).render(trigger=payload)
                for name, value in rule["action"]["parameters"].items()}
    assert rule["action"]["ref"] == pack_ref() + ".submission_to_threatconnect"
    assert rendered["sid"] == payload["sid"] and rendered["ingest_id"] == payload["ingest_id"]
    assert int(rendered["score"]) == 700  # st2 casts the rendered string to the parameter's type
    assert action_meta(rule["action"]["ref"])["runner_type"] == "orquesta"


@pytest.mark.parametrize("name, trigger, payload, expected", [
    ("submission_failed_report.yaml", "submission_failed",
     {"ingest_id": "i1", "sid": "i1", "failure": "File too large (1 > 0)", "files": [], "metadata": {},
      "file_path": "/q/big.bin"},
     "Assemblyline did not analyse /q/big.bin: File too large (1 > 0) (ingest i1, submission i1)"),
    ("submission_overdue_report.yaml", "submission_overdue",
     {"ingest_id": "i2", "sha256": None, "file_path": None, "queue": "q", "ingested_at": 1.0,
      "deadline": 2.0, "checked_at": 3.0, "sid": None, "state": None},
     "No Assemblyline result for i2 (ingest i2, state not found): check the submission in Assemblyline, "
     "then re-ingest if it was dropped."),
])
def test_report_rules_post_a_readable_message(name, trigger, payload, expected):
    import jinja2
    rule = load("rules", name)
    assert rule["trigger"]["type"] == "{}.{}".format(pack_ref(), trigger)
    assert rule["action"]["ref"] == "chatops.post_message" and "criteria" not in rule
    assert jinja2.Template(rule["action"]["parameters"]["message"]).render(trigger=payload) == expected
