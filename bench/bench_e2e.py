#!/usr/bin/env python
"""P3 (issue 14): sample files in a directory to indicators in ThreatConnect, end to end.

``--files`` small sample files (default 1,000; each a few IOCs and a malware family, new
content every run so no analysis is a cache hit) wait in a directory. The Assemblyline
emulator takes ``--analysis-delay`` seconds (default 2) for every analysis, for both sides. In
turn (A, B, A, B ...), median of ``--repeat`` runs:

* A, the pack: the bulk workflow ``ingest_to_threatconnect`` (``directory``, ``poll_interval``
  1 s, ``tc_poll_interval`` 1 s) run by the real orquesta conductor (tests/workflow_harness.py,
  real time: its delays sleep), every task a real pack action;
* B, the script pattern: a sender calling ``client.ingest(path=...)`` for each file in turn,
  and at the same time (a second thread, as a second script would be) the P1 receiver:
  ``get_message_list(nq)``, per message ``client.submission(sid)`` and
  ``client.submission.summary(sid)`` (for its tags), and one ThreatConnect batch job per
  submission (create, upload, poll every second until Completed) with plain ``requests`` and
  HMAC, then ``sleep(1)``.

Reported: wall time of each, the ratio, Assemblyline requests per file and ThreatConnect jobs
of each. Needs Python 3.8 (orquesta 1.2.0).

    .venv/py38/bin/python bench/bench_e2e.py [--files 1000] [--repeat 3]
"""
import argparse
import base64
import hashlib
import hmac
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import pack_adapter as pack  # noqa: E402

import requests  # noqa: E402
from assemblyline_client import get_client  # noqa: E402

from tests.emulators.assemblyline import AssemblylineEmulator  # noqa: E402
from tests.emulators.threatconnect import ThreatConnectEmulator  # noqa: E402
from tests.helpers import (AL_APIKEY, AL_USER, TC_ACCESS_ID, TC_OWNER, TC_SECRET_KEY,  # noqa: E402
                           pack_config)

SCRIPT_QUEUE = "script_receiver"
GOAL_RATIO = 5.0
GOAL_REQUESTS_PER_FILE = 3.0
SCRIPT_TYPES = {"network.static.uri": "URL", "network.dynamic.uri": "URL",
                "network.static.domain": "Host", "network.dynamic.domain": "Host",
                "network.static.ip": "Address", "network.dynamic.ip": "Address",
                "network.email.address": "EmailAddress"}


def write_samples(directory: str, count: int, run: int) -> List[str]:
    paths = []
    for index in range(count):
        path = os.path.join(directory, "sample{:05d}.txt".format(index))
        with open(path, "wb") as handle:
            handle.write(("dropper {r}-{i}\nbeacon http://evil-c2-{r}-{i}.com/gate.php?id={i}\n"
                          "fallback malware-{r}-{i}.ru\nmail ops{i}@bad-actor-{r}.ru\nFAMILY=EMOTET\n"
                          .format(r=run, i=index)).encode())
        paths.append(path)
    return paths


# ------------------------------------------------------------------ A: the pack's workflow

def time_actions(harness: Any) -> Dict[str, float]:
    """Seconds spent in each action the harness runs (a workflow's own includes its tasks')."""
    spent: Dict[str, float] = {}
    execute = harness._execute  # noqa: SLF001 - the harness's one entry point for every task

    def timed(task_id: str, ref: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(task_id, ref, *args, **kwargs)
        finally:
            spent[ref] = spent.get(ref, 0.0) + time.perf_counter() - start

    harness._execute = timed  # noqa: SLF001
    return spent


def run_pack(al: Any, tc: Any, directory: str, count: int) -> Dict[str, Any]:
    parts = pack.workflow_harness()
    raw = pack_config(al_url=al.url, tc_url=tc.url, roots=[directory], threatconnect={"retries": 0})
    service = parts["action_service"](parts["action_wrapper"](pack=parts["pack"], class_name="harness"))
    slept = [0.0]

    def sleep(seconds: float) -> None:  # st2 waits out task and retry delays
        slept[0] += seconds
        time.sleep(seconds)

    harness = parts["harness_cls"](raw, action_service=service, sleep=sleep)
    by_action = time_actions(harness)
    al.clear_log()
    jobs_before = len(tc.jobs())
    start = time.perf_counter()
    run = harness.run(parts["pack"] + ".ingest_to_threatconnect",
                      {"directory": directory, "poll_interval": 1, "tc_poll_interval": 1})
    seconds = time.perf_counter() - start
    out = run.output or {}
    if run.status != "succeeded" or len(out.get("completed") or []) != count:
        raise RuntimeError("workflow {}: {} completed of {} ({})".format(
            run.status, len(out.get("completed") or []), count, run.errors or out.get("failure")))
    return {"seconds": seconds, "requests": len(al.request_log), "tc_jobs": len(out["batch_ids"]),
            "indicators": out["indicator_count"], "jobs_made": len(tc.jobs()) - jobs_before,
            "by_action": by_action, "delays": slept[0],
            "largest_document": max(len(json.dumps(d, default=str)) for d in
                                    [out] + [t.result for t in run.tasks] + [t.params for t in run.tasks])}


# ------------------------------------------------------------------ B: the script pattern

class Hmac(requests.auth.AuthBase):
    """ThreatConnect's HMAC: base64(HMAC-SHA256(secret, "path?query:METHOD:timestamp"))."""

    def __init__(self, access_id: str, secret: str):
        self.access_id, self.secret = access_id, secret

    def __call__(self, request: Any) -> Any:
        stamp = str(int(time.time()))
        text = "{}:{}:{}".format(request.path_url, request.method, stamp)
        digest = hmac.new(self.secret.encode(), text.encode(), hashlib.sha256).digest()
        request.headers["Timestamp"] = stamp
        request.headers["Authorization"] = "TC {}:{}".format(self.access_id,
                                                             base64.b64encode(digest).decode())
        return request


def script_batch(session: Any, url: str, sid: str, summary: Dict[str, Any]) -> int:
    """One batch job for one submission: its IOC tags as indicators of its Report group."""
    xid = "script:" + sid
    indicators = []
    for by_type in (summary.get("tags") or {}).values():
        for tag_type, tuples in (by_type or {}).items():
            kind = SCRIPT_TYPES.get(tag_type)
            for value, h_type, safelisted, _ in tuples if kind else ():
                if h_type in ("malicious", "suspicious") and not safelisted:
                    indicators.append({"type": kind, "summary": value, "rating": 3, "confidence": 60,
                                       "tag": [{"name": "Assemblyline"}],
                                       "associatedGroups": [{"groupXid": xid}]})
    body = {"group": [{"type": "Report", "name": "Assemblyline " + sid, "xid": xid,
                       "fileName": sid + ".txt"}], "indicator": indicators}
    config = {"owner": TC_OWNER, "action": "Create", "haltOnError": False,
              "attributeWriteType": "Replace", "version": "V2"}
    created = session.post(url + "/v2/batch", json=config, timeout=30)
    created.raise_for_status()
    batch_id = created.json()["data"]["batchId"]
    session.post("{}/v2/batch/{}".format(url, batch_id), data=json.dumps(body).encode(),
                 headers={"Content-Type": "application/octet-stream"}, timeout=30).raise_for_status()
    while True:
        status = session.get("{}/v2/batch/{}".format(url, batch_id), timeout=30).json()
        if status["data"]["batchStatus"]["status"] == "Completed":
            return batch_id
        time.sleep(1)


def run_script(al: Any, tc: Any, paths: List[str]) -> Dict[str, Any]:
    sender = get_client(al.url, apikey=(AL_USER, AL_APIKEY), verify=False)
    receiver = get_client(al.url, apikey=(AL_USER, AL_APIKEY), verify=False)
    session = requests.Session()
    session.auth = Hmac(TC_ACCESS_ID, TC_SECRET_KEY)
    al.clear_log()
    jobs: List[int] = []
    failures: List[BaseException] = []

    def send() -> None:
        try:
            for path in paths:
                sender.ingest(path=path, fname=os.path.basename(path), nq=SCRIPT_QUEUE,
                              submission_profile="static")
        except BaseException as exc:  # noqa: BLE001 - reported by the receiver's loop
            failures.append(exc)

    start = time.perf_counter()
    thread = threading.Thread(target=send, name="script-sender")
    thread.start()
    while len(jobs) < len(paths) and not failures:
        for message in receiver.ingest.get_message_list(SCRIPT_QUEUE):
            sid = message["submission"]["sid"]
            receiver.submission(sid)
            jobs.append(script_batch(session, tc.url, sid, receiver.submission.summary(sid)))
        time.sleep(1)
    seconds = time.perf_counter() - start
    thread.join()
    if failures:
        raise RuntimeError("the sender failed: {}".format(failures[0]))
    return {"seconds": seconds, "requests": len(al.request_log), "tc_jobs": len(jobs)}


# ------------------------------------------------------------------ the bench

def one_run(side: str, count: int, delay: float, run: int) -> Dict[str, Any]:
    """One run against new emulators (what earlier runs left would slow later ones down)."""
    directory = tempfile.mkdtemp(prefix="bench-e2e-")
    try:
        paths = write_samples(directory, count, run)
        with AssemblylineEmulator(user=AL_USER, apikey=AL_APIKEY, analysis_delay=delay) as al, \
                ThreatConnectEmulator(access_id=TC_ACCESS_ID, secret_key=TC_SECRET_KEY,
                                      owners=[TC_OWNER], queued_polls=0, running_polls=0) as tc:
            return run_pack(al, tc, directory, count) if side == "A" else run_script(al, tc, paths)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def report(a_runs: List[Dict[str, Any]], b_runs: List[Dict[str, Any]], count: int, delay: float) -> None:
    a = common.median([r["seconds"] for r in a_runs])
    b = common.median([r["seconds"] for r in b_runs])
    first, b_first = a_runs[0], b_runs[0]
    print("A pack bulk workflow: {} s -> median {:.2f} s; {} AL requests ({:.2f} per file); {:,} "
          "indicators in {} TC jobs (ceil(indicators / 25,000) = {}); largest st2 document {:,} "
          "bytes".format(common.seconds_list([r["seconds"] for r in a_runs]), a, first["requests"],
                         first["requests"] / count, first["indicators"], first["tc_jobs"],
                         math.ceil(first["indicators"] / 25000), first["largest_document"]))
    print("A's time by action (a workflow's includes its tasks'), then the workflow delays "
          "waited: " + ", ".join("{} {:.1f} s".format(ref.split(".", 1)[-1], seconds) for ref, seconds
                                         in sorted(first["by_action"].items(), key=lambda kv: -kv[1]))
          + "; delays {:.1f} s".format(first["delays"]))
    print("B sender + receiver + one TC job per submission: {} s -> median {:.2f} s; {} AL requests "
          "({:.2f} per file); {} TC jobs".format(common.seconds_list([r["seconds"] for r in b_runs]), b,
                                                 b_first["requests"], b_first["requests"] / count,
                                                 b_first["tc_jobs"]))
    print("analysis delay {:.1f} s per file on both sides".format(delay))
    common.ratio("p3.end_to_end.pack_vs_script", b / a, ">= 5", b / a >= GOAL_RATIO)
    per_file = first["requests"] / count
    common.figure("p3.pack.al_requests_per_file", per_file, "", "<= 3", per_file <= GOAL_REQUESTS_PER_FILE)
    common.figure("p3.script.al_requests_per_file", b_first["requests"] / count)
    common.figure("p3.pack.tc_jobs", first["tc_jobs"])
    common.figure("p3.script.tc_jobs", b_first["tc_jobs"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--analysis-delay", type=float, default=2.0)
    args = parser.parse_args()
    common.header("P3 end to end", "{:,} files, analysis delay {:g} s, {} runs each".format(
        args.files, args.analysis_delay, args.repeat))
    runs = iter(range(10 ** 6))
    a_runs, b_runs = common.alternate(
        args.repeat, lambda: one_run("A", args.files, args.analysis_delay, next(runs)),
        lambda: one_run("B", args.files, args.analysis_delay, next(runs)))
    report(a_runs, b_runs, args.files, args.analysis_delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
