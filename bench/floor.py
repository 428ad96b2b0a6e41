"""The fair floor of the indicator bench: the pack's work minus validation and normalisation.

``floor_build(doc, outcomes, group_xid)`` makes the same indicators as
``build_indicators(doc, bench_settings())`` (the bench checks that they are equal) doing the
same filters (indicator tag types, safelisted, ``min_h_type``, private), the same duplicate
merging (highest h_type, mixed classifications, union of files), the same lookups (rating by
h_type, security label by classification, attribution tags by file) and the same shared
``tag``/``securityLabel``/``attribute``/``associatedGroups`` lists, the File indicators, the
seen dates and the URL -> Host associations. What it leaves out is only what
``floor_outcomes`` (pack_adapter) worked out beforehand, untimed: each raw value checked,
refanged and normalised (or rejected, or found private), and the host of each URL. It reads
that table with one dict lookup per tag, where the pack looks its own memo up.

This is not the pack's code and it checks nothing: a document with a malformed tag would
break it. It exists to put a number on what the pack's checks cost.
"""
from operator import itemgetter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

H_RANK = {"safe": 0, "info": 1, "suspicious": 2, "malicious": 3}
RATINGS = {0: (0, 10), 1: (1, 30), 2: (3, 60), 3: (4, 80)}
LABELS = {"TLP:A": "TLP:AMBER", "TLP:AMBER": "TLP:AMBER", "TLP:G": "TLP:GREEN",
          "TLP:GREEN": "TLP:GREEN", "TLP:R": "TLP:RED", "TLP:RED": "TLP:RED"}  # CLEAR: no label
ATTRIBUTION_ORDER = {name: index for index, name in enumerate((
    "attribution.family", "attribution.actor", "attribution.campaign", "attribution.exploit",
    "attribution.implant", "attribution.network", "av.virus_name"))}
OUTPUT_ORDER = ("Address", "EmailAddress", "File", "Host", "URL")
MIXED = object()
_FIELDS = itemgetter("type", "value", "h_type", "safelisted")
SOURCE_TAG = "Assemblyline"
MIN_RANK = H_RANK["suspicious"]
MAX_ATTRIBUTION_TAGS = 10


class _Tags:
    """Attribution tag lists per set of files, shared by content (as the pack shares them)."""

    def __init__(self, attributions: List[Tuple[int, int, str, frozenset]]):
        self.everywhere = [a for a in attributions if not a[3]]
        self.by_sha = {}  # type: Dict[str, List[Tuple[int, int, str, frozenset]]]
        for attribution in attributions:
            for sha in attribution[3]:
                self.by_sha.setdefault(sha, []).append(attribution)
        self.by_files = {}  # type: Dict[Any, List[Dict[str, str]]]
        self.by_attributed = {}  # type: Dict[Tuple[str, ...], List[Dict[str, str]]]
        self.by_names = {}  # type: Dict[Tuple[str, ...], List[Dict[str, str]]]

    def names(self, attributions: Sequence[Tuple[int, int, str, frozenset]]) -> List[str]:
        names, seen = [SOURCE_TAG], {SOURCE_TAG.casefold()}
        for _, _, name, _ in sorted({(a[0], a[1], a[2]) + (None,) for a in attributions}):
            if len(names) > MAX_ATTRIBUTION_TAGS:
                break
            if name.casefold() not in seen:
                seen.add(name.casefold())
                names.append(name)
        return names

    def for_files(self, shas: Any) -> List[Dict[str, str]]:
        key = shas if type(shas) is tuple else (None if type(shas) is set else tuple(shas))
        found = self.by_files.get(key) if key is not None else None
        if found is None:
            attributed = tuple(sorted({s.lower() for s in shas if s.lower() in self.by_sha}))
            found = self.by_attributed.get(attributed)
            if found is None:
                candidates = list(self.everywhere)
                for sha in attributed:
                    candidates.extend(self.by_sha[sha])
                names = tuple(self.names(candidates))
                found = self.by_names.get(names)
                if found is None:
                    found = self.by_names[names] = [{"name": n} for n in names]
                self.by_attributed[attributed] = found
            if key is not None:
                self.by_files[key] = found
        return found


def _collect(tags: Sequence[Mapping[str, Any]], outcomes: Mapping[str, Mapping[str, Any]],
             routes: Mapping[str, str]):
    merged = {kind: {} for kind in OUTPUT_ORDER}  # type: Dict[str, Dict[str, Any]]
    url_hosts = {}  # type: Dict[str, str]
    attributions = []
    fields = _FIELDS
    for tag in tags:
        tag_type, value, h_type, safelisted = fields(tag)
        kind = routes.get(tag_type)
        if kind is None:
            if tag_type in ATTRIBUTION_ORDER:
                attributions.append(tag)
            continue
        if safelisted:
            continue
        rank = H_RANK[h_type]
        if rank < MIN_RANK:
            continue
        found = outcomes[kind][value]
        if found is None:
            continue
        final_kind, summary, host = found
        bucket = merged[final_kind]
        entry = bucket.get(summary)
        if entry is None:
            bucket[summary] = tag
            if host is not None:
                url_hosts[summary] = host
            continue
        if type(entry) is not list:
            entry = bucket[summary] = [H_RANK[entry["h_type"]], entry["classification"],
                                       entry["sha256s"] or ()]
        if rank > entry[0]:
            entry[0] = rank
        if entry[1] is not MIXED and tag["classification"] != entry[1]:
            entry[1] = MIXED
        shas = tag["sha256s"]
        if shas and shas != entry[2]:
            entry[2] = set(entry[2]) | set(shas)
    return merged, url_hosts, attributions


def _attributions(tags: Sequence[Mapping[str, Any]]) -> List[Tuple[int, int, str, frozenset]]:
    found = []
    for tag in tags:
        if tag["safelisted"] or H_RANK[tag["h_type"]] < MIN_RANK:
            continue
        found.append((-H_RANK[tag["h_type"]], ATTRIBUTION_ORDER[tag["type"]], tag["value"].strip(),
                      frozenset(s.lower() for s in tag["sha256s"] or ())))
    return found


def _files(doc: Mapping[str, Any], date: str) -> Dict[str, list]:
    """File indicators: the submitted file (named by its path) and the extracted files."""
    rank = 3 if doc["max_score"] >= 1000 else 2
    path = doc["metadata"]["file_path"]
    files = {}
    for index, entry in enumerate(doc["files"]):
        hashes = {k: entry[k] for k in ("md5", "sha1", "sha256") if entry.get(k)}
        name = path.rsplit("/", 1)[-1] if index == 0 else entry["name"]
        extra = {"hashes": hashes, "size": entry.get("size"),
                 "occurrence": {"fileName": name, "date": date}}
        files[" : ".join(hashes.values())] = [rank, doc["classification"], (hashes["sha256"],), extra]
    return files


def _date(value: Optional[str]) -> Optional[str]:
    return value[:19] + "Z" if value else None


def _label_table(doc: Mapping[str, Any]) -> Dict[Any, Optional[List[Dict[str, str]]]]:
    """classification -> the shared securityLabel list (None: no label), MIXED included."""
    table = {}  # type: Dict[Any, Optional[List[Dict[str, str]]]]
    for name in set(LABELS.values()):
        shared = [{"name": name}]
        for key, value in LABELS.items():
            if value == name:
                table[key] = shared
    for key in ("TLP:C", "TLP:CLEAR", "TLP:W", "TLP:WHITE"):
        table[key] = None
    table[MIXED] = table.get(doc["classification"])
    return table


def floor_build(doc: Mapping[str, Any], outcomes: Mapping[str, Mapping[str, Any]],
                routes: Mapping[str, str], group_xid: str) -> List[Dict[str, Any]]:
    """The indicators (see the module docstring); ``routes``: tag type -> TC type."""
    merged, url_hosts, attribution_tags = _collect(doc["tags"], outcomes, routes)
    date, completed = _date(doc.get("submitted_at")), _date(doc.get("completed_at"))
    last_seen = completed or date
    merged["File"] = _files(doc, date)
    tag_lists = _Tags(_attributions(attribution_tags))
    by_files, for_files = tag_lists.by_files, tag_lists.for_files
    attributes = [{"type": "Description", "displayed": True, "value":
                   "Latest Assemblyline analysis: {}: {}".format(
                       doc["metadata"]["file_path"].rsplit("/", 1)[-1], doc["al_url"])}]
    groups = [{"groupXid": group_xid}]
    labels = _label_table(doc)
    indicators = []
    append = indicators.append
    sent_hosts = set()
    for kind in OUTPUT_ORDER:
        bucket = merged[kind]
        for summary in sorted(bucket):
            entry = bucket[summary]
            if type(entry) is list:
                rank, classification, shas = entry[0], entry[1], entry[2]
            else:
                rank, classification, shas = H_RANK[entry["h_type"]], entry["classification"], \
                    entry["sha256s"]
            rating, confidence = RATINGS[rank]
            tags = by_files.get(tuple(shas)) if type(shas) is list else None
            if tags is None:
                tags = for_files(shas)
            label = labels[classification] if classification in labels else None
            if label is not None:
                indicator = {"type": kind, "summary": summary, "rating": rating,
                             "confidence": confidence, "tag": tags, "securityLabel": label,
                             "attribute": attributes, "associatedGroups": groups,
                             "firstSeen": date, "lastSeen": last_seen}
            else:
                indicator = {"type": kind, "summary": summary, "rating": rating,
                             "confidence": confidence, "tag": tags, "attribute": attributes,
                             "associatedGroups": groups, "firstSeen": date, "lastSeen": last_seen}
            if kind == "URL":
                host = url_hosts.get(summary)
                if ("Host", host) in sent_hosts:
                    indicator["associatedIndicators"] = [{"summary": host, "indicatorType": "Host"}]
                elif ("Address", host) in sent_hosts:
                    indicator["associatedIndicators"] = [{"summary": host, "indicatorType": "Address"}]
            elif kind == "Host" or kind == "Address":
                sent_hosts.add((kind, summary))
            elif kind == "File":
                extra = entry[3]
                indicator.update(extra["hashes"])
                indicator["size"] = extra["size"]
                indicator["fileOccurrence"] = [extra["occurrence"]]
            append(indicator)
    return indicators
