#!/usr/bin/env python
"""P1 (issue 14): draining Assemblyline's notification queue, the pack's sensor against the
receiver pattern from Assemblyline's examples.

``--messages`` completion messages (default 10,000, of the real shape: copies of the message a
real ingest of the emulator produced, each with its own ingest_id and a pending ledger record)
wait in a notification queue of the Assemblyline emulator. In turn (A, B, A, B ...), median of
``--repeat`` runs:

* A, the pack: ``AssemblylineNotificationSensor.poll()`` with the st2 stand-in sensor service
  (every payload checked against its trigger's schema, a datastore) until every message is
  dispatched as a trigger; ``assemblyline.page_size`` is ``--page-size`` (default 1,000,
  the schema's maximum; the pack's default is 50);
* B, the pattern: ``client.ingest.get_message_list(nq)``, then ``client.submission(sid)`` per
  message, then ``time.sleep(1)``, until every message is handled, with the official
  ``assemblyline_client``. Its sleep counts: it is part of the pattern.

A also runs once per round without the stand-in's payload checks, to show the sensor's own
share. Reported: messages/s of each and the ratio; Assemblyline requests per message of both; and the
sensor's datastore calls (reads, writes, deletes) per message. Nothing here changes the sensor.

    .venv/py311/bin/python bench/bench_queue.py [--messages 10000] [--repeat 3]
"""
import argparse
import copy
import os
import sys
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import pack_adapter as pack  # noqa: E402

from assemblyline_client import get_client  # noqa: E402

QUEUE = "st2_threatconnect"
GOAL_RATIO = 50.0
GOAL_MESSAGES_PER_REQUEST = 500
GOAL_WRITES_PER_MESSAGE = 0.1
READS = ("get_value", "list_values")
WRITES = ("set_value",)
DELETES = ("delete_value",)


class CountingDatastore:
    """Counts the datastore calls made through a stand-in sensor service."""

    def __init__(self, service: Any):
        self.counts = {name: 0 for name in READS + WRITES + DELETES}
        for name in self.counts:
            setattr(service, name, self._counted(name, getattr(service, name)))

    def _counted(self, name: str, call: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return call(*args, **kwargs)
        return counted

    def reset(self) -> None:
        for name in self.counts:
            self.counts[name] = 0

    def of(self, names: tuple) -> int:
        return sum(self.counts[name] for name in names)


def template_message(emulator: Any, parts: Dict[str, Any]) -> Dict[str, Any]:
    """The completion message a real ingest produces (taken out of the queue again)."""
    client = get_client(emulator.url, apikey=(parts["user"], parts["apikey"]), verify=False)
    client.ingest(content=b"beacon http://evil-c2.example.com/gate.php\n", fname="dropper.exe",
                  nq=QUEUE, metadata={"file_path": "/data/drop/dropper.exe"},
                  submission_profile="static")
    emulator.pump()
    for _ in range(100):
        found = emulator.queue(parts["user"], QUEUE)
        if found:
            break
        time.sleep(0.05)
        emulator.pump()
    emulator.state.pop_messages(parts["user"], QUEUE, -1)
    return found[0]


def fill_queue(emulator: Any, parts: Dict[str, Any], template: Dict[str, Any], count: int,
               ledger: Any = None) -> None:
    """``count`` messages, each its own ingest_id, one real sid (as cache hits share one)."""
    for number in range(count):
        message = copy.deepcopy(template)
        ingest_id = "iid{:06d}".format(number)
        message["ingest_id"] = ingest_id
        message["submission"].setdefault("metadata", {})["ingest_id"] = ingest_id
        emulator.push_message(parts["user"], QUEUE, message)
        if ledger is not None:
            ledger.record_pending(ingest_id, message["submission"].get("files", [{}])[0].get("sha256", ""),
                                  "/data/drop/dropper.exe", QUEUE, 7200)


def run_sensor(emulator: Any, parts: Dict[str, Any], template: Dict[str, Any], count: int,
               page_size: int, validate: bool = True) -> Dict[str, Any]:
    service = parts["service"](validate)
    fill_queue(emulator, parts, template, count, parts["ledger_cls"](service))
    counter = CountingDatastore(service)
    config = parts["pack_config"](al_url=emulator.url, assemblyline={
        "page_size": page_size, "max_pages_per_poll": 20, "poll_interval": 30})
    emulator.clear_log()
    sensor = parts["sensor_cls"](sensor_service=service, config=config)
    start = time.perf_counter()
    sensor.setup()
    polls = 0
    while len(service.dispatched_triggers) < count:
        before = len(service.dispatched_triggers)
        sensor.poll()
        polls += 1
        if len(service.dispatched_triggers) == before:
            raise RuntimeError("the sensor stopped dispatching at {} of {} messages".format(before, count))
    seconds = time.perf_counter() - start
    sensor.cleanup()
    if service.violations:
        raise RuntimeError("payloads st2 would drop: {}".format(service.violations[:3]))
    return {"seconds": seconds, "messages": len(service.dispatched_triggers), "polls": polls,
            "requests": len(emulator.request_log), "reads": counter.of(READS),
            "writes": counter.of(WRITES), "deletes": counter.of(DELETES)}


def run_receiver(emulator: Any, parts: Dict[str, Any], template: Dict[str, Any], count: int) -> Dict[str, Any]:
    fill_queue(emulator, parts, template, count)
    client = get_client(emulator.url, apikey=(parts["user"], parts["apikey"]), verify=False)
    emulator.clear_log()
    handled = 0
    start = time.perf_counter()
    while handled < count:
        for message in client.ingest.get_message_list(QUEUE):
            client.submission(message["submission"]["sid"])
            handled += 1
        time.sleep(1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "messages": handled, "requests": len(emulator.request_log)}


def report(a_runs: List[Dict[str, Any]], b_runs: List[Dict[str, Any]], bare_runs: List[Dict[str, Any]],
           count: int, page_size: int) -> None:
    a = common.median([r["seconds"] for r in a_runs])
    bare = common.median([r["seconds"] for r in bare_runs])
    b = common.median([r["seconds"] for r in b_runs])
    first = a_runs[0]
    print("A pack sensor (page_size {}): {} s -> median {:.3f} s, {:,.0f} messages/s; {} polls, "
          "{} AL requests; datastore {} reads, {} writes, {} deletes".format(
              page_size, common.seconds_list([r["seconds"] for r in a_runs]), a, count / a,
              first["polls"], first["requests"], first["reads"], first["writes"], first["deletes"]))
    print("A without the stand-in's payload schema checks (st2 makes them too; this is the "
          "sensor's own share): {} s -> median {:.3f} s, {:,.0f} messages/s".format(
              common.seconds_list([r["seconds"] for r in bare_runs]), bare, count / bare))
    print("B get_message_list + submission(sid) + sleep(1): {} s -> median {:.3f} s, {:,.0f} "
          "messages/s; {} AL requests".format(common.seconds_list([r["seconds"] for r in b_runs]), b,
                                              count / b, b_runs[0]["requests"]))
    common.ratio("p1.queue_drain.pack_vs_receiver", b / a, ">= 50", b / a >= GOAL_RATIO)
    common.ratio("p1.queue_drain.pack_without_payload_checks_vs_receiver", b / bare)
    per_request = count / first["requests"]
    common.figure("p1.pack.messages_per_al_request", per_request, "", ">= 500 (<= 1 request per 500)",
                  per_request >= GOAL_MESSAGES_PER_REQUEST)
    common.figure("p1.receiver.al_requests_per_message", b_runs[0]["requests"] / count)
    common.figure("p1.pack.datastore_reads_per_message", first["reads"] / count)
    writes = first["writes"] / count
    common.figure("p1.pack.datastore_writes_per_message", writes, "", "<= 0.1",
                  writes <= GOAL_WRITES_PER_MESSAGE)
    common.figure("p1.pack.datastore_deletes_per_message", first["deletes"] / count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    common.header("P1 queue drain", "{:,} messages, {} runs each".format(args.messages, args.repeat))
    parts = pack.sensor_parts()
    with parts["emulator_cls"](user=parts["user"], apikey=parts["apikey"], analysis_delay=0) as emulator:
        template = template_message(emulator, parts)
        bare_runs: List[Dict[str, Any]] = []

        def run_a() -> Dict[str, Any]:
            bare_runs.append(run_sensor(emulator, parts, template, args.messages, args.page_size, False))
            return run_sensor(emulator, parts, template, args.messages, args.page_size)

        a_runs, b_runs = common.alternate(
            args.repeat, run_a, lambda: run_receiver(emulator, parts, template, args.messages))
    report(a_runs, b_runs, bare_runs, args.messages, args.page_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
