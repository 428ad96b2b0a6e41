"""``make demo``: the pack's main job on one machine, end to end.

A host sensor drops the sample files into a quarantine directory; then, exactly
as StackStorm would run them, the pack's real code takes over:

1. the ``ingest_drop_directory`` rule fires its action ``ingest_directory``;
2. the ``AssemblylineNotificationSensor`` polls Assemblyline's notification
   queue and dispatches ``submission_completed`` / ``_failed`` triggers;
3. every shipped rule's criteria are evaluated on each trigger; a matching
   ``submission_completed_to_threatconnect`` runs the
   ``submission_to_threatconnect`` workflow through the real orquesta conductor.

Assemblyline and ThreatConnect are the loopback emulators under ``tests/``; the
StackStorm services are the in-repo stand-in (``tests/st2_standin``), the
conductor loop is ``tests/workflow_harness.py``. The demo waits shorter than
StackStorm would (sensor polls every half second, workflow delays capped at half
a second) and otherwise adds nothing of its own: what it prints comes from the
actions' results, the sensor's triggers and the ThreatConnect emulator's store.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES_DIR = os.path.join(PACK_DIR, "demo", "samples")
PACK = "assemblyline_threatconnect"
SENSOR_POLL_SECONDS = 0.5
MAX_WAIT_SECONDS = 0.5
MAX_FILE_SIZE = 16 * 1024


def _setup_paths() -> None:
    """What st2's runners and st2-run-pack-tests do: pack dirs on sys.path, st2 stand-in if needed."""
    for sub in ("sensors", os.path.join("actions", "lib"), "actions", ""):
        path = os.path.join(PACK_DIR, sub) if sub else PACK_DIR
        if path not in sys.path:
            sys.path.insert(0, path)
    from tests.st2_standin import install_if_missing
    install_if_missing()


class Report:
    """Progress lines and the closing tables (one writer, so output stays ordered)."""

    def __init__(self, out: TextIO):
        self.out = out
        self.rejected: List[Tuple[str, str, str]] = []  # (what, stage, why)

    def stage(self, number: int, text: str) -> None:
        self.line("[{}/5] {}".format(number, text))

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def reject(self, what: str, stage: str, why: str) -> None:
        self.rejected.append((what, stage, why))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for index, row in enumerate(cells):
            self.line("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if index == 0:
                self.line("  " + "  ".join("-" * w for w in widths))


def _shorten(text: str, width: int = 64) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


# -- the pieces StackStorm would provide --------------------------------------------

def load_rules() -> List[Dict[str, Any]]:
    import yaml
    rules = []
    rules_dir = os.path.join(PACK_DIR, "rules")
    for name in sorted(os.listdir(rules_dir)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(rules_dir, name), encoding="utf-8") as handle:
                rules.append(yaml.safe_load(handle))
    return rules


def rule_named(rules: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    return [r for r in rules if r["name"] == name][0]


def demo_config(al_url: str, tc_url: str, root: str, drop: str) -> Dict[str, Any]:
    """The pack config a SOC would write (credentials are the emulators' demo ones)."""
    from tests.helpers import pack_config
    return pack_config(
        al_url=al_url, tc_url=tc_url, roots=[root], drop_directory=drop,
        assemblyline={"poll_interval": 4, "completion_deadline": 120},
        threatconnect={"retries": 2},
        ingest={"max_file_size": MAX_FILE_SIZE})


class Services:
    """st2's services around the pack: one datastore shared by actions and the sensor."""

    def __init__(self, config: Mapping[str, Any], sleep: Callable[[float], None]):
        from st2tests.base import _pack_trigger_schemas
        from st2tests.mocks.action import MockActionService, MockActionWrapper
        from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper
        from tests.workflow_harness import WorkflowHarness

        self.sensor_service = MockSensorService(
            MockSensorWrapper(pack=PACK, class_name="AssemblylineNotificationSensor"),
            trigger_schemas=_pack_trigger_schemas(PACK_DIR))
        self.action_service = MockActionService(MockActionWrapper(pack=PACK, class_name="demo"))
        # st2 has one datastore; the stand-ins keep one each, so let them share the store
        # (names stay per class: st2's ``local`` prefixes differ between sensor and action).
        self.action_service.datastore_service._store = self.sensor_service.datastore_service._store
        self.runner = WorkflowHarness(config, pack_dir=PACK_DIR, action_service=self.action_service,
                                      sleep=sleep)

    def run_rule_action(self, rule: Mapping[str, Any], payload: Mapping[str, Any]) -> Tuple[str, Any]:
        from tests.rule_criteria import action_parameters
        ref = rule["action"]["ref"]
        declared = self.runner.declared_parameters(ref) if ref.startswith(PACK + ".") else {}
        status, result, _ = self.runner.execute(ref, action_parameters(rule, payload, declared))
        return status, result


# -- the stages -----------------------------------------------------------------------

def drop_samples(report: Report, drop: str) -> List[str]:
    names = sorted(os.listdir(SAMPLES_DIR))
    for name in names:
        shutil.copyfile(os.path.join(SAMPLES_DIR, name), os.path.join(drop, name))
    report.stage(2, "host sensor dropped {} files into {}".format(len(names), drop))
    return names


def ingest_drop_directory(report: Report, services: Services, rules) -> Dict[str, Any]:
    rule = rule_named(rules, "ingest_drop_directory")
    status, result = services.run_rule_action(rule, {"executed_at": time.time()})
    if status != "succeeded":
        raise DemoFailure("ingest_directory {}: {}".format(status, result))
    out = result["result"]
    counts = out["counts"]
    report.stage(3, "rule ingest_drop_directory -> ingest_directory: {} seen, {} ingested, {} skipped, "
                    "{} failed".format(counts["seen"], counts["ingested"], counts["skipped"], counts["failed"]))
    for item in out["files"]:
        name = os.path.basename(item["path"])
        if item["status"] == "ingested":
            report.line("      ingested {:<34} ingest_id {}".format(name, item["ingest_id"]))
        else:
            report.reject(name, "ingest", item.get("reason") or item["status"])
    return out


def poll_sensor(report: Report, services: Services, config, ingests: Sequence[Mapping[str, Any]],
                timeout: float) -> List[Dict[str, Any]]:
    """Poll like st2's sensor container until every ingest has a trigger (or timeout)."""
    from notification_sensor import AssemblylineNotificationSensor
    sensor = AssemblylineNotificationSensor(sensor_service=services.sensor_service, config=config,
                                            poll_interval=config["assemblyline"]["poll_interval"])
    sensor.setup()
    wanted = {i["ingest_id"] for i in ingests}
    started = time.monotonic()
    triggers: List[Dict[str, Any]] = []
    last_shown = None
    try:
        while True:
            sensor.poll()
            triggers = list(services.sensor_service.dispatched_triggers)
            done = {t["payload"].get("ingest_id") for t in triggers} & wanted
            elapsed = time.monotonic() - started
            shown = (len(done), int(elapsed))
            if shown != last_shown:
                report.line("      sensor polls: {}/{} analyses reported ({:.0f} s)".format(
                    len(done), len(wanted), elapsed))
                last_shown = shown
            if done == wanted:
                break
            if elapsed > timeout:
                raise DemoFailure("Assemblyline reported {} of {} ingests within {:.0f} s".format(
                    len(done), len(wanted), timeout))
            time.sleep(SENSOR_POLL_SECONDS)
    finally:
        sensor.cleanup()
    report.stage(4, "sensor dispatched {} triggers: {}".format(len(triggers), ", ".join(
        sorted({t["trigger"].split(".", 1)[1] for t in triggers}))))
    return triggers


def react(report: Report, services: Services, rules, triggers) -> List[Dict[str, Any]]:
    """The rules engine: every rule on the trigger's type whose criteria match runs its action."""
    from tests.rule_criteria import criteria_match
    outputs = []
    report.stage(5, "rules engine: {} triggers against {} rules".format(len(triggers), len(rules)))
    for trigger in triggers:
        payload = trigger["payload"]
        name = os.path.basename((payload.get("metadata") or {}).get("file_path") or payload.get("ingest_id"))
        matched = [r for r in rules if r["trigger"]["type"] == trigger["trigger"] and criteria_match(r, payload)]
        if not matched and trigger["trigger"].endswith("submission_completed"):
            report.reject(name, "rule", "score {} below the rule's threshold (300)".format(payload["score"]))
        for rule in matched:
            outputs.extend(_run_matched(report, services, rule, payload, name))
    return outputs


def _run_matched(report, services, rule, payload, name) -> List[Dict[str, Any]]:
    ref = rule["action"]["ref"]
    if not ref.startswith(PACK + "."):  # chatops.post_message / core.echo: show what would be posted
        from tests.rule_criteria import action_parameters
        params = action_parameters(rule, payload, {})
        report.line("      {} -> {}: {}".format(rule["name"], ref, params.get("message")))
        report.reject(name, "assemblyline", payload.get("failure") or rule["name"])
        return []
    report.line("      {} -> {} for {} (score {}) ...".format(rule["name"], ref.split(".", 1)[1], name,
                                                             payload.get("score")))
    status, result = services.run_rule_action(rule, payload)
    output = (result or {}).get("output") or {}
    if status != "succeeded":
        report.reject(name, "workflow", output.get("failure") or str(result.get("errors")))
        return []
    by_type = ", ".join("{} {}".format(n, t) for t, n in sorted(output["counts_by_type"].items()) if n)
    report.line("        {}: {} indicators ({}), batch {}, {} TC errors".format(
        status, output["indicator_count"], by_type or "none", output["batch_ids"], output["tc_error_count"]))
    for error in output.get("tc_errors") or []:
        report.reject(error.get("source") or name, "threatconnect", error.get("reason"))
    for reason, count in sorted((output.get("rejected_by_reason") or {}).items()):
        report.reject(name, "mapping", "{} value(s) invalid: {}".format(count, reason))
    from lib.indicators import FILTER_REASONS
    for reason, count in sorted((output.get("filtered") or {}).items()):
        if count and reason in FILTER_REASONS and reason != "rejected":  # invalid ones are listed above
            report.reject(name, "mapping", "{} value(s) filtered: {}".format(count, reason))
    return [output]


def what_reached_threatconnect(report: Report, tc, owner: str, outputs) -> int:
    groups = tc.groups(owner)
    batch_of_group = {}
    for output in outputs:
        if output.get("group_xid"):
            batch_of_group[output["group_xid"]] = ", ".join(str(b) for b in output["batch_ids"])
    rows = []
    for summary, record in sorted(tc.indicators(owner).items(), key=lambda kv: (kv[1]["type"], kv[0])):
        xids = record["associatedGroups"]
        shown = summary.split(" : ")[-1] if record["type"] == "File" else summary  # the SHA-256
        rows.append((_shorten(shown), record["type"], record["rating"], record["confidence"],
                     _shorten("; ".join(groups[x]["name"] for x in xids if x in groups)),
                     "; ".join(sorted({batch_of_group.get(x, "?") for x in xids}))))
    report.line("")
    report.line("What reached ThreatConnect (owner {!r}): {} indicators in {} groups".format(
        owner, len(rows), len(groups)))
    report.table(("indicator", "type", "rating", "confidence", "group", "batch id"), rows)
    report.line("")
    report.line("Not sent, and why: {}".format(len(report.rejected)))
    report.table(("what", "stage", "reason"), report.rejected)
    return len(rows)


class DemoFailure(Exception):
    """The demo could not finish; the message says which stage and why."""


# -- main -------------------------------------------------------------------------------

def run(out: TextIO = sys.stdout, timeout: float = 40.0, analysis_delay: float = 1.0) -> int:
    _setup_paths()
    from tests.emulators.assemblyline import AssemblylineEmulator
    from tests.emulators.threatconnect import ThreatConnectEmulator
    from tests.helpers import AL_APIKEY, AL_USER, TC_ACCESS_ID, TC_OWNER, TC_SECRET_KEY, TC_TOKEN
    import orquesta  # noqa: F401  (the real conductor; fails clearly on an unsupported Python)

    report = Report(out)
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="al-tc-demo-")
    al = AssemblylineEmulator(user=AL_USER, apikey=AL_APIKEY, analysis_delay=analysis_delay)
    tc = ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY, token=TC_TOKEN,
                               owners=[TC_OWNER], queued_polls=1, running_polls=1)
    try:
        al.start()
        tc.start()
        report.stage(1, "emulators up: Assemblyline {}  ThreatConnect {}".format(al.url, tc.url))
        drop = os.path.join(workdir, "quarantine")
        os.mkdir(drop)
        config = demo_config(al.url, tc.url, workdir, drop)
        services = Services(config, sleep=lambda seconds: time.sleep(min(seconds, MAX_WAIT_SECONDS)))
        rules = load_rules()
        drop_samples(report, drop)
        ingested = ingest_drop_directory(report, services, rules)
        triggers = poll_sensor(report, services, config, ingested["ingests"], timeout)
        outputs = react(report, services, rules, triggers)
        what_reached_threatconnect(report, tc, TC_OWNER, outputs)
        report.line("")
        report.line("demo finished in {:.1f} s".format(time.monotonic() - started))
        return 0
    finally:
        tc.stop()
        al.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds to wait for analyses")
    parser.add_argument("--analysis-delay", type=float, default=1.0,
                        help="seconds the Assemblyline emulator takes per analysis")
    args = parser.parse_args(argv)
    try:
        return run(timeout=args.timeout, analysis_delay=args.analysis_delay)
    except KeyboardInterrupt:
        print("\ndemo interrupted: emulators stopped, work directory removed", file=sys.stderr)
        return 130
    except DemoFailure as failure:
        print("demo failed: {}".format(failure), file=sys.stderr)
        return 1
