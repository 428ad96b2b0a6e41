"""The BatchConfig of a ThreatConnect V2 batch job, checked before it is sent.

TC answers a bad config with terse or plain-text errors after a round trip;
checking here names the field.
"""
from typing import Any, Dict, Mapping

from lib.errors import InputError

BATCH_ENUMS = {
    "version": ("V2",),
    "action": ("Create", "Delete"),
    "attributeWriteType": ("Append", "Replace", "Singleton", "Static"),
    "tagWriteType": ("Append", "Replace"),
    "securityLabelWriteType": ("Append", "Replace"),
    "fileMergeMode": ("Distribute", "Merge"),
    "hashCollisionMode": ("FavorExisting", "FavorIncoming", "IgnoreExisting",
                          "IgnoreIncoming", "Split"),
}
BATCH_BOOLEANS = ("haltOnError", "playbookTriggersEnabled")
BATCH_REQUIRED = ("owner", "haltOnError", "action", "attributeWriteType")
BATCH_FIELDS = frozenset(BATCH_ENUMS) | frozenset(BATCH_BOOLEANS) | {"owner"}

# Action parameter -> BatchConfig field, for the actions' per-run overrides.
BATCH_PARAMETERS = (("owner", "owner"), ("halt_on_error", "haltOnError"),
                    ("attribute_write_type", "attributeWriteType"),
                    ("tag_write_type", "tagWriteType"),
                    ("security_label_write_type", "securityLabelWriteType"),
                    ("file_merge_mode", "fileMergeMode"),
                    ("hash_collision_mode", "hashCollisionMode"))


def validate_batch_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Check every BatchConfig field locally and return the config to send.

    ``version`` is always ``V2`` (the object body this pack writes). Unknown
    fields are refused so typos surface.
    """
    if not isinstance(config, Mapping):
        raise InputError("BatchConfig must be a mapping of field names to values")
    unknown = sorted(set(config) - BATCH_FIELDS)
    if unknown:
        raise InputError("BatchConfig field {} is unknown (known: {})".format(
            unknown[0], ", ".join(sorted(BATCH_FIELDS))))
    for name in BATCH_REQUIRED:
        if config.get(name) is None:
            raise InputError("BatchConfig field {} is required".format(name))
    owner = config["owner"]
    if not isinstance(owner, str) or not owner.strip():
        raise InputError("BatchConfig field owner must be a non-empty string")
    for name in BATCH_BOOLEANS:
        if name in config and not isinstance(config[name], bool):
            raise InputError("BatchConfig field {} must be true or false".format(name))
    for name, allowed in BATCH_ENUMS.items():
        if name in config and config[name] not in allowed:
            raise InputError("BatchConfig field {} must be one of {}".format(
                name, ", ".join(allowed)))
    checked = dict(config)
    checked["version"] = "V2"
    return checked


def batch_overrides(**params: Any) -> Dict[str, Any]:
    """BatchConfig overrides from action parameters; ``None`` means "the pack's default"."""
    fields = dict(BATCH_PARAMETERS)
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise InputError("unknown batch parameter {}".format(unknown[0]))
    return {fields[name]: value for name, value in params.items() if value is not None}
