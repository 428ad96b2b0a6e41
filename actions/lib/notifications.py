"""Assemblyline notification messages -> StackStorm trigger payloads.

A message (reference §5) is checked before anything is dispatched: a message
that is not an object, lacks ``submission``, or carries unexpected types raises
``MalformedMessage`` and is never dispatched half-formed. Payloads match the
``payload_schema`` of the trigger types in ``sensors/notification_sensor.yaml``.
"""
import datetime
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

PACK = "assemblyline_threatconnect"
COMPLETED = PACK + ".submission_completed"
FAILED = PACK + ".submission_failed"
OVERDUE = PACK + ".submission_overdue"
TOKEN_METADATA = "st2_ingest_token"  # the pack's own key for an upload, known before its ingest_id
MAX_FILES = 100
MAX_METADATA_VALUE = 1024


class MalformedMessage(ValueError):
    """A notification message the sensor cannot use (the reason names what is wrong)."""


def ingest_id_of(message: Any) -> Optional[str]:
    """The ingest_id of a message, or None when it has none (used before full checks)."""
    if not isinstance(message, dict):
        return None
    value = message.get("ingest_id")
    if not value and isinstance(message.get("submission"), dict):
        value = (message["submission"].get("metadata") or {}).get("ingest_id")
    return value if isinstance(value, str) and value else None


def delivery_key_of(message: Any) -> Optional[str]:
    """What a trigger is deduplicated by: the pack's upload token when the message carries one
    (the client retries an upload whose answer was lost, so one upload can become two ingests
    in Assemblyline: one file, one trigger), else the ingest_id."""
    if isinstance(message, dict) and isinstance(message.get("submission"), dict):
        token = (message["submission"].get("metadata") or {}).get(TOKEN_METADATA)
        if isinstance(token, str) and token:
            return "token:" + token
    return ingest_id_of(message)


def token_key(record: Mapping[str, Any]) -> Optional[str]:
    """The delivery key of a ledger record's upload, if it has a token."""
    token = record.get("token")
    return "token:" + str(token) if token else None


def reported_key(record: Mapping[str, Any]) -> str:
    """The key that says a ledger record was reported overdue (a warning, not an outcome:
    it does not stop the ingest's late queue message)."""
    return "reported:" + str(record["key"])


def trigger_for(message: Any) -> Tuple[str, Dict[str, Any]]:
    """Return ``(trigger_ref, payload)`` for a message, or raise MalformedMessage."""
    if not isinstance(message, dict):
        raise MalformedMessage("message is a {}, not an object".format(type(message).__name__))
    submission = message.get("submission")
    if not isinstance(submission, dict):
        raise MalformedMessage("message has no submission object")
    ingest_id = ingest_id_of(message)
    if ingest_id is None:
        raise MalformedMessage("message has no ingest_id")
    sid = submission.get("sid")
    if not isinstance(sid, str) or not sid:
        raise MalformedMessage("submission.sid is missing or not a string")
    failure = message.get("failure") or ""
    if not isinstance(failure, str):
        raise MalformedMessage("failure is not a string")
    score = message.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise MalformedMessage("score is not a number")
    if isinstance(score, float) and not math.isfinite(score):
        raise MalformedMessage("score is not a finite number ({!r})".format(score))
    common = {
        "ingest_id": ingest_id,
        "sid": sid,
        "files": _files(submission.get("files")),
        "metadata": _metadata(submission.get("metadata")),
        "ingest_time": _text(message.get("ingest_time")),
        "notify_time": _text(message.get("notify_time")),
    }
    common["file_path"] = common["metadata"].get("file_path")
    if failure:
        return FAILED, dict(common, failure=failure)
    if score is None:
        raise MalformedMessage("a message without failure must carry a score")
    return COMPLETED, dict(common, score=int(score), cached=sid != ingest_id,
                           extended_scan=_text(message.get("extended_scan")))


def completed_from_record(record: Mapping[str, Any], pending: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """A ``submission_completed`` payload from a submission found by reconciliation.

    ``pending`` is the ingest's own ledger record. When the submission is not the
    ingest's own (a cache hit answered by an earlier submission of the same content),
    its metadata, file name and times belong to that earlier ingest, so the payload
    takes the ingest's own facts (ingest_id, sha256, file_path) instead."""
    return COMPLETED, dict(_reconciled(record, pending), score=int(record.get("max_score") or 0),
                           cached=str(record.get("sid")) != str(pending["ingest_id"]), extended_scan=None)


def failed_from_record(record: Mapping[str, Any], pending: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """A ``submission_failed`` payload for a submission found by reconciliation in state ``failed``."""
    failure = "Submission {} ended in state {}".format(record.get("sid"), record.get("state"))
    return FAILED, dict(_reconciled(record, pending), failure=failure)


def _reconciled(record: Mapping[str, Any], pending: Mapping[str, Any]) -> Dict[str, Any]:
    ingest_id = str(pending["ingest_id"])
    sid = str(record.get("sid"))
    metadata = _metadata(record.get("metadata"))
    own = sid == ingest_id or metadata.get("ingest_id") == ingest_id
    sha256 = _text(pending.get("sha256"))
    file_path = _text(pending.get("file_path"))
    if own:
        times = record.get("times") or {}
        files = _files(record.get("files"))
        ingest_time, notify_time = _text(times.get("submitted")), _text(times.get("completed"))
        file_path = file_path or metadata.get("file_path")
    else:
        facts = {"ingest_id": ingest_id, "sha256": sha256, "file_path": file_path}
        metadata = {k: v for k, v in facts.items() if v is not None}
        name = file_path.replace("\\", "/").rsplit("/", 1)[-1] if file_path else None
        sizes = [f["size"] for f in _files(record.get("files")) if f["sha256"] == sha256]
        files = [{"name": name, "sha256": sha256, "size": sizes[0] if sizes else None}] if sha256 else []
        ingest_time, notify_time = _iso(pending.get("ingested_at")), None
    return {"ingest_id": ingest_id, "sid": sid, "files": files, "metadata": metadata, "file_path": file_path,
            "ingest_time": ingest_time, "notify_time": notify_time, "reconciled": True}


def overdue_payload(pending: Mapping[str, Any], checked_at: float,
                    found: Optional[Mapping[str, Any]] = None) -> Tuple[str, Dict[str, Any]]:
    """``submission_overdue``: nothing found by search (``sid``/``state`` null), or a submission
    found but still unfinished long after the deadline (its ``sid`` and ``state``)."""
    return OVERDUE, {
        "ingest_id": str(pending["ingest_id"]),
        "sha256": _text(pending.get("sha256")),
        "file_path": _text(pending.get("file_path")),
        "queue": _text(pending.get("queue")),
        "ingested_at": float(pending.get("ingested_at") or 0),
        "deadline": float(pending.get("deadline") or 0),
        "checked_at": float(checked_at),
        "sid": _text(found.get("sid")) if found else None,
        "state": _text(found.get("state")) if found else None,
    }


def _files(files: Any) -> List[Dict[str, Any]]:
    if files is None:
        return []
    if not isinstance(files, list):
        raise MalformedMessage("submission.files is not a list")
    shaped = []
    for item in files[:MAX_FILES]:
        if not isinstance(item, dict) or not isinstance(item.get("sha256"), str):
            raise MalformedMessage("submission.files holds an entry without a sha256")
        size = item.get("size")
        shaped.append({"name": _text(item.get("name")), "sha256": item["sha256"],
                       "size": size if isinstance(size, int) and not isinstance(size, bool) else None})
    return shaped


def _metadata(metadata: Any) -> Dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise MalformedMessage("submission.metadata is not an object")
    return {str(k): str(v)[:MAX_METADATA_VALUE] for k, v in metadata.items() if v is not None}


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _iso(timestamp: Any) -> Optional[str]:
    """Epoch seconds as Assemblyline writes times (``2024-05-01T12:00:00.000000Z``)."""
    try:
        moment = datetime.datetime.fromtimestamp(float(timestamp), datetime.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
