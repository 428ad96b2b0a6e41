#!/usr/bin/env python
"""Side B of the indicator bench: tcex (ThreatConnect's own framework), in its own virtualenv.

Reads the indicators and groups the pack built (a JSON file, untimed) and, timed, builds the
same ones with tcex's V2 batch API objects (``Batch.indicator``/``Batch.file``/
``Batch.report``, then ``.tag()``, ``.security_label()``, ``.attribute()``,
``.association()`` and ``.occurrence()`` per indicator, the URL -> Host association as
``associatedIndicators``) and serialises its batch data the way ``Batch.submit_all`` does
(``Batch.data`` chunk after chunk, each ``json.dumps``'d with its settings for
``createAndUpload``). With ``--url`` it instead submits them to the ThreatConnect emulator with
``Batch.submit_all(poll=True, errors=True)`` through tcex's own ``TcSession`` with HMAC auth,
and times that to Completed. Prints one RESULT line (common.emit).

    .venv/tcex/bin/python bench/tcex_worker.py --input specs.json [--url URL --access-id ID --secret-key KEY]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emit  # noqa: E402

from tcex.api.tc.v2.batch import Batch  # noqa: E402
from tcex.input.field_type.sensitive import Sensitive  # noqa: E402
from tcex.requests_tc.auth.hmac_auth import HmacAuth  # noqa: E402
from tcex.requests_tc.tc_session import TcSession  # noqa: E402

OWNER = "Example Org"
# ThreatConnect refuses uploads over 2,000,000 bytes (the emulator too); tcex chunks at 5,000
# items or 75 MB by default, so its byte cap is lowered to fit (its own count is
# sys.getsizeof of each item's JSON: a little over the real size, so the chunks fit).
MAX_CHUNK_BYTES = 2000000 - 4096


def new_batch(session: Any, temp: str) -> Any:
    """A Batch as an App gets it (tcex's default write types), chunks capped at 2 MB."""
    inputs = SimpleNamespace(model=SimpleNamespace(tc_temp_path=__import__("pathlib").Path(temp)))
    batch = Batch(inputs, session, OWNER, action="Create", halt_on_error=False,
                  attribute_write_type="Replace", tag_write_type="Append",
                  security_label_write_type="Append")
    batch._batch_max_size = MAX_CHUNK_BYTES  # noqa: SLF001 - tcex has no setter for it
    return batch


def _details(obj: Any, spec: Mapping[str, Any]) -> None:
    for tag in spec.get("tag", ()):
        obj.tag(tag["name"])
    for label in spec.get("securityLabel", ()):
        obj.security_label(label["name"])
    for attribute in spec.get("attribute", ()):
        obj.attribute(attribute["type"], attribute["value"], displayed=attribute.get("displayed", False))


def add_all(batch: Any, indicators: List[Dict[str, Any]], groups: List[Dict[str, Any]]) -> None:
    """The pack's indicators and groups as tcex batch objects."""
    for spec in groups:
        group = batch.report(spec["name"], file_name=spec.get("fileName"),
                             publish_date=spec.get("publishDate"), xid=spec["xid"])
        _details(group, spec)
    for spec in indicators:
        kwargs = {"rating": spec["rating"], "confidence": spec["confidence"]}
        for key in ("firstSeen", "lastSeen"):
            if key in spec:
                kwargs[key] = spec[key]
        if spec["type"] == "File":
            obj = batch.file(md5=spec.get("md5"), sha1=spec.get("sha1"), sha256=spec.get("sha256"),
                             size=spec.get("size"), **kwargs)
            for occurrence in spec.get("fileOccurrence", ()):
                obj.occurrence(file_name=occurrence.get("fileName"), path=occurrence.get("path"),
                               date=occurrence.get("date"))
        else:
            obj = batch.indicator(spec["type"], spec["summary"], **kwargs)
        _details(obj, spec)
        for ref in spec.get("associatedGroups", ()):
            obj.association(ref["groupXid"])
        if "associatedIndicators" in spec:
            obj.add_key_value("associatedIndicators", spec["associatedIndicators"])


def serialise_all(batch: Any) -> Dict[str, int]:
    """What submit_all puts on the wire, chunk by chunk, without sending it."""
    jobs = size = 0
    while True:
        content = batch.data
        if not content.get("group") and not content.get("indicator") and not content.get("association"):
            break
        content.pop("file", None)
        size += len(json.dumps(batch.settings)) + len(json.dumps(content))
        jobs += 1
    return {"jobs": jobs, "bytes": size}


class SleepClock:
    """Counts the seconds tcex's poll loop sleeps (time.sleep), sleeping them all."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._sleep = time.sleep

    def __call__(self, seconds: float) -> None:
        self.seconds += seconds
        self._sleep(seconds)


def run_build(indicators: List[Dict[str, Any]], groups: List[Dict[str, Any]], temp: str,
              setup_url: str, access_id: str, secret_key: str) -> Dict[str, Any]:
    session = TcSession(HmacAuth(access_id, Sensitive(secret_key)), base_url=setup_url)
    batch = new_batch(session, temp)  # reads the indicator types once (untimed)
    start = time.perf_counter()
    add_all(batch, indicators, groups)
    built = time.perf_counter()
    out = serialise_all(batch)
    done = time.perf_counter()
    batch.close()
    return dict(out, build_seconds=built - start, serialise_seconds=done - built,
                seconds=done - start, indicators=len(indicators))


def run_complete(indicators: List[Dict[str, Any]], groups: List[Dict[str, Any]], temp: str,
                 url: str, access_id: str, secret_key: str, first_poll: Any = None) -> Dict[str, Any]:
    session = TcSession(HmacAuth(access_id, Sensitive(secret_key)), base_url=url)
    batch = new_batch(session, temp)
    if first_poll is not None:
        batch._poll_interval = first_poll  # noqa: SLF001
    clock = SleepClock()
    time.sleep = clock  # tcex's poll calls time.sleep through the module
    try:
        start = time.perf_counter()
        add_all(batch, indicators, groups)
        statuses = batch.submit_all(poll=True, errors=True, process_files=False, halt_on_error=True)
        done = time.perf_counter()
    finally:
        time.sleep = clock._sleep
    batch.close()
    completed = [s for s in statuses if isinstance(s, dict) and s.get("status") == "Completed"]
    return {"seconds": done - start, "jobs": len(statuses), "completed_jobs": len(completed),
            "success": sum(int(s.get("successCount") or 0) for s in completed),
            "errors": sum(int(s.get("errorCount") or 0) for s in completed),
            "poll_sleep_seconds": clock.seconds, "indicators": len(indicators)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="JSON {indicators, groups} the pack built")
    parser.add_argument("--url", required=True, help="the TC emulator's API URL")
    parser.add_argument("--access-id", required=True)
    parser.add_argument("--secret-key-env", default="BENCH_TC_SECRET",
                        help="environment variable holding the emulator's secret key")
    parser.add_argument("--complete", action="store_true", help="submit to Completed")
    parser.add_argument("--first-poll", type=float,
                        help="seconds before tcex's first status poll (default: tcex's own, 15 s; "
                             "only the smoke test shortens it)")
    args = parser.parse_args()
    with open(args.input, encoding="utf-8") as handle:
        specs = json.load(handle)
    secret = os.environ[args.secret_key_env]
    with tempfile.TemporaryDirectory(prefix="bench-tcex-") as temp:
        if args.complete:
            emit(run_complete(specs["indicators"], specs["groups"], temp, args.url, args.access_id,
                              secret, args.first_poll))
        else:
            emit(run_build(specs["indicators"], specs["groups"], temp, args.url, args.access_id, secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
