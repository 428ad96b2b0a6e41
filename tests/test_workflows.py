"""Orquesta definitions under the real orquesta 1.2.0 conductor (Python 3.8 only)."""
import glob
import os

import pytest

orquesta = pytest.importorskip("orquesta", reason="orquesta 1.2.0 imports on Python 3.8 only")

from tests.workflow_harness import WorkflowHarness, inspect_workflow  # noqa: E402

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(PACK_DIR, "actions", "workflows", "*.yaml")))
FIXTURE = os.path.join(PACK_DIR, "tests", "fixtures", "workflows", "harness_demo.yaml")

VALID_CONFIG = {
    "assemblyline": {"url": "https://al.example.org", "user": "st2", "api_key": "k:s"},
    "threatconnect": {"api_url": "https://tc.example.org/api", "owner": "Org", "api_token": "t0k3n"},
}


@pytest.mark.parametrize("path", WORKFLOWS + [FIXTURE], ids=os.path.basename)
def test_definition_inspects_cleanly(path):
    assert inspect_workflow(path) == {}


def test_inspect_reports_an_undefined_variable(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1.0\ntasks:\n  a:\n    action: core.noop\noutput:\n  - x: <% ctx(nope) %>\n")
    problems = inspect_workflow(str(bad))
    assert any('"nope"' in p["message"] for p in problems.get("context", [])), problems


def test_harness_runs_real_actions_sequence_and_with_items():
    run = WorkflowHarness(VALID_CONFIG).run_file(FIXTURE, {"names": ["a", "b", "c"]})
    assert run.status == "succeeded", run.errors
    assert run.output == {"auth": "token", "echoed": ["a", "b", "c"], "failure": None}
    assert run.task("check").result["result"]["settings"]["threatconnect"]["api_token"] == "********"
    assert [t.task_id for t in run.tasks] == ["check", "each", "each", "each"]


def test_harness_routes_a_failed_action_to_its_remediation():
    config = dict(VALID_CONFIG, threatconnect={"api_url": "https://tc.example.org/api", "owner": "Org"})
    run = WorkflowHarness(config).run_file(FIXTURE, {"names": []})
    assert run.status == "succeeded"
    assert run.task("check").status == "failed"
    assert "no credentials" in run.output["failure"]
    assert "t0k3n" not in str(run.output)
    assert run.task("report_failure").status == "succeeded"


def test_harness_empty_with_items_succeeds():
    run = WorkflowHarness(VALID_CONFIG).run_file(FIXTURE, {"names": []})
    assert run.status == "succeeded"
    assert run.output["echoed"] == []


def test_harness_rejects_undeclared_parameters(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text("version: 1.0\ntasks:\n  a:\n    action: assemblyline_threatconnect.check_config verbose=true\n")
    run = WorkflowHarness(VALID_CONFIG).run_file(str(wf))
    assert run.status == "failed"
    assert run.task("a").result == {"error": "unexpected parameter 'verbose'"}


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_no_expression_spans_lines(path):
    """orquesta only sees ``<% %>`` on one line: a folded YAML scalar that keeps a newline
    turns a retry condition into a plain, always-true string (a retry loop that never ends)."""
    import yaml
    with open(path, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    assert [s for s in _strings(spec) if "<%" in s and "\n" in s] == []
