"""Sensor service stand-in.

Unlike st2tests' mock, ``dispatch`` validates each payload against the trigger
type's ``payload_schema`` (real st2 silently drops a payload that fails it) and
refuses unknown trigger refs. Violations are raised *and* recorded, so a
sensor that swallows exceptions still fails the test (see BaseSensorTestCase).
"""
import logging
from typing import Any, Dict, List, Mapping, Optional

import jsonschema

from st2tests.mocks.datastore import MockDatastoreService


class MockSensorWrapper:
    def __init__(self, pack="tests", class_name="Unknown"):
        self._pack = pack
        self._class_name = class_name


class PayloadViolation(AssertionError):
    pass


class MockSensorService:
    def __init__(self, sensor_wrapper, trigger_schemas: Optional[Mapping[str, Any]] = None):
        self._sensor_wrapper = sensor_wrapper
        self.datastore_service = MockDatastoreService(
            pack_name=sensor_wrapper._pack, class_name=sensor_wrapper._class_name)
        # trigger ref -> payload_schema (None means "no schema declared")
        self.trigger_schemas = dict(trigger_schemas) if trigger_schemas is not None else None
        self.dispatched_triggers: List[Dict[str, Any]] = []
        self.violations: List[str] = []
        self._validators: Dict[str, Any] = {}

    def get_logger(self, name):
        return logging.getLogger("st2.sensor.{}".format(name))

    def get_user_info(self):
        return {"username": "stanley", "rbac": {"is_admin": True, "enabled": False}}

    def dispatch(self, trigger, payload=None, trace_tag=None):
        trace_context = {"trace_tag": trace_tag} if trace_tag else None
        return self.dispatch_with_context(trigger, payload=payload, trace_context=trace_context)

    def dispatch_with_context(self, trigger, payload=None, trace_context=None):
        self._validate(trigger, payload)
        self.dispatched_triggers.append(
            {"trigger": trigger, "payload": payload, "trace_context": trace_context})

    def _validate(self, trigger: str, payload: Any) -> None:
        if self.trigger_schemas is None:
            return
        if trigger not in self.trigger_schemas:
            self._violate('unknown trigger "{}" (declared: {})'.format(
                trigger, ", ".join(sorted(self.trigger_schemas)) or "none"))
        validator = self._validator(trigger)
        if validator is None:
            return
        errors = sorted(validator.iter_errors(payload or {}), key=str)
        if errors:
            details = "; ".join("{}: {}".format("/".join(map(str, e.path)) or "<payload>", e.message)
                                for e in errors[:5])
            self._violate('payload for "{}" violates its payload_schema: {}'.format(trigger, details))

    def _validator(self, trigger: str):
        if trigger not in self._validators:
            schema = self.trigger_schemas[trigger]
            self._validators[trigger] = jsonschema.Draft4Validator(schema) if schema else None
        return self._validators[trigger]

    def _violate(self, message: str) -> None:
        self.violations.append(message)
        raise PayloadViolation(message)

    # datastore methods, as on st2's SensorService
    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        return self.datastore_service.list_values(local=local, prefix=prefix, limit=limit, offset=offset)

    def get_value(self, name, local=True, scope="system", decrypt=False):
        return self.datastore_service.get_value(name, local=local, scope=scope, decrypt=decrypt)

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        return self.datastore_service.set_value(name, value, ttl=ttl, local=local, scope=scope,
                                                encrypt=encrypt)

    def delete_value(self, name, local=True, scope="system"):
        return self.datastore_service.delete_value(name, local=local, scope=scope)
