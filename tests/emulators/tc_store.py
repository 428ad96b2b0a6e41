"""One owner's indicators and groups in the ThreatConnect emulator, with TC's merge rules.

Create jobs create or update: an existing indicator (same type and value; for
Files, any shared hash) is merged per the job's write types:

* attributes (``attributeWriteType``): Append adds all (no dedupe), Replace
  keeps only the incoming ones, Singleton replaces only the incoming types,
  Static leaves existing attributes alone;
* tags and security labels (``tagWriteType``/``securityLabelWriteType``,
  default Replace): Append adds, Replace keeps only the incoming names;
* rating, confidence and other fields: incoming values win;
* group associations are added;
* File hashes merge into a superset. On a conflicting hash
  ``hashCollisionMode`` decides (FavorIncoming/IgnoreExisting: incoming value
  wins; FavorExisting: existing wins; IgnoreIncoming: hashes untouched; Split:
  a separate File). When the incoming hashes match several Files,
  ``fileMergeMode`` Merge folds them into one, Distribute updates each.
  These conflict rules are a model of undocumented behaviour.

Groups are keyed by xid (reuse updates). Delete jobs remove matches.
Not thread-safe by itself: the emulator holds its lock around every call.
Normalised items are stored without copying: they are built from a job body
the emulator parsed itself and drops after processing.
"""
import copy
from typing import Any, Dict, List, Mapping, Optional

from tests.emulators.tc_items import HASH_ORDER, ItemError, file_summary


def merge_attributes(existing: List[Dict[str, Any]], incoming: List[Dict[str, Any]],
                     mode: str) -> List[Dict[str, Any]]:
    if mode == "Append":
        return existing + incoming
    if mode == "Replace":
        return list(incoming)
    if mode == "Singleton":
        types = {a["type"] for a in incoming}
        return [a for a in existing if a["type"] not in types] + incoming
    return existing  # Static


def merge_names(existing: List[str], incoming: List[str], mode: str) -> List[str]:
    if mode == "Append":
        return existing + [n for n in incoming if n not in existing]
    return list(incoming)  # Replace


class OwnerStore:
    """Indicators (by id, indexed by value and by hash) and groups (by xid)."""

    def __init__(self) -> None:
        self._indicators = {}  # type: Dict[int, Dict[str, Any]]
        self._by_value = {}  # type: Dict[tuple, int]
        self._by_hash = {}  # type: Dict[str, int]
        self._groups = {}  # type: Dict[str, Dict[str, Any]]
        self._next_id = 1

    # ------------------------------------------------------------ groups

    def has_group(self, xid: str) -> bool:
        return xid in self._groups

    def save_group(self, group: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        for ref in group["groupXids"]:
            if ref not in self._groups and ref != group["xid"]:
                raise ItemError("Association error: group xid {} not found".format(ref))
        current = self._groups.get(group["xid"])
        if current is None:
            record = {k: group[k] for k in
                      ("type", "xid", "name", "tags", "securityLabels", "attributes", "fields")}
            record["associatedGroups"] = list(group["groupXids"])
            self._groups[group["xid"]] = record
            return
        current.update(type=group["type"], name=group["name"])
        current["fields"].update(group["fields"])
        self._merge_common(current, group, config)
        current["associatedGroups"] = merge_names(current["associatedGroups"],
                                                  group["groupXids"], "Append")

    def delete_group(self, xid: str) -> None:
        if self._groups.pop(xid, None) is None:
            raise ItemError("Item not found: group xid {}".format(xid))
        for record in self._indicators.values():
            if xid in record["associatedGroups"]:
                record["associatedGroups"].remove(xid)

    # -------------------------------------------------------- indicators

    def save_indicator(self, item: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        for xid in item["groupXids"]:
            if xid not in self._groups:
                raise ItemError("Association error: group xid {} not found for {} {}".format(
                    xid, item["type"], item["summary"]))
        if item["type"] == "File":
            self._save_file(item, config)
            return
        key = (item["type"], item["summary"])
        record_id = self._by_value.get(key)
        if record_id is None:
            self._by_value[key] = self._create(item)["id"]
        else:
            self._merge(self._indicators[record_id], item, config)

    def delete_indicator(self, kind: str, summary: str, hashes: Mapping[str, str]) -> None:
        if kind == "File":
            ids = self._file_matches(hashes)
            if not ids:
                raise ItemError("Item not found: File {}".format(summary))
            for record_id in ids:
                self._drop(record_id)
            return
        record_id = self._by_value.get((kind, summary))
        if record_id is None:
            raise ItemError("Item not found: {} {}".format(kind, summary))
        self._drop(record_id)

    def _create(self, item: Mapping[str, Any]) -> Dict[str, Any]:
        record = {
            "id": self._next_id, "type": item["type"], "summary": item["summary"],
            "rating": item["rating"], "confidence": item["confidence"],
            "tags": list(item["tags"]), "securityLabels": list(item["securityLabels"]),
            "attributes": list(item["attributes"]),
            "associatedGroups": list(dict.fromkeys(item["groupXids"])),
            "hashes": dict(item["hashes"]), "fields": dict(item["fields"]),
        }
        self._next_id += 1
        self._indicators[record["id"]] = record
        self._index_hashes(record)
        return record

    def _merge(self, record: Dict[str, Any], item: Mapping[str, Any],
               config: Mapping[str, Any]) -> None:
        for key in ("rating", "confidence"):
            if item[key] is not None:
                record[key] = item[key]
        record["fields"].update(item["fields"])
        self._merge_common(record, item, config)
        record["associatedGroups"] = merge_names(record["associatedGroups"],
                                                 item["groupXids"], "Append")

    @staticmethod
    def _merge_common(record: Dict[str, Any], item: Mapping[str, Any],
                      config: Mapping[str, Any]) -> None:
        record["attributes"] = merge_attributes(record["attributes"],
                                                list(item["attributes"]),
                                                config.get("attributeWriteType", "Replace"))
        record["tags"] = merge_names(record["tags"], item["tags"],
                                     config.get("tagWriteType", "Replace"))
        record["securityLabels"] = merge_names(record["securityLabels"], item["securityLabels"],
                                               config.get("securityLabelWriteType", "Replace"))

    # -------------------------------------------------------------- files

    def _file_matches(self, hashes: Mapping[str, str]) -> List[int]:
        found = []  # type: List[int]
        for value in hashes.values():
            record_id = self._by_hash.get(value)
            if record_id is not None and record_id not in found:
                found.append(record_id)
        return found

    def _save_file(self, item: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        matches = self._file_matches(item["hashes"])
        if not matches:
            self._create(item)
            return
        if len(matches) > 1 and config.get("fileMergeMode", "Merge") == "Distribute":
            for record_id in matches:
                self._merge(self._indicators[record_id], item, config)
            return
        target = self._indicators[matches[0]]
        for other in matches[1:]:  # Merge: fold the other Files into the first
            folded = self._indicators[other]
            self._drop(other)
            self._set_hashes(target, dict(folded["hashes"], **target["hashes"]))
            self._merge(target, _as_item(folded), {"attributeWriteType": "Append",
                                                   "tagWriteType": "Append",
                                                   "securityLabelWriteType": "Append"})
        mode = config.get("hashCollisionMode", "FavorIncoming")
        conflict = any(target["hashes"].get(k, v) != v for k, v in item["hashes"].items())
        if conflict and mode == "Split":
            self._create(item)  # a separate File; shared hashes stay indexed to the first
            return
        if not conflict or mode in ("FavorIncoming", "IgnoreExisting"):
            self._set_hashes(target, dict(target["hashes"], **item["hashes"]))
        elif mode == "FavorExisting":
            self._set_hashes(target, dict(item["hashes"], **target["hashes"]))
        self._merge(target, item, config)

    def _set_hashes(self, record: Dict[str, Any], hashes: Mapping[str, str]) -> None:
        for value in record["hashes"].values():
            if self._by_hash.get(value) == record["id"]:
                del self._by_hash[value]
        record["hashes"] = {k: hashes[k] for k in HASH_ORDER if k in hashes}
        record["summary"] = file_summary(record["hashes"])
        self._index_hashes(record)

    def _index_hashes(self, record: Mapping[str, Any]) -> None:
        for value in record["hashes"].values():
            self._by_hash.setdefault(value, record["id"])

    def _drop(self, record_id: int) -> None:
        record = self._indicators.pop(record_id)
        self._by_value.pop((record["type"], record["summary"]), None)
        for value in record["hashes"].values():
            if self._by_hash.get(value) == record_id:
                del self._by_hash[value]

    # ----------------------------------------------------------- snapshots

    def indicators(self, kind: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
        """summary -> copy of the record (optionally one type only)."""
        return {r["summary"]: _public(r) for r in self._indicators.values()
                if kind is None or r["type"] == kind}

    def groups(self) -> Dict[str, Dict[str, Any]]:
        return copy.deepcopy(self._groups)

    def counts(self) -> Dict[str, int]:
        return {"indicators": len(self._indicators), "groups": len(self._groups)}


def _as_item(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A stored record shaped like a normalised item (for folding Files together)."""
    return {"rating": record["rating"], "confidence": record["confidence"],
            "fields": record["fields"], "attributes": record["attributes"],
            "tags": record["tags"], "securityLabels": record["securityLabels"],
            "groupXids": record["associatedGroups"]}


def _public(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy safe to hand to tests (cheaper than deepcopy for 100k records)."""
    public = {"type": record["type"], "summary": record["summary"],
              "rating": record["rating"], "confidence": record["confidence"],
              "tags": list(record["tags"]), "securityLabels": list(record["securityLabels"]),
              "attributes": [dict(a) for a in record["attributes"]],
              "associatedGroups": list(record["associatedGroups"]),
              "fields": copy.deepcopy(record["fields"]) if record["fields"] else {}}
    if record["hashes"]:
        public["hashes"] = dict(record["hashes"])
    return public
