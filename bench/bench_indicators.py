#!/usr/bin/env python
"""Benchmark of lib.indicators + lib.threatconnect: build, validate, serialise (not a test).

Generates a realistic synthetic submission results document (default 200,000
tags: domains, IPv4, IPv6, URLs, e-mail addresses, attribution tags, with
duplicates across files and static/dynamic, safelisted, private, invalid,
defanged and internationalised values), then times what the pack does with it:

    result = build_indicators(doc, settings)                  # build + validate
    for job in iter_jobs(result.groups, result.indicators,    # serialise into
                         max_items, max_bytes, rejected): ... # batch bodies

``iter_jobs`` is what ``ThreatConnectClient.submit`` (and ``tc_batch_upload``)
run, with the schema's default batch limits (25,000 items, 2,000,000 bytes).
The garbage collector stays as the process has it; the time it spends is
measured (gc.callbacks) and printed. Prints indicators per second for the
whole and per phase with the ratio to the 200,000 indicators/s target, checks
once (untimed) that the bodies are byte for byte the plain compact encoder's
(and how long that plain encoder takes: the serialisation before the fast
path), and prints the tracemalloc peak of build + serialise at three sizes
with the marginal bytes per tag between them (memory is linear when the
marginal figures agree, within the steps of dicts growing by doubling; the
fixed part is the batch body being filled).

    .venv/py311/bin/python bench/bench_indicators.py [--tags 200000] [--repeat 3]
"""
import argparse
import gc
import hashlib
import os
import random
import sys
import time
import tracemalloc

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for sub in (os.path.join("actions", "lib"), "actions"):
    sys.path.insert(0, os.path.join(PACK_DIR, sub))

from lib.config import apply_defaults, load_schema  # noqa: E402
from lib.indicators import build_indicators  # noqa: E402
from lib.tc_batch_bodies import iter_jobs, plain_text as _encode_item  # noqa: E402

_TC_DEFAULTS = apply_defaults({}, load_schema()["properties"]["threatconnect"])
MAX_ITEMS = int(_TC_DEFAULTS["batch_max_items"])
MAX_BYTES = int(_TC_DEFAULTS["batch_max_bytes"])
TARGET = 200000
TLDS = ("com", "net", "org", "ru", "info", "top", "xyz", "cn", "io", "de", "co.uk", "com.br")
WORDS = ("secure", "login", "update", "cdn", "mail", "api", "paypal", "micro", "soft", "bank",
         "verify", "account", "cloud", "static", "files", "drive", "online", "service", "web")
IDN = ("bücher", "müller", "почта", "例え", "café", "straße")
FAMILIES = ("EMOTET", "QAKBOT", "COBALTSTRIKE", "ASYNCRAT", "AGENTTESLA", "REDLINE", "LOKIBOT")


def _hex(seed: str, size: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:size]


def settings() -> dict:
    return {
        "mapping": {"min_h_type": "suspicious", "drop_safelisted": True,
                    "drop_private_addresses": True, "min_file_score": 300,
                    "include_extracted_files": True, "max_indicators_per_submission": 10 ** 9,
                    "group_type": "Report", "source_tag": "Assemblyline",
                    "max_attribution_tags": 10},
        "threatconnect": {"owner": "Example Org", "default_rating": 3, "default_confidence": 50},
    }


def make_results(n_tags: int, seed: int = 1) -> dict:
    rnd = random.Random(seed)
    sid = "4aBcDeFgHiJkLmNoPqRsTu"
    files = []
    for index in range(60):
        key = "file-{}".format(index)
        files.append({"name": "a.exe" if index == 0 else "extracted_{}.bin".format(index),
                      "sha256": _hex(key, 64), "md5": hashlib.md5(key.encode()).hexdigest(),
                      "sha1": hashlib.sha1(key.encode()).hexdigest(), "size": 1000 + index,
                      "type": "executable/windows/pe32", "extracted": index > 0,
                      "parent_sha256": None if index == 0 else _hex("file-0", 64)})
    shas = [f["sha256"] for f in files]

    def host(i: int) -> str:
        return "{}-{}{}.{}".format(rnd.choice(WORDS), rnd.choice(WORDS), i, rnd.choice(TLDS))

    def public_ipv4() -> str:
        while True:
            first = rnd.randint(1, 223)
            if first not in (10, 100, 127, 169, 172, 192, 198, 203):
                return "{}.{}.{}.{}".format(first, rnd.randint(0, 255), rnd.randint(0, 255),
                                            rnd.randint(1, 254))

    # Like the Assemblyline summary: one tuple per (type, value), the files that
    # produced it in sha256s. Duplicates are the same value under the static and
    # the dynamic type, or spelled differently (case, defanged).
    tags = []
    seen = set()
    recent = []
    i = 0
    while len(tags) < n_tags:
        i += 1
        roll = rnd.random()
        h_type = rnd.choices(("malicious", "suspicious", "info", "safe"), (45, 40, 12, 3))[0]
        safelisted = rnd.random() < 0.03
        if recent and roll < 0.10:
            tag_type, value = rnd.choice(recent)
            if "static" in tag_type:
                tag_type = tag_type.replace("static", "dynamic")
            elif "dynamic" in tag_type:
                tag_type = tag_type.replace("dynamic", "static")
            else:
                value = value.upper()
        elif roll < 0.40:
            tag_type = "network.static.domain" if rnd.random() < 0.6 else "network.dynamic.domain"
            special = rnd.random()
            if special < 0.01:
                value = "{}{}.{}".format(rnd.choice(IDN), i, rnd.choice(("example", "de", "com")))
            elif special < 0.02:
                value = "{}{}[.]com".format(rnd.choice(WORDS), i)
            elif special < 0.035:
                value = rnd.choice(("host{}.corp.local".format(i), "WPAD{}".format(i),
                                    "printer{}.lan".format(i)))
            elif special < 0.045:
                value = rnd.choice(("bad_name{}.com".format(i), "-x{}.net".format(i),
                                    "a..b{}.org".format(i)))
            else:
                value = host(i)
        elif roll < 0.62:
            tag_type = "network.dynamic.ip" if rnd.random() < 0.7 else "network.static.ip"
            special = rnd.random()
            if special < 0.15:
                value = "2a0{}:{:x}:{:x}::{:X}".format(rnd.randint(0, 9), rnd.randint(0, 65535),
                                                      rnd.randint(0, 65535), rnd.randint(1, 65535))
            elif special < 0.20:
                value = rnd.choice(("10.{}.{}.{}", "192.168.{}.{}{}", "172.16.{}.{}{}",
                                    "127.0.{}.{}{}")).format(rnd.randint(0, 255), rnd.randint(0, 25),
                                                            rnd.randint(1, 9))
            elif special < 0.22:
                value = "{}.{}.300.{}".format(rnd.randint(1, 200), rnd.randint(0, 255), i % 250)
            else:
                value = public_ipv4()
        elif roll < 0.90:
            tag_type = "network.static.uri" if rnd.random() < 0.5 else "network.dynamic.uri"
            special = rnd.random()
            path = "/{}/{}.php?id={}&k={}".format(rnd.choice(WORDS), rnd.choice(WORDS), i,
                                                   _hex(str(i), 12))
            if special < 0.02:
                value = "hxxp://{}{}".format(host(i).replace(".", "[.]", 1), path)
            elif special < 0.04:
                value = "http://{}:8080{}".format(public_ipv4(), path)
            elif special < 0.05:
                value = "tcp://{}:4444".format(public_ipv4())
            elif special < 0.06:
                value = "http://192.168.1.{}{}".format(rnd.randint(1, 254), path)
            else:
                value = "{}://{}{}".format(rnd.choice(("http", "https", "HTTPS")),
                                           host(i).upper() if special < 0.1 else host(i), path)
        elif roll < 0.99:
            tag_type = "network.email.address"
            value = "{}.{}{}@{}".format(rnd.choice(WORDS), rnd.choice(WORDS), i, host(i))
            if rnd.random() < 0.02:
                value = "broken{}@@{}".format(i, host(i))
        else:
            tag_type = rnd.choice(("file.behavior", "technique.obfuscation", "file.config"))
            value = "behaviour {}".format(i)
        if (tag_type, value) in seen:
            continue
        seen.add((tag_type, value))
        if rnd.random() < 0.2:
            recent.append((tag_type, value))
            if len(recent) > 1000:
                recent.pop(0)
        tags.append({"group": "ioc", "type": tag_type, "value": value, "h_type": h_type,
                     "safelisted": safelisted, "classification": "TLP:C",
                     "sha256s": rnd.sample(shas, rnd.choice((1, 1, 1, 2, 3)))})
    # A realistic handful of attribution tags, each from a few files.
    for index, family in enumerate(FAMILIES):
        tags.append({"group": "attribution", "type": "attribution.family", "value": family,
                     "h_type": "malicious", "safelisted": False, "classification": "TLP:C",
                     "sha256s": rnd.sample(shas, 3)})
        tags.append({"group": "attribution", "type": "av.virus_name",
                     "value": "Win.Trojan.{}-{}".format(family.title(), 9000 + index),
                     "h_type": "malicious", "safelisted": False, "classification": "TLP:C",
                     "sha256s": rnd.sample(shas, 2)})
    tags.append({"group": "attribution", "type": "attribution.actor", "value": "TA542",
                 "h_type": "malicious", "safelisted": False, "classification": "TLP:C",
                 "sha256s": [shas[0]]})
    rnd.shuffle(tags)
    return {"sid": sid, "state": "completed", "max_score": 2300, "verdict": "malicious",
            "error_count": 0, "partial": False, "classification": "TLP:C",
            "submitted_at": "2026-11-22T10:00:00.000000Z",
            "metadata": {"file_path": "/data/drop/a.exe", "hostname": "edr-7",
                         "ingest_id": "5xYz", "sha256": shas[0]},
            "files": files, "tags": tags,
            "al_url": "https://al.example.org/submission/" + sid}


class GcClock:
    """Seconds the cyclic garbage collector ran while installed (gc.callbacks)."""

    def __init__(self):
        self.seconds = 0.0
        self.collections = 0
        self._started = None

    def __call__(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1
            self._started = None

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def serialise(result, rejected):
    """The batch bodies as submit makes them; returns (jobs, bytes). Bodies are dropped."""
    jobs = size = 0
    for job in iter_jobs(result.groups, result.indicators, MAX_ITEMS, MAX_BYTES, rejected):
        jobs += 1
        size += len(job.body)
    return jobs, size


def timed_run(doc: dict, conf: dict):
    gc.collect()
    rejected = []
    with GcClock() as build_gc:
        start = time.perf_counter()
        result = build_indicators(doc, conf)
        built = time.perf_counter()
    with GcClock() as serialise_gc:
        jobs, size = serialise(result, rejected)
        done = time.perf_counter()
    return {"result": result, "build": built - start, "serialise": done - built, "jobs": jobs,
            "bytes": size, "rejected": len(rejected), "build_gc": build_gc.seconds,
            "serialise_gc": serialise_gc.seconds}


_FLOOR_KINDS = {"network.static.ip": "Address", "network.dynamic.ip": "Address",
                "network.static.domain": "Host", "network.dynamic.domain": "Host",
                "network.static.uri": "URL", "network.dynamic.uri": "URL",
                "network.email.address": "EmailAddress"}


def floor_run(doc: dict):
    """The least any pure-Python build + serialise of this input can do (not the pack's code).

    One read of each tag, the indicator types kept, the value stripped and
    lower-cased in place of every check, the first sighting per value kept,
    sorted, one dict per indicator sharing its lists, and the same ``iter_jobs``.
    No filter, no validation, no merging, no attribution, no labels. Returns
    (indicators, seconds): the ceiling this machine and interpreter put on any
    implementation, so the pack's own figure can be read against it."""
    gc.collect()
    start = time.perf_counter()
    buckets = {kind: {} for kind in set(_FLOOR_KINDS.values())}
    kinds = _FLOOR_KINDS
    for tag in doc["tags"]:
        kind = kinds.get(tag["type"])
        if kind is not None:
            bucket = buckets[kind]
            value = tag["value"].strip().lower()
            if value not in bucket:
                bucket[value] = tag
    tags, attributes = [{"name": "Assemblyline"}], [{"type": "Description", "value": "x",
                                                     "displayed": True}]
    groups = [{"groupXid": "x"}]
    indicators = [{"type": kind, "summary": value, "rating": 3, "confidence": 60, "tag": tags,
                   "attribute": attributes, "associatedGroups": groups}
                  for kind in sorted(buckets) for value in sorted(buckets[kind])]
    for _ in iter_jobs([], indicators, MAX_ITEMS, MAX_BYTES, []):
        pass
    return len(indicators), time.perf_counter() - start


def plain_bodies_match(result):
    """(every body is byte for byte what one plain encoder call per item gives, seconds
    those plain calls took): the check, and the serialisation before the fast path."""
    groups = iter(result.groups)
    indicators = iter(result.indicators)
    plain_seconds = 0.0

    def plain(items, count):
        nonlocal plain_seconds
        start = time.perf_counter()
        data = b",".join(_encode_item(next(items)).encode("utf-8") for _ in range(count))
        plain_seconds += time.perf_counter() - start
        return data

    same = True
    for job in iter_jobs(result.groups, result.indicators, MAX_ITEMS, MAX_BYTES, []):
        expected = b"".join((b'{"group":[', plain(groups, job.groups), b'],"indicator":[',
                             plain(indicators, job.indicators), b"]}"))
        same = same and job.body == expected
    return same and next(groups, None) is None and next(indicators, None) is None, plain_seconds


def peak_memory(n_tags: int, conf: dict) -> int:
    """tracemalloc peak (bytes) of build + serialise, the input document excluded."""
    doc = make_results(n_tags)
    gc.collect()
    tracemalloc.start()
    result = build_indicators(doc, conf)
    serialise(result, [])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return peak


def calibration_seconds() -> float:
    """A fixed pure-Python loop, to compare this machine with others (best of 3)."""
    best = None
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for number in range(10 ** 7):
            total += number
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=200000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    conf = settings()
    calibration = calibration_seconds()
    print("python {} | {} input tags | calibration loop (10M additions): {:.2f} s".format(
        sys.version.split()[0], args.tags, calibration))
    doc = make_results(args.tags)
    runs = [timed_run(doc, conf) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["build"] + r["serialise"])
    result = best["result"]
    n = len(result.indicators)
    counts = result.counts
    print("indicators out: {}  rejected: {}  filtered: safelisted {} below_h_type {} private {} "
          "duplicates merged {} refanged {}".format(
              n, len(result.rejected), counts["safelisted"], counts["below_h_type"],
              counts["private"], counts["duplicate"], counts["refanged"]))
    total = best["build"] + best["serialise"]
    print("build+validate {:.3f} s (gc {:.3f} s), serialise {:.3f} s (gc {:.3f} s) into {} batch "
          "bodies ({:.1f} MB, {} items rejected), total {:.3f} s (best of {})".format(
              best["build"], best["build_gc"], best["serialise"], best["serialise_gc"],
              best["jobs"], best["bytes"] / 1e6, best["rejected"], total, args.repeat))
    rate = n / total
    print("indicators/s: {:,.0f}  (ratio to {:,}/s target: {:.2f})".format(rate, TARGET, rate / TARGET))
    print("input tags/s: {:,.0f}  (ratio to target: {:.2f})".format(args.tags / total,
                                                                  args.tags / total / TARGET))
    for phase in ("build", "serialise"):
        phase_rate = n / best[phase]
        print("{} only: {:,.0f} indicators/s (ratio to target {:.2f}; {:.0%} of the time)".format(
            phase, phase_rate, phase_rate / TARGET, best[phase] / total))
    floor_n, floor_s = min((floor_run(doc) for _ in range(args.repeat)), key=lambda r: r[1])
    print("floor (no checks at all, see floor_run): {:,.0f} indicators/s (ratio to target {:.2f}); "
          "the pack runs at {:.2f} of the floor".format(floor_n / floor_s, floor_n / floor_s / TARGET,
                                                       rate / (floor_n / floor_s)))
    same, plain_s = plain_bodies_match(result)
    print("bodies identical to the plain encoder's: {} (plain encoder, one call per item: "
          "{:.3f} s, {:,.0f} indicators/s)".format(same, plain_s, n / plain_s))
    del runs, best, result
    sizes = [max(args.tags // 4, 1000), max(args.tags // 2, 2000), max(args.tags, 4000)]
    peaks = [peak_memory(size, conf) for size in sizes]
    marginal = [(peaks[i + 1] - peaks[i]) / (sizes[i + 1] - sizes[i]) for i in (0, 1)]
    print("peak traced memory (build + serialise): " + ", ".join(
        "{:.1f} MB at {} tags".format(peak / 1e6, size) for peak, size in zip(peaks, sizes)))
    print("  = {:.1f} MB fixed (the body being filled) + {:.0f} B per tag; marginal B/tag "
          "{:.0f} then {:.0f} (ratio {:.2f}; 1.00 = linear, +-0.2 from dicts doubling)".format(
              (peaks[2] - marginal[1] * sizes[2]) / 1e6, marginal[1], marginal[0], marginal[1],
              marginal[1] / marginal[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
