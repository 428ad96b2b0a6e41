"""What every bench shares (standard library only: tcex's own virtualenv imports it too).

* ``calibration_seconds()``: a fixed pure-Python loop, printed first by every bench so figures
  from different machines (or runs) can be scaled against each other;
* ``alternate()``: runs A and B in turn (A, B, A, B ...) and returns both lists of results;
  ``median()`` of them is what the benches report;
* ``ratio()``: prints one ``RATIO name: value`` line (the smoke test looks for these), with the
  goal from issue 14 and whether it is met;
* ``make_results()``: the synthetic submission results document (the shape
  ``get_submission_results`` returns) every indicator bench uses, and ``bench_settings()``;
* ``worker()``: runs one measurement in another interpreter and reads back its JSON line;
* ``peak_rss_mb()``: this process's peak resident set size.
"""
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "RESULT "
TLDS = ("com", "net", "org", "ru", "info", "top", "xyz", "cn", "io", "de", "co.uk", "com.br")
WORDS = ("secure", "login", "update", "cdn", "mail", "api", "paypal", "micro", "soft", "bank",
         "verify", "account", "cloud", "static", "files", "drive", "online", "service", "web")
IDN = ("bücher", "müller", "почта", "例え", "café", "straße")
FAMILIES = ("EMOTET", "QAKBOT", "COBALTSTRIKE", "ASYNCRAT", "AGENTTESLA", "REDLINE", "LOKIBOT")
# Most tags carry the submission's TLP:AMBER; some are greener (TLP:CLEAR is not sent as a label).
CLASSIFICATIONS = ("TLP:A", "TLP:G", "TLP:C")
CLASSIFICATION_WEIGHTS = (80, 15, 5)


# ------------------------------------------------------------------ timing and reporting

def calibration_seconds() -> float:
    """A fixed pure-Python loop (10 million additions), best of 3."""
    best = None
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for number in range(10 ** 7):
            total += number
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def header(bench: str, detail: str) -> float:
    """Print the bench's first line (interpreter, calibration) and return the calibration."""
    calibration = calibration_seconds()
    print("{} | python {} | {} | calibration loop (10M additions, best of 3): {:.3f} s".format(
        bench, sys.version.split()[0], detail, calibration), flush=True)
    return calibration


def alternate(repeat: int, run_a: Callable[[], Any], run_b: Optional[Callable[[], Any]]
              ) -> Tuple[List[Any], List[Any]]:
    """``repeat`` runs of A and of B, in turn: A, B, A, B ... (B skipped when None)."""
    a_results, b_results = [], []
    for _ in range(repeat):
        a_results.append(run_a())
        if run_b is not None:
            b_results.append(run_b())
    return a_results, b_results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def seconds_list(values: Sequence[float]) -> str:
    return ", ".join("{:.3f}".format(v) for v in values)


def ratio(name: str, value: float, goal: Optional[str] = None, met: Optional[bool] = None) -> None:
    """One ``RATIO`` line: ``RATIO p2.build_vs_tcex: 6.12 (goal >= 6: met)``."""
    tail = ""
    if goal is not None:
        tail = " (goal {}: {})".format(goal, "met" if met else "NOT met")
    print("RATIO {}: {:.3f}{}".format(name, value, tail), flush=True)


def figure(name: str, value: Any, unit: str = "", goal: Optional[str] = None,
           met: Optional[bool] = None) -> None:
    """One ``FIGURE`` line, for the non-ratio figures with a goal (RSS, requests per message)."""
    tail = " (goal {}: {})".format(goal, "met" if met else "NOT met") if goal is not None else ""
    shown = "{:.4g}".format(value) if isinstance(value, float) else str(value)
    print("FIGURE {}: {}{}{}".format(name, shown, (" " + unit) if unit else "", tail), flush=True)


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------ other interpreters

def emit(result: Dict[str, Any]) -> None:
    """A worker's answer: one JSON line after RESULT_PREFIX."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def worker(python: str, script: str, args: Sequence[str], timeout: float = 600) -> Dict[str, Any]:
    """Run ``python script args...`` from the pack root and return its RESULT line."""
    env = dict(os.environ, PYTHONPATH=PACK_DIR, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([python, os.path.join(PACK_DIR, "bench", script)] + list(args),
                          cwd=PACK_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, check=False)
    lines = [line for line in done.stdout.decode("utf-8", "replace").splitlines()
             if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError("{} {} failed (exit {}):\n{}".format(
            script, " ".join(args), done.returncode, done.stderr.decode("utf-8", "replace")[-3000:]))
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def tcex_python(explicit: Optional[str] = None) -> Optional[str]:
    """tcex's own interpreter (``make bench`` builds .venv/tcex), or None when it is missing."""
    path = explicit or os.path.join(PACK_DIR, ".venv", "tcex", "bin", "python")
    return path if os.path.exists(path) else None


# ------------------------------------------------------------------ the input document

def bench_settings() -> Dict[str, Any]:
    """The mapping every indicator bench uses (the pack's defaults, no per-submission cap)."""
    return {
        "mapping": {"min_h_type": "suspicious", "drop_safelisted": True,
                    "drop_private_addresses": True, "min_file_score": 300,
                    "include_extracted_files": True, "max_indicators_per_submission": 10 ** 9,
                    "group_type": "Report", "source_tag": "Assemblyline",
                    "max_attribution_tags": 10},
        "threatconnect": {"owner": "Example Org", "default_rating": 3, "default_confidence": 50},
    }


def _hex(seed: str, size: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:size]


def _files(count: int) -> List[Dict[str, Any]]:
    files = []
    for index in range(count):
        key = "file-{}".format(index)
        files.append({"name": "a.exe" if index == 0 else "extracted_{}.bin".format(index),
                      "sha256": _hex(key, 64), "md5": hashlib.md5(key.encode()).hexdigest(),
                      "sha1": hashlib.sha1(key.encode()).hexdigest(), "size": 1000 + index,
                      "type": "executable/windows/pe32", "extracted": index > 0,
                      "parent_sha256": None if index == 0 else _hex("file-0", 64)})
    return files


class _Values:
    """Random indicator values of each kind, some odd (defanged, private, invalid, IDN)."""

    def __init__(self, rnd: random.Random):
        self.rnd = rnd

    def host(self, i: int) -> str:
        rnd = self.rnd
        return "{}-{}{}.{}".format(rnd.choice(WORDS), rnd.choice(WORDS), i, rnd.choice(TLDS))

    def public_ipv4(self) -> str:
        rnd = self.rnd
        while True:
            first = rnd.randint(1, 223)
            if first not in (10, 100, 127, 169, 172, 192, 198, 203):
                return "{}.{}.{}.{}".format(first, rnd.randint(0, 255), rnd.randint(0, 255),
                                            rnd.randint(1, 254))

    def domain(self, i: int) -> Tuple[str, str]:
        rnd = self.rnd
        tag_type = "network.static.domain" if rnd.random() < 0.6 else "network.dynamic.domain"
        special = rnd.random()
        if special < 0.01:
            return tag_type, "{}{}.{}".format(rnd.choice(IDN), i, rnd.choice(("example", "de", "com")))
        if special < 0.02:
            return tag_type, "{}{}[.]com".format(rnd.choice(WORDS), i)
        if special < 0.035:
            return tag_type, rnd.choice(("host{}.corp.local".format(i), "WPAD{}".format(i),
                                         "printer{}.lan".format(i)))
        if special < 0.045:
            return tag_type, rnd.choice(("bad_name{}.com".format(i), "-x{}.net".format(i),
                                         "a..b{}.org".format(i)))
        return tag_type, self.host(i)

    def address(self, i: int) -> Tuple[str, str]:
        rnd = self.rnd
        tag_type = "network.dynamic.ip" if rnd.random() < 0.7 else "network.static.ip"
        special = rnd.random()
        if special < 0.15:
            return tag_type, "2a0{}:{:x}:{:x}::{:X}".format(
                rnd.randint(0, 9), rnd.randint(0, 65535), rnd.randint(0, 65535), rnd.randint(1, 65535))
        if special < 0.20:
            return tag_type, rnd.choice(("10.{}.{}.{}", "192.168.{}.{}{}", "172.16.{}.{}{}",
                                         "127.0.{}.{}{}")).format(rnd.randint(0, 255),
                                                                 rnd.randint(0, 25), rnd.randint(1, 9))
        if special < 0.22:
            return tag_type, "{}.{}.300.{}".format(rnd.randint(1, 200), rnd.randint(0, 255), i % 250)
        return tag_type, self.public_ipv4()

    def url(self, i: int) -> Tuple[str, str]:
        rnd = self.rnd
        tag_type = "network.static.uri" if rnd.random() < 0.5 else "network.dynamic.uri"
        special = rnd.random()
        path = "/{}/{}.php?id={}&k={}".format(rnd.choice(WORDS), rnd.choice(WORDS), i, _hex(str(i), 12))
        if special < 0.02:
            return tag_type, "hxxp://{}{}".format(self.host(i).replace(".", "[.]", 1), path)
        if special < 0.04:
            return tag_type, "http://{}:8080{}".format(self.public_ipv4(), path)
        if special < 0.05:
            return tag_type, "tcp://{}:4444".format(self.public_ipv4())
        if special < 0.06:
            return tag_type, "http://192.168.1.{}{}".format(rnd.randint(1, 254), path)
        host = self.host(i).upper() if special < 0.1 else self.host(i)
        return tag_type, "{}://{}{}".format(rnd.choice(("http", "https", "HTTPS")), host, path)

    def email(self, i: int) -> Tuple[str, str]:
        rnd = self.rnd
        value = "{}.{}{}@{}".format(rnd.choice(WORDS), rnd.choice(WORDS), i, self.host(i))
        if rnd.random() < 0.02:
            value = "broken{}@@{}".format(i, self.host(i))
        return "network.email.address", value


def _sighting(rnd: random.Random, recent: List[Tuple[str, str]], values: _Values,
              i: int) -> Tuple[str, str]:
    """(tag type, value) of one new tag; about 10 % repeat a recent value (other type or case)."""
    roll = rnd.random()
    if recent and roll < 0.10:
        tag_type, value = rnd.choice(recent)
        if "static" in tag_type:
            return tag_type.replace("static", "dynamic"), value
        if "dynamic" in tag_type:
            return tag_type.replace("dynamic", "static"), value
        return tag_type, value.upper()
    if roll < 0.40:
        return values.domain(i)
    if roll < 0.62:
        return values.address(i)
    if roll < 0.90:
        return values.url(i)
    if roll < 0.99:
        return values.email(i)
    return rnd.choice(("file.behavior", "technique.obfuscation", "file.config")), "behaviour {}".format(i)


def make_results(n_tags: int, seed: int = 1) -> Dict[str, Any]:
    """A realistic synthetic submission results document with ``n_tags`` tags.

    Domains, IPv4/IPv6, URLs, e-mail addresses and a few attribution tags over 60 files;
    about 10 % duplicates (static/dynamic, case), 3 % safelisted, 15 % below ``min_h_type``,
    private, invalid, defanged and internationalised values; most tags TLP:AMBER.
    Deterministic for a seed (every interpreter builds the same document)."""
    rnd = random.Random(seed)
    sid = "4aBcDeFgHiJkLmNoPqRsTu"
    files = _files(60)
    shas = [f["sha256"] for f in files]
    values = _Values(rnd)
    tags, seen, recent = [], set(), []  # type: List[Dict[str, Any]], set, List[Tuple[str, str]]
    i = 0
    while len(tags) < n_tags:
        i += 1
        h_type = rnd.choices(("malicious", "suspicious", "info", "safe"), (45, 40, 12, 3))[0]
        safelisted = rnd.random() < 0.03
        tag_type, value = _sighting(rnd, recent, values, i)
        if (tag_type, value) in seen:
            continue
        seen.add((tag_type, value))
        if rnd.random() < 0.2:
            recent.append((tag_type, value))
            if len(recent) > 1000:
                recent.pop(0)
        tags.append({"group": "ioc", "type": tag_type, "value": value, "h_type": h_type,
                     "safelisted": safelisted,
                     "classification": rnd.choices(CLASSIFICATIONS, CLASSIFICATION_WEIGHTS)[0],
                     "sha256s": rnd.sample(shas, rnd.choice((1, 1, 1, 2, 3)))})
    for index, family in enumerate(FAMILIES):  # a realistic handful of attribution tags
        tags.append({"group": "attribution", "type": "attribution.family", "value": family,
                     "h_type": "malicious", "safelisted": False, "classification": "TLP:A",
                     "sha256s": rnd.sample(shas, 3)})
        tags.append({"group": "attribution", "type": "av.virus_name",
                     "value": "Win.Trojan.{}-{}".format(family.title(), 9000 + index),
                     "h_type": "malicious", "safelisted": False, "classification": "TLP:A",
                     "sha256s": rnd.sample(shas, 2)})
    tags.append({"group": "attribution", "type": "attribution.actor", "value": "TA542",
                 "h_type": "malicious", "safelisted": False, "classification": "TLP:A",
                 "sha256s": [shas[0]]})
    rnd.shuffle(tags)
    return {"sid": sid, "state": "completed", "max_score": 2300, "verdict": "malicious",
            "error_count": 0, "partial": False, "classification": "TLP:A",
            "submitted_at": "2026-11-22T10:00:00.000000Z",
            "completed_at": "2026-11-22T10:04:12.000000Z",
            "metadata": {"file_path": "/data/drop/a.exe", "hostname": "edr-7",
                         "ingest_id": "5xYz", "sha256": shas[0]},
            "files": files, "tags": tags, "attack": [],
            "al_url": "https://al.example.org/submission/" + sid}


def tags_for_indicators(indicators: int) -> int:
    """Input tags that give about ``indicators`` indicators with ``bench_settings()``
    (the document keeps about 0.745 of its tags)."""
    return max(int(indicators / 0.745), 50)


class EmulatorProcess:
    """A loopback emulator run standalone (``python -m tests.emulators.<name> ...``) in its own
    process, so neither side of a bench shares its interpreter lock with it."""

    def __init__(self, python: str, module: str, args: Sequence[str]):
        self.command = [python, "-m", module] + list(args)
        self.process = None  # type: Optional[subprocess.Popen]
        self.url = ""

    def __enter__(self) -> "EmulatorProcess":
        self.process = subprocess.Popen(self.command, cwd=PACK_DIR, stdout=subprocess.PIPE,
                                        env=dict(os.environ, PYTHONPATH=PACK_DIR))
        line = self.process.stdout.readline().decode("utf-8").strip()
        if " ready at " not in line:
            self.process.kill()
            raise RuntimeError("emulator did not start: {!r}".format(line))
        self.url = line.rsplit(" ", 1)[-1]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
