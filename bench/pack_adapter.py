"""Every import of the pack (and of its test stand-ins) the benches make, in one place.

The pack's library is being reorganised; when a name below moves, fix it here and nowhere
else. The benches use only what the actions use: ``build_indicators(doc, settings)``, the
batch bodies ``ThreatConnectClient.submit`` sends (``iter_jobs``), ``ThreatConnectClient``
itself, the notification sensor and the workflow harness. The fair floor of the indicator
bench also borrows the pack's value normalisers, once and untimed (``floor_outcomes``).
"""
import os
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _sub in ("sensors", os.path.join("actions", "lib"), "actions", ""):
    _path = os.path.join(PACK_DIR, _sub)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from lib.config import apply_defaults, load_schema  # noqa: E402
from lib.indicators import _authority_of_non_web_uri, build_indicators  # noqa: E402
from lib.tc_values import (HostNames, ValueRejected, host_is_public, normalise_email, normalise_host,  # noqa: E402
                           normalise_ip, normalise_url, refang, refang_url, url_host)
from lib.tc_batch_bodies import iter_jobs  # noqa: E402
from lib.tc_submit import submit as tc_submit  # noqa: E402
from lib.threatconnect import ThreatConnectClient  # noqa: E402

_TC_DEFAULTS = apply_defaults({}, load_schema()["properties"]["threatconnect"])
MAX_ITEMS = int(_TC_DEFAULTS["batch_max_items"])
MAX_BYTES = int(_TC_DEFAULTS["batch_max_bytes"])

# The pack's tag type -> ThreatConnect type table for the types the bench document holds.
INDICATOR_TAG_TYPES = {
    "network.static.ip": "Address", "network.dynamic.ip": "Address",
    "network.static.domain": "Host", "network.dynamic.domain": "Host",
    "network.static.uri": "URL", "network.dynamic.uri": "URL",
    "network.email.address": "EmailAddress",
}

__all__ = ["build", "serialise", "client", "submit", "floor_outcomes", "INDICATOR_TAG_TYPES",
           "MAX_ITEMS", "MAX_BYTES", "sensor_parts", "workflow_harness"]


def build(doc: Mapping[str, Any], settings: Mapping[str, Any]) -> Tuple[List[Dict[str, Any]],
                                                                          List[Dict[str, Any]]]:
    """(indicators, groups) as ``build_indicators`` makes them: build + validate."""
    result = build_indicators(doc, settings)
    return result.indicators, result.groups


def serialise(indicators: Iterable[Any], groups: Iterable[Any]) -> Tuple[int, int]:
    """The batch bodies ``ThreatConnectClient.submit`` uploads: (jobs, bytes); bodies dropped."""
    jobs = size = 0
    for job in iter_jobs(groups, indicators, MAX_ITEMS, MAX_BYTES, []):
        jobs += 1
        size += len(job.body)
    return jobs, size


def client(settings: Mapping[str, Any]) -> Any:
    """``ThreatConnectClient`` as the actions make it (``settings``: the threatconnect section)."""
    return ThreatConnectClient(settings)


def submit(tc_client: Any, indicators: List[Dict[str, Any]], groups: List[Dict[str, Any]]
           ) -> Dict[str, Any]:
    """What ``tc_submit_indicators`` runs: create, upload, poll to Completed, per job."""
    return tc_submit(tc_client, indicators, groups, "Create", None)


# ------------------------------------------------------------------ the floor's outcomes

def _outcome(kind: str, raw: str) -> Optional[Tuple[str, str, bool]]:
    """(TC type, summary, is_public) the pack gives a raw value, or None when it rejects it."""
    value = raw.strip()
    try:
        if kind == "Address":
            summary, public = normalise_ip(refang(value))
        elif kind == "Host":
            summary = normalise_host(refang(value))
            public = host_is_public(summary)
        elif kind == "EmailAddress":
            summary, public = normalise_email(refang(value))
        else:
            try:
                summary, public, _host = normalise_url(refang_url(value))
            except ValueRejected as rejected:
                if rejected.reason != "unsupported_scheme":
                    raise
                return _authority_of_non_web_uri(value, HostNames())
    except ValueRejected:
        return None
    return kind, summary, public


def floor_outcomes(doc: Mapping[str, Any], drop_private: bool = True
                   ) -> Dict[str, Dict[str, Optional[Tuple[str, str, Optional[str]]]]]:
    """Per TC type, raw value -> (TC type, summary, URL host or None), or None (rejected or
    private): the validation and normalisation the fair floor leaves out, worked out here
    with the pack's own normalisers (untimed)."""
    table = {kind: {} for kind in set(INDICATOR_TAG_TYPES.values())}  # type: Dict[str, Dict[str, Any]]
    for tag in doc["tags"]:
        kind = INDICATOR_TAG_TYPES.get(tag["type"])
        if kind is None or tag["value"] in table[kind]:
            continue
        found = _outcome(kind, tag["value"])
        if found is None or (drop_private and not found[2]):
            table[kind][tag["value"]] = None
            continue
        final_kind, summary, _ = found
        host = url_host(summary) if final_kind == "URL" else None
        table[kind][tag["value"]] = (final_kind, summary, host)
    return table


# ------------------------------------------------------------------ sensor and workflows

def sensor_parts() -> Dict[str, Any]:
    """The notification sensor class, the st2 stand-in sensor service (with the pack's
    trigger payload schemas, as the sensor tests use it), the ingest ledger (whose pending
    records the sensor resolves) and the Assemblyline emulator."""
    from tests.st2_standin import install_if_missing
    install_if_missing()
    from st2tests.base import _pack_trigger_schemas
    from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper
    from lib.ledger import IngestLedger
    from notification_sensor import AssemblylineNotificationSensor
    from tests.emulators.assemblyline import AssemblylineEmulator
    from tests.helpers import AL_APIKEY, AL_USER, pack_config

    schemas = _pack_trigger_schemas(PACK_DIR)

    def service(validate: bool = True) -> Any:
        """``validate``: check each payload against its trigger's schema, as st2 does."""
        return MockSensorService(MockSensorWrapper(pack="assemblyline_threatconnect",
                                                   class_name="AssemblylineNotificationSensor"),
                                 trigger_schemas=schemas if validate else None)

    return {"sensor_cls": AssemblylineNotificationSensor, "service": service,
            "emulator_cls": AssemblylineEmulator, "user": AL_USER, "apikey": AL_APIKEY,
            "pack_config": pack_config, "ledger_cls": IngestLedger}


def workflow_harness() -> Dict[str, Any]:
    """The orquesta conductor harness (Python 3.8 only) and the stand-in action service."""
    from tests.st2_standin import install_if_missing
    install_if_missing()
    from st2tests.mocks.action import MockActionService, MockActionWrapper
    from tests.workflow_harness import WorkflowHarness
    return {"harness_cls": WorkflowHarness, "action_service": MockActionService,
            "action_wrapper": MockActionWrapper, "pack": "assemblyline_threatconnect"}


def build_action(mapping: Mapping[str, Any]) -> Any:
    """``results -> the build_indicators action's result`` (what st2 stores as its result and
    passes on as tc_submit_indicators' parameters), the action run as st2's python runner does."""
    from tests.st2_standin import install_if_missing
    install_if_missing()
    from st2common.runners.utils import PackConfigDict
    from st2tests.mocks.action import MockActionService, MockActionWrapper
    from build_indicators import BuildIndicatorsAction
    from tests.helpers import pack_config

    config = PackConfigDict("assemblyline_threatconnect", pack_config(mapping=dict(mapping)))

    def run(results: Mapping[str, Any]) -> Any:
        action = BuildIndicatorsAction(config=config, action_service=MockActionService(
            MockActionWrapper("assemblyline_threatconnect", "BuildIndicatorsAction")))
        return action.run(results=results)

    return run
