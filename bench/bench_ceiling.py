#!/usr/bin/env python
"""The 16 MB ceiling StackStorm puts on the chain ``build_indicators -> tc_submit_indicators``.

st2 stores each action's result, and each action's parameters, as one database document of
at most 16 MB (16,777,216 bytes). The ``build_indicators`` action's result (the indicators, the
group, the rejected values, the counts) becomes ``tc_submit_indicators``' parameters. This runs
the real action (st2 stand-in) on the bench's realistic results document at growing sizes,
measures its result as st2 would store it (JSON, UTF-8), and bisects the indicator count at
which it passes 16 MB; it also gives the size of the ``get_submission_results`` result (the
document itself, also ``build_indicators``' parameters when passed as ``results``).

    .venv/py311/bin/python bench/bench_ceiling.py
"""
import argparse
import json
import os
import sys
from typing import Any, Dict, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import pack_adapter as pack  # noqa: E402

ST2_LIMIT = 16 * 1024 * 1024


def stored_size(value: Any) -> int:
    """Bytes of a document as st2 stores it (JSON, UTF-8, no ASCII escapes: orjson's way)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def measure(run: Any, tags: int) -> Dict[str, int]:
    doc = common.make_results(tags)
    result = run(doc)
    if isinstance(result, tuple):
        raise RuntimeError("build_indicators failed: {}".format(result[1]))
    return {"tags": tags, "indicators": len(result["indicators"]), "result": stored_size(result),
            "results_doc": stored_size(doc)}


def bisect(run: Any, limit: int) -> Tuple[Dict[str, int], Dict[str, int]]:
    """(largest measured size under the limit, smallest over it), to within 0.5 % in tags."""
    probe = measure(run, max(limit // 800, 200))
    per_tag = probe["result"] / probe["tags"]
    low, high = None, None
    guess = int(limit / per_tag)
    for tags in (int(guess * 0.97), int(guess * 1.03)):
        found = measure(run, tags)
        if found["result"] > limit:
            high = found if high is None or found["tags"] < high["tags"] else high
        else:
            low = found if low is None or found["tags"] > low["tags"] else low
    while low is None:
        found = measure(run, int(high["tags"] * 0.9))
        low, high = (found, high) if found["result"] <= limit else (None, found)
    while high is None:
        found = measure(run, int(low["tags"] * 1.1))
        low, high = (low, None) if found["result"] <= limit else (low, found)
    while high["tags"] - low["tags"] > max(50, low["tags"] // 200):
        found = measure(run, (low["tags"] + high["tags"]) // 2)
        if found["result"] > limit:
            high = found
        else:
            low = found
    return low, high


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=ST2_LIMIT, help="bytes (default st2's 16 MB)")
    args = parser.parse_args()
    common.header("16 MB ceiling", "build_indicators action result over {:,} bytes, bisected".format(
        args.limit))
    run = pack.build_action(common.bench_settings()["mapping"])
    low, high = bisect(run, args.limit)
    per_indicator = high["result"] / high["indicators"]
    print("build_indicators result: {:,} bytes at {:,} indicators ({:,} tags); {:,} bytes at {:,} "
          "indicators ({:,} tags); about {:.0f} bytes per indicator".format(
              low["result"], low["indicators"], low["tags"], high["result"], high["indicators"],
              high["tags"], per_indicator))
    print("get_submission_results result (the document) at that size: {:,} bytes ({:.0f} per tag)".format(
        high["results_doc"], high["results_doc"] / high["tags"]))
    common.figure("ceiling.build_indicators_result_over_limit_at_indicators", high["indicators"])
    common.figure("ceiling.results_document_bytes_per_tag", high["results_doc"] / high["tags"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
