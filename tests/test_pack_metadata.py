"""st2's metadata rules on every pack file, and on broken copies of them."""
import os
import shutil
import struct

import pytest
import yaml

from st2common.exceptions.content import ParseException
from st2common.models.utils.action_alias_utils import ActionAliasFormatParser

from tests.pack_checks import (PackLayout, check_actions, check_aliases, check_config_schema,
                               check_pack_file, check_rules, check_sensors, check_workflow_refs)

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = PackLayout(PACK_DIR)


def all_problems(pack):
    return (check_pack_file(pack) + check_config_schema(pack) + check_actions(pack)
            + check_sensors(pack) + check_rules(pack) + check_aliases(pack, ActionAliasFormatParser, ParseException)
            + check_workflow_refs(pack))


def test_pack_metadata_follows_st2_rules():
    assert all_problems(PACK) == []


def test_pack_ref_and_layout():
    meta = yaml.safe_load(open(os.path.join(PACK_DIR, "pack.yaml")))
    assert meta["ref"] == "assemblyline_threatconnect"
    for name in ("config.schema.yaml", "assemblyline_threatconnect.yaml.example", "requirements.txt",
                 "requirements-tests.txt", "README.md", "CHANGES.md", "LICENSE", "icon.png",
                 "actions/lib/__init__.py"):
        assert os.path.isfile(os.path.join(PACK_DIR, name)), name
    # never commit a live config next to the example
    assert not os.path.exists(os.path.join(PACK_DIR, "assemblyline_threatconnect.yaml"))


def test_license_is_apache_2():
    text = open(os.path.join(PACK_DIR, "LICENSE"), encoding="utf-8").read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_icon_is_a_64x64_png():
    with open(os.path.join(PACK_DIR, "icon.png"), "rb") as handle:
        head = handle.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert head[12:16] == b"IHDR"
    assert struct.unpack(">II", head[16:24]) == (64, 64)


def test_changes_names_the_pack_version():
    version = yaml.safe_load(open(os.path.join(PACK_DIR, "pack.yaml")))["version"]
    assert "## {}".format(version) in open(os.path.join(PACK_DIR, "CHANGES.md"), encoding="utf-8").read()


def test_runtime_requirements_are_declared():
    names = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower()
             for line in open(os.path.join(PACK_DIR, "requirements.txt"))
             if line.strip() and not line.startswith("#")}
    assert {"assemblyline-client", "requests", "pyyaml", "jsonschema"} <= names


# -- broken copies: each problem names the file and the key -------------------

@pytest.fixture
def broken_pack(tmp_path):
    target = tmp_path / "pack"
    shutil.copytree(PACK_DIR, str(target), ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__"))
    return target


def edit_yaml(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_malformed_yaml_names_file_and_line(broken_pack):
    (broken_pack / "actions" / "check_config.yaml").write_text("name: check_config\nparameters: [\n")
    problems = check_actions(PackLayout(str(broken_pack)))
    assert any(p.startswith("actions/check_config.yaml: line") and "invalid YAML" in p for p in problems)


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["parameters"].update(x={"type": "string", "format": "uri"}),
     "actions/check_config.yaml: parameters.x: 'format' is not allowed"),
    (lambda d: d["parameters"].update(x={"type": ["string", "null"]}),
     "actions/check_config.yaml: parameters.x: type must be one of"),
    (lambda d: d.update(output_schema={"result": {"type": "string"}}),
     "actions/check_config.yaml: output_schema: must be a full JSON schema"),
    (lambda d: d.update(entry_point="missing.py"),
     "actions/check_config.yaml: entry_point: actions/missing.py does not exist"),
    (lambda d: d.update(colour="blue"),
     "actions/check_config.yaml: colour: unknown key"),
    (lambda d: d["parameters"].update(verbose={"type": "boolean"}),
     "actions/check_config.yaml: parameters not accepted by run_action(): verbose"),
    (lambda d: d["parameters"].update(x={"type": "string", "immutable": True}),
     "actions/check_config.yaml: parameters.x: an immutable parameter needs a default"),
])
def test_action_rule_violations_are_named(broken_pack, change, expected):
    edit_yaml(broken_pack / "actions" / "check_config.yaml", change)
    problems = check_actions(PackLayout(str(broken_pack)))
    assert any(p.startswith(expected) for p in problems), problems


def test_config_schema_violations_are_named(broken_pack):
    def change(d):
        d["assemblyline"]["properties"]["url"]["format"] = "uri"
        d["threatconnect"]["properties"]["api_token"].pop("secret")
    edit_yaml(broken_pack / "config.schema.yaml", change)
    problems = check_config_schema(PackLayout(str(broken_pack)))
    assert "config.schema.yaml: assemblyline.url: 'format' is not allowed in st2 parameters" in problems
    assert "config.schema.yaml: threatconnect.api_token: looks like a credential but is not " \
           "secret: true" in problems


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(ref="assemblyline-threatconnect"), "pack.yaml: ref:"),
    (lambda d: d.update(version="1.0"), "pack.yaml: version: '1.0' is not semver"),
    (lambda d: d.update(python_versions=["3", "3"]), "pack.yaml: python_versions:"),
    (lambda d: d.update(stackstorm_version="3.8"), "pack.yaml: stackstorm_version:"),
    (lambda d: d.pop("author"), "pack.yaml: author: required key missing"),
])
def test_pack_file_violations_are_named(broken_pack, change, expected):
    edit_yaml(broken_pack / "pack.yaml", change)
    problems = check_pack_file(PackLayout(str(broken_pack)))
    assert any(p.startswith(expected) for p in problems), problems


def test_sensor_rule_and_alias_violations_are_named(broken_pack):
    (broken_pack / "sensors" / "bad.yaml").write_text(yaml.safe_dump({
        "name": "bad", "class_name": "Nope", "entry_point": "pack_lib_path.py", "poll_interval": 2}))
    problems = check_sensors(PackLayout(str(broken_pack)))
    assert "sensors/bad.yaml: name: unknown key" in problems[0]

    (broken_pack / "sensors" / "bad.yaml").write_text(yaml.safe_dump({
        "class_name": "Nope", "entry_point": "pack_lib_path.py", "poll_interval": 2,
        "trigger_types": [{"name": "t", "payload_schema": {"type": "array"}}]}))
    problems = check_sensors(PackLayout(str(broken_pack)))
    assert "sensors/bad.yaml: class_name: Nope is not defined in sensors/pack_lib_path.py" in problems
    assert "sensors/bad.yaml: poll_interval: must be a number >= 4" in problems
    assert "sensors/bad.yaml: trigger_types[0].payload_schema: must be a JSON schema of type object" \
        in problems

    (broken_pack / "rules" / "bad.yaml").write_text(yaml.safe_dump({
        "name": "bad", "trigger": {"type": "assemblyline_threatconnect.nothing"},
        "action": {"ref": "assemblyline_threatconnect.check_config"},
        "criteria": {"trigger.x": {"type": "like", "pattern": "y"}}}))
    problems = check_rules(PackLayout(str(broken_pack)))
    assert "rules/bad.yaml: trigger.type: 'assemblyline_threatconnect.nothing' is not declared by " \
           "the pack's sensors" in problems
    assert "rules/bad.yaml: criteria.trigger.x: type must be an st2 operator" in problems

    (broken_pack / "aliases" / "bad.yaml").write_text(yaml.safe_dump({
        "name": "bad", "action_ref": "assemblyline_threatconnect.nope", "formats": ["check (config"]}))
    problems = check_aliases(PackLayout(str(broken_pack)), ActionAliasFormatParser, ParseException)
    assert "aliases/bad.yaml: action_ref: 'assemblyline_threatconnect.nope' is not an action of the " \
           "pack" in problems
    assert any(p.startswith("aliases/bad.yaml: formats[0]: 'check (config' does not compile") for p in problems)


def test_workflow_task_calling_a_missing_action_is_named(broken_pack):
    (broken_pack / "actions" / "workflows" / "bad.yaml").write_text(yaml.safe_dump({
        "version": 1.0, "tasks": {"first": {"action": "assemblyline_threatconnect.nope x=1"}}}))
    problems = check_workflow_refs(PackLayout(str(broken_pack)))
    assert problems == ["actions/workflows/bad.yaml: tasks.first.action: "
                        "'assemblyline_threatconnect.nope' does not exist"]
