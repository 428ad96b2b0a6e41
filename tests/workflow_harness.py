"""Conduct Orquesta workflows with the real orquesta 1.2.0 conductor (test helper).

Each task's action is executed for real: pack python actions are loaded from
their metadata and entry point, given the pack config and a stand-in action
service, validated against their declared parameters, and their return value
is wrapped the way st2's python runner does. Nested orquesta actions are
conducted recursively. A handful of ``core.*`` actions are emulated.

orquesta 1.2.0 imports on Python 3.8 only: import this module through
``pytest.importorskip("orquesta")`` first.
"""
import functools
import importlib
import inspect
import os
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import jsonschema
import yaml

from orquesta.expressions.functions import base as expression_functions

# st2-only expression functions must be registered before orquesta.conducting
# is imported (see shared/reference/stackstorm.md §8.1).
DATASTORE: Dict[str, Any] = {}
expression_functions.load()["st2kv"] = lambda context, key, decrypt=False: DATASTORE[key]

from orquesta import conducting, events, statuses  # noqa: E402
from orquesta.specs import native  # noqa: E402

from st2common.runners.base_action import Action  # noqa: E402
from st2common.runners.utils import PackConfigDict  # noqa: E402
from st2tests.mocks.action import MockActionService, MockActionWrapper  # noqa: E402

from lib.config import to_json_schema  # noqa: E402

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_RUNNER_PARAMETERS = {"timeout", "log_level", "env", "debug"}


class TaskRun:
    """What one action execution of a workflow task did."""

    def __init__(self, task_id: str, action: str, params: Dict[str, Any], status: str, result: Any):
        self.task_id = task_id
        self.action = action
        self.params = params
        self.status = status
        self.result = result

    def __repr__(self):
        return "TaskRun({} -> {} {})".format(self.task_id, self.action, self.status)


class WorkflowRun:
    def __init__(self, status: str, output: Any, errors: List[Any], tasks: List[TaskRun]):
        self.status = status
        self.output = output
        self.errors = errors
        self.tasks = tasks

    def task(self, task_id: str) -> TaskRun:
        runs = [t for t in self.tasks if t.task_id == task_id]
        if not runs:
            raise AssertionError("task {} never ran; ran: {}".format(task_id, [t.task_id for t in self.tasks]))
        return runs[-1]


def inspect_workflow(path: str) -> Dict[str, Any]:
    """``WorkflowSpec.inspect()`` of a definition file ({} when it is valid)."""
    with open(path, encoding="utf-8") as handle:
        spec = native.WorkflowSpec(handle.read())
    return spec.inspect(app_ctx={"st2": {}})


class WorkflowHarness:
    def __init__(self, config: Mapping[str, Any], pack_dir: str = PACK_DIR,
                 action_service: Optional[MockActionService] = None,
                 overrides: Optional[Mapping[str, Callable[..., Any]]] = None,
                 sleep: Optional[Callable[[int], None]] = None):
        self.config = config
        self.sleep = sleep or (lambda seconds: None)
        self.delays: List[Tuple[str, int]] = []  # (task id, seconds) of every delay asked for
        self.pack_dir = pack_dir
        self.pack_ref = _pack_ref(pack_dir)
        self.action_service = action_service
        self.overrides = dict(overrides or {})
        self.max_steps = 10000

    # -- conducting --------------------------------------------------------
    def run_file(self, path: str, inputs: Optional[Mapping[str, Any]] = None) -> WorkflowRun:
        with open(path, encoding="utf-8") as handle:
            spec = native.WorkflowSpec(handle.read())
        problems = spec.inspect(app_ctx={"st2": {}})
        if problems:
            raise AssertionError("workflow {} does not inspect cleanly: {}".format(path, problems))
        conductor = conducting.WorkflowConductor(
            spec, context={"st2": {"action_execution_id": "harness", "user": "stanley"}},
            inputs=dict(inputs or {}))
        conductor.request_workflow_status(statuses.RUNNING)
        runs: List[TaskRun] = []
        item_results: Dict[Tuple[str, int], List[Any]] = {}
        for _ in range(self.max_steps):
            if conductor.get_workflow_status() != statuses.RUNNING:
                break
            tasks = conductor.get_next_tasks()
            if not tasks:
                break
            for task in tasks:
                self._conduct_task(conductor, task, runs, item_results)
        else:
            raise AssertionError("workflow {} did not finish in {} steps".format(path, self.max_steps))
        conductor.render_workflow_output()
        return WorkflowRun(conductor.get_workflow_status(), conductor.get_workflow_output(),
                           list(conductor.errors), runs)

    def run(self, action_ref: str, inputs: Optional[Mapping[str, Any]] = None) -> WorkflowRun:
        meta = self._action_meta(action_ref)
        if meta["runner_type"] != "orquesta":
            raise AssertionError("{} is not an orquesta workflow".format(action_ref))
        return self.run_file(os.path.join(self.pack_dir, "actions", meta["entry_point"]),
                             _with_defaults(meta, inputs or {}))

    def execute(self, action_ref: str, params: Optional[Mapping[str, Any]] = None) -> Tuple[str, Any, List[TaskRun]]:
        """Run any action the way st2's runners would (a rule's action, say): returns the
        status, the execution result and every task execution it made."""
        runs: List[TaskRun] = []
        status, result = self._execute("execution", action_ref, params or {}, runs)
        return status, result, runs

    def _conduct_task(self, conductor, task, runs, item_results) -> None:
        task_id, route = task["id"], task["route"]
        if task.get("delay"):  # a task delay or a retry delay: st2 waits before scheduling
            self.delays.append((task_id, task["delay"]))
            self.sleep(task["delay"])
        if "items_count" not in task:
            action = task["actions"][0]
            conductor.update_task_state(task_id, route, events.ActionExecutionEvent(statuses.RUNNING))
            status, result = self._execute(task_id, action["action"], action["input"], runs)
            conductor.update_task_state(task_id, route, events.ActionExecutionEvent(status, result=result))
            return
        key = (task_id, route)
        if not task["actions"]:  # an empty list succeeds at once
            if task["items_count"] == 0:
                conductor.update_task_state(task_id, route, events.ActionExecutionEvent(statuses.RUNNING))
                conductor.update_task_state(task_id, route,
                                            events.ActionExecutionEvent(statuses.SUCCEEDED, result=[]))
            return
        accumulated = item_results.setdefault(key, [None] * task["items_count"])
        for action in task["actions"]:
            item_id = action["item_id"]
            conductor.update_task_state(task_id, route, events.TaskItemActionExecutionEvent(
                item_id, statuses.RUNNING))
            status, result = self._execute(task_id, action["action"], action["input"], runs)
            accumulated[item_id] = result
            conductor.update_task_state(task_id, route, events.TaskItemActionExecutionEvent(
                item_id, status, result=result, accumulated_result=list(accumulated)))

    # -- executing actions -------------------------------------------------
    def _execute(self, task_id: str, ref: str, params: Mapping[str, Any],
                 runs: List[TaskRun]) -> Tuple[str, Any]:
        params = dict(params or {})
        if ref in self.overrides:
            status, result = _wrap_python_result(lambda: self.overrides[ref](**params))
        elif ref.startswith(self.pack_ref + "."):
            status, result = self._execute_pack_action(ref, params, runs)
        else:
            status, result = _core_action(ref, params)
        runs.append(TaskRun(task_id, ref, params, status, result))
        return status, result

    def _execute_pack_action(self, ref: str, params: Dict[str, Any],
                             runs: List[TaskRun]) -> Tuple[str, Any]:
        meta = self._action_meta(ref)
        problems = _parameter_problems(meta, params)
        if problems:  # st2 refuses to schedule such an execution
            return statuses.FAILED, {"error": "; ".join(problems)}
        params = _with_defaults(meta, params)
        if meta["runner_type"] == "orquesta":
            child = WorkflowHarness(self.config, self.pack_dir, self.action_service, self.overrides,
                                    self.sleep)
            child.delays = self.delays
            run = child.run(ref, params)
            runs.extend(run.tasks)
            return run.status, {"output": run.output, "errors": run.errors}
        action = self._action_instance(meta)
        run_params = {k: v for k, v in params.items() if k not in PYTHON_RUNNER_PARAMETERS}
        return _wrap_python_result(lambda: action.run(**run_params))

    def _action_instance(self, meta: Mapping[str, Any]) -> Action:
        module_name = os.path.splitext(meta["entry_point"])[0].replace("/", ".")
        module = importlib.import_module(module_name)
        classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
                   if c.__module__ == module.__name__ and issubclass(c, Action)]
        if len(classes) != 1:
            raise AssertionError("{} must define exactly one Action class".format(meta["entry_point"]))
        service = self.action_service or MockActionService(
            MockActionWrapper(pack=self.pack_ref, class_name=classes[0].__name__))
        return classes[0](config=PackConfigDict(self.pack_ref, dict(self.config)), action_service=service)

    def declared_parameters(self, action_ref: str) -> Dict[str, Any]:
        """The parameters a pack action declares in its metadata."""
        return dict(self._action_meta(action_ref).get("parameters") or {})

    def _action_meta(self, ref: str) -> Dict[str, Any]:
        name = ref.split(".", 1)[1]
        metas = _action_metas(self.pack_dir)
        if name not in metas:
            raise AssertionError("no action {} in {}".format(ref, self.pack_dir))
        return metas[name]


@functools.lru_cache(maxsize=None)
def _action_metas(pack_dir: str) -> Dict[str, Dict[str, Any]]:
    """Every action's metadata by name (read once per pack directory)."""
    metas = {}
    for file_name in sorted(os.listdir(os.path.join(pack_dir, "actions"))):
        if file_name.endswith((".yaml", ".yml")):
            with open(os.path.join(pack_dir, "actions", file_name), encoding="utf-8") as handle:
                meta = yaml.safe_load(handle)
            metas[meta.get("name")] = meta
    return metas


def _pack_ref(pack_dir: str) -> str:
    with open(os.path.join(pack_dir, "pack.yaml"), encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    return meta.get("ref") or meta["name"]


def _with_defaults(meta: Mapping[str, Any], params: Mapping[str, Any]) -> Dict[str, Any]:
    merged = dict(params)
    for name, schema in (meta.get("parameters") or {}).items():
        if name not in merged and "default" in (schema or {}):
            merged[name] = schema["default"]
    return merged


def _parameter_problems(meta: Mapping[str, Any], params: Mapping[str, Any]) -> List[str]:
    declared = meta.get("parameters") or {}
    runner = PYTHON_RUNNER_PARAMETERS if meta["runner_type"] == "python-script" else set()
    problems = ["unexpected parameter {!r}".format(k) for k in params if k not in declared and k not in runner]
    schema = to_json_schema({"type": "object", "properties": declared})
    for error in jsonschema.Draft4Validator(schema).iter_errors(dict(params)):
        problems.append("parameter {}: {}".format(".".join(map(str, error.path)) or "", error.message))
    return problems


def _wrap_python_result(call: Callable[[], Any]) -> Tuple[str, Any]:
    """The python runner's contract: (bool, value) decides the status; raising fails."""
    try:
        value = call()
    except Exception:  # noqa: BLE001 - the runner turns any exception into a failed run
        return statuses.FAILED, {"result": "None", "stdout": "", "stderr": traceback.format_exc(),
                                 "exit_code": 1}
    status = statuses.SUCCEEDED
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        status = statuses.SUCCEEDED if value[0] else statuses.FAILED
        value = value[1]
    return status, {"result": value, "stdout": "", "stderr": "",
                    "exit_code": 0 if status == statuses.SUCCEEDED else 1}


def _core_action(ref: str, params: Mapping[str, Any]) -> Tuple[str, Any]:
    if ref == "core.noop":
        return statuses.SUCCEEDED, {}
    if ref == "core.echo":
        return statuses.SUCCEEDED, {"stdout": str(params.get("message", "")), "stderr": "",
                                    "return_code": 0, "succeeded": True, "failed": False}
    if ref == "core.error":
        return statuses.FAILED, {"stdout": "", "stderr": str(params.get("message", "")),
                                 "return_code": 1, "succeeded": False, "failed": True}
    raise AssertionError("the harness cannot run {} (add an override)".format(ref))
