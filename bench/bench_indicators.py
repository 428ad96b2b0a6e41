#!/usr/bin/env python
"""P2 (issue 14): indicators built, validated and serialised; then sent to Completed.

Side by side, in turn (A, floor, B, A, floor, B ...), median of ``--repeat`` runs each:

* A, the pack: ``build_indicators(doc, settings)`` (filters, validation, normalisation,
  merging, tags, labels, attributes, the group) and the batch bodies ``ThreatConnectClient.submit``
  uploads (``iter_jobs``, 25,000 items / 2,000,000 bytes per job);
* the fair floor (bench/floor.py): the same indicators (checked equal), with the same filters,
  lookups, labels and shared lists, minus only validation and normalisation; serialised by the
  same ``iter_jobs``; run with the garbage collector as the process has it, as the pack runs
  (it may not change the collector process-wide), which is the floor the goal counts; and again
  with the collector paused while building, reported beside it;
* B, tcex (latest release, run in ``.venv/tcex`` by bench/tcex_worker.py): the pack's output
  (handed over untimed) built as tcex batch objects with the same tags, attributes, labels and
  group associations, and its batch data serialised as ``Batch.submit_all`` does. B is given
  the indicators ready-made: it does less than A.

Then both submit ``--complete-indicators`` indicators to Completed in the ThreatConnect emulator
(its own process; HMAC checked): A with ``ThreatConnectClient.submit`` (build included), B with
``Batch.submit_all(poll=True)`` through tcex's HMAC ``TcSession`` (object building included).
Last, the peak RSS of a process building and serialising ``--rss-indicators`` indicators.

    .venv/py311/bin/python bench/bench_indicators.py [--tags 134228] [--repeat 3]
"""
import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Dict, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import pack_adapter as pack  # noqa: E402
from floor import floor_build  # noqa: E402

ACCESS_ID = "12345678901234567890"
SECRET = "bench-tc-secret"  # the emulator's own; nothing real
OWNER = "Example Org"
GOAL_TCEX = 6.0
GOAL_FLOOR = {(3, 11): 0.75, (3, 8): 0.65}
GOAL_COMPLETED = 3.0
GOAL_RSS_MB = 250.0


def pack_run(doc: Dict[str, Any], conf: Dict[str, Any]) -> Dict[str, Any]:
    gc.collect()
    start = time.perf_counter()
    indicators, groups = pack.build(doc, conf)
    built = time.perf_counter()
    jobs, size = pack.serialise(indicators, groups)
    done = time.perf_counter()
    return {"seconds": done - start, "build": built - start, "serialise": done - built,
            "indicators": len(indicators), "jobs": jobs, "bytes": size}


def floor_run(doc: Dict[str, Any], table: Dict[str, Any], xid: str, groups: list,
              gc_paused: bool) -> Dict[str, Any]:
    """The floor, with the collector as the process has it (the goal's floor: the pack runs so)
    or paused while it builds (shown beside it: what a process-wide GC change would buy)."""
    gc.collect()
    if gc_paused:
        gc.disable()
    try:
        start = time.perf_counter()
        indicators = floor_build(doc, table, pack.INDICATOR_TAG_TYPES, xid)
        built = time.perf_counter()
    finally:
        gc.enable()
    jobs, size = pack.serialise(indicators, groups)
    done = time.perf_counter()
    return {"seconds": done - start, "build": built - start, "indicators": len(indicators),
            "jobs": jobs, "bytes": size}


def tc_settings(url: str) -> Dict[str, Any]:
    return {"api_url": url, "owner": OWNER, "access_id": ACCESS_ID, "secret_key": SECRET}


def pack_complete(doc: Dict[str, Any], conf: Dict[str, Any], url: str) -> Dict[str, Any]:
    client = pack.client(tc_settings(url))
    try:
        start = time.perf_counter()
        indicators, groups = pack.build(doc, conf)
        aggregate = pack.submit(client, indicators, groups)
        done = time.perf_counter()
    finally:
        client.close()
    jobs = aggregate["jobs"]
    return {"seconds": done - start, "jobs": len(jobs), "indicators": len(indicators),
            "completed_jobs": sum(1 for j in jobs if j["status"] == "Completed"),
            "success": aggregate["totals"]["success"], "errors": aggregate["totals"]["error"]}


def tcex_run(python: str, specs: str, url: str, complete: bool,
             first_poll: Optional[float] = None) -> Dict[str, Any]:
    args = ["--input", specs, "--url", url, "--access-id", ACCESS_ID]
    if complete:
        args.append("--complete")
        if first_poll is not None:
            args += ["--first-poll", str(first_poll)]
    return common.worker(python, "tcex_worker.py", args)


def write_specs(indicators: list, groups: list) -> str:
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-specs-", delete=False,
                                         encoding="utf-8")
    with handle:
        json.dump({"indicators": indicators, "groups": groups}, handle)
    return handle.name


def build_phase(args: argparse.Namespace, conf: Dict[str, Any], tcex: Optional[str], url: str) -> None:
    doc = common.make_results(args.tags)
    indicators, groups = pack.build(doc, conf)  # warm-up, and the specs B and the floor get
    table = pack.floor_outcomes(doc)
    floor_indicators = floor_build(doc, table, pack.INDICATOR_TAG_TYPES, groups[0]["xid"])
    print("input: {:,} tags -> {:,} indicators + {} group(s); floor output identical to the "
          "pack's: {}".format(len(doc["tags"]), len(indicators), len(groups),
                              floor_indicators == indicators), flush=True)
    del floor_indicators
    specs = write_specs(indicators, groups)
    runs = {"pack": [], "floor": [], "floor_gc_paused": [], "tcex": []}  # type: Dict[str, list]
    try:
        for _ in range(args.repeat):
            runs["pack"].append(pack_run(doc, conf))
            runs["floor"].append(floor_run(doc, table, groups[0]["xid"], groups, gc_paused=False))
            runs["floor_gc_paused"].append(floor_run(doc, table, groups[0]["xid"], groups, gc_paused=True))
            if tcex:
                runs["tcex"].append(tcex_run(tcex, specs, url, complete=False))
    finally:
        os.unlink(specs)
    report_build(runs, len(indicators))


def report_build(runs: Dict[str, list], count: int) -> None:
    medians = {side: common.median([r["seconds"] for r in found]) for side, found in runs.items() if found}
    pack_run_ = runs["pack"][0]
    print("A pack build+validate+serialise: {} s -> median {:.3f} s ({:,.0f} indicators/s; "
          "build {:.3f} s, serialise {:.3f} s; {} jobs, {:.1f} MB)".format(
              common.seconds_list([r["seconds"] for r in runs["pack"]]), medians["pack"],
              count / medians["pack"], common.median([r["build"] for r in runs["pack"]]),
              common.median([r["serialise"] for r in runs["pack"]]), pack_run_["jobs"],
              pack_run_["bytes"] / 1e6))
    for side, how in (("floor", "collector as is"), ("floor_gc_paused", "collector paused while building")):
        print("floor (no validation/normalisation; {}): {} s -> median {:.3f} s ({:,.0f} "
              "indicators/s)".format(how, common.seconds_list([r["seconds"] for r in runs[side]]),
                                     medians[side], count / medians[side]))
    if runs["tcex"]:
        first = runs["tcex"][0]
        print("B tcex build+serialise: {} s -> median {:.3f} s ({:,.0f} indicators/s; build {:.3f} s, "
              "serialise {:.3f} s; {} chunks, {:.1f} MB)".format(
                  common.seconds_list([r["seconds"] for r in runs["tcex"]]), medians["tcex"],
                  count / medians["tcex"], common.median([r["build_seconds"] for r in runs["tcex"]]),
                  common.median([r["serialise_seconds"] for r in runs["tcex"]]), first["jobs"],
                  first["bytes"] / 1e6))
        speedup = medians["tcex"] / medians["pack"]
        common.ratio("p2.build_validate_serialise.pack_vs_tcex", speedup, ">= 6", speedup >= GOAL_TCEX)
    else:
        print("B tcex: skipped (--no-tcex, or no .venv/tcex: `make bench` builds it)")
    goal = GOAL_FLOOR.get(sys.version_info[:2], 0.75)
    share = medians["floor"] / medians["pack"]
    common.ratio("p2.build_validate_serialise.pack_vs_floor", share, ">= {}".format(goal), share >= goal)
    common.ratio("p2.build_validate_serialise.pack_vs_floor_with_its_collector_paused",
                 medians["floor_gc_paused"] / medians["pack"])


def complete_phase(args: argparse.Namespace, conf: Dict[str, Any], tcex: Optional[str], url: str) -> None:
    doc = common.make_results(common.tags_for_indicators(args.complete_indicators))
    indicators, groups = pack.build(doc, conf)
    specs = write_specs(indicators, groups)
    try:
        pack_runs, tcex_runs = common.alternate(
            args.repeat, lambda: pack_complete(doc, conf, url),
            (lambda: tcex_run(tcex, specs, url, True, args.tcex_first_poll)) if tcex else None)
    finally:
        os.unlink(specs)
    count = len(indicators)
    pack_median = common.median([r["seconds"] for r in pack_runs])
    first = pack_runs[0]
    print("to Completed, {:,} indicators: A pack {} s -> median {:.3f} s; {} jobs ({} Completed, "
          "{:,} items saved, {} errors); ceil(indicators / 25,000) = {}".format(
              count, common.seconds_list([r["seconds"] for r in pack_runs]), pack_median,
              first["jobs"], first["completed_jobs"], first["success"], first["errors"],
              math.ceil(count / 25000)))
    if first["completed_jobs"] != first["jobs"] or first["success"] != count + len(groups):
        raise RuntimeError("the pack's jobs did not all complete: {}".format(first))
    if not tcex_runs:
        print("B tcex to Completed: skipped (--no-tcex, or no .venv/tcex)")
        return
    if any(r["completed_jobs"] != r["jobs"] or r["success"] != count + len(groups) for r in tcex_runs):
        raise RuntimeError("tcex's jobs did not all complete: {}".format(tcex_runs))
    tcex_median = common.median([r["seconds"] for r in tcex_runs])
    t_first = tcex_runs[0]
    print("to Completed: B tcex {} s -> median {:.3f} s; {} jobs ({} Completed, {:,} items saved, "
          "{} errors); of which tcex's poll sleeps {:.1f} s (median)".format(
              common.seconds_list([r["seconds"] for r in tcex_runs]), tcex_median, t_first["jobs"],
              t_first["completed_jobs"], t_first["success"], t_first["errors"],
              common.median([r["poll_sleep_seconds"] for r in tcex_runs])))
    speedup = tcex_median / pack_median
    common.ratio("p2.to_completed.pack_vs_tcex", speedup, ">= 3", speedup >= GOAL_COMPLETED)
    busy = common.median([r["seconds"] - r["poll_sleep_seconds"] for r in tcex_runs])
    common.ratio("p2.to_completed.pack_vs_tcex_without_its_poll_sleeps", busy / pack_median)


def rss_phase(args: argparse.Namespace) -> None:
    """The input arrives as JSON (as st2 hands an action its parameters) in a new process."""
    tags = common.tags_for_indicators(args.rss_indicators)
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-doc-", delete=False,
                                         encoding="utf-8")
    with handle:
        json.dump(common.make_results(tags), handle)
    try:
        found = common.worker(sys.executable, "bench_indicators.py", ["--rss-worker", handle.name])
    finally:
        os.unlink(handle.name)
    print("peak RSS, one process reading the results document (JSON) and building and serialising "
          "{:,} indicators ({:,} tags): {:.1f} MB (before the build, with the document loaded: "
          "{:.1f} MB)".format(found["indicators"], tags, found["peak_mb"], found["before_mb"]))
    common.figure("p2.peak_rss_mb_at_{}k".format(args.rss_indicators // 1000), found["peak_mb"], "MB",
                  "<= 250", found["peak_mb"] <= GOAL_RSS_MB)


def rss_worker(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        doc = json.load(handle)
    before = common.peak_rss_mb()
    built, groups = pack.build(doc, common.bench_settings())
    pack.serialise(built, groups)
    common.emit({"peak_mb": common.peak_rss_mb(), "before_mb": before, "indicators": len(built)})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=common.tags_for_indicators(100000))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--complete-indicators", type=int, default=10000)
    parser.add_argument("--rss-indicators", type=int, default=100000)
    parser.add_argument("--tcex-python", help="default: .venv/tcex/bin/python when it exists")
    parser.add_argument("--no-tcex", action="store_true", help="side A and the floor only")
    parser.add_argument("--no-complete", action="store_true", help="skip the to-Completed phase")
    parser.add_argument("--tcex-first-poll", type=float, help=argparse.SUPPRESS)  # smoke test only
    parser.add_argument("--rss-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_worker:
        return rss_worker(args.rss_worker)
    common.header("P2 indicators", "{:,} tags, {} runs each".format(args.tags, args.repeat))
    conf = common.bench_settings()
    tcex = None if args.no_tcex else common.tcex_python(args.tcex_python)
    os.environ["BENCH_TC_SECRET"] = SECRET
    emulator_args = ["--port", "0", "--access-id", ACCESS_ID, "--secret-key", SECRET, "--owner", OWNER,
                     "--queued-polls", "0", "--running-polls", "0"]
    with common.EmulatorProcess(sys.executable, "tests.emulators.threatconnect", emulator_args) as tc:
        build_phase(args, conf, tcex, tc.url)
        if not args.no_complete:
            complete_phase(args, conf, tcex, tc.url)
    rss_phase(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
