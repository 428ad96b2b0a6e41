"""Stand-in for ``st2tests.base``: the three pack test base classes.

Names and behaviour follow st2tests so the pack's tests also run under
``st2-run-pack-tests``. Additions that st2tests lacks are marked.
"""
import inspect
import os
import unittest

import yaml

from st2common.runners.utils import PackConfigDict
from st2tests.action_aliases import ActionAliasFormatParser, ParseException, load_alias
from st2tests.mocks.action import MockActionService, MockActionWrapper
from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper


class BasePackResourceTestCase(unittest.TestCase):
    def get_fixture_content(self, fixture_path):
        path = os.path.join(self._get_base_pack_path(), "tests", "fixtures", fixture_path)
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def _get_base_pack_path(self):
        test_file = inspect.getfile(self.__class__)
        return os.path.abspath(os.path.join(os.path.dirname(test_file), ".."))


class BaseActionTestCase(BasePackResourceTestCase):
    action_cls = None

    def setUp(self):
        super().setUp()
        class_name = self.action_cls.__name__ if self.action_cls else "Mock"
        self.action_service = MockActionService(MockActionWrapper(pack="tests", class_name=class_name))

    def get_action_instance(self, config=None):
        config = PackConfigDict("tests", config or {})
        return self.action_cls(config=config, action_service=self.action_service)


class BaseSensorTestCase(BasePackResourceTestCase):
    sensor_cls = None

    def setUp(self):
        super().setUp()
        # Stand-in addition: every dispatched payload is validated against the
        # trigger's payload_schema read from the pack's sensor YAML files.
        schemas = _pack_trigger_schemas(self._get_base_pack_path())
        self.sensor_service = MockSensorService(
            MockSensorWrapper(pack="tests", class_name=self.sensor_cls.__name__),
            trigger_schemas=schemas)
        self.addCleanup(self._fail_on_payload_violations)

    def _fail_on_payload_violations(self):
        if self.sensor_service.violations:
            self.fail("dispatched payloads that real st2 would drop:\n" +
                      "\n".join(self.sensor_service.violations))

    def get_sensor_instance(self, config=None, poll_interval=None):
        kwargs = {"sensor_service": self.sensor_service}
        if config:
            kwargs["config"] = config
        if poll_interval is not None:
            kwargs["poll_interval"] = poll_interval
        return self.sensor_cls(**kwargs)

    def get_dispatched_triggers(self):
        return self.sensor_service.dispatched_triggers

    def get_last_dispatched_trigger(self):
        return self.sensor_service.dispatched_triggers[-1]

    def assertTriggerDispatched(self, trigger, payload=None, trace_context=None):
        for item in self.get_dispatched_triggers():
            if item["trigger"] != trigger:
                continue
            if payload and item["payload"] != payload:
                continue
            if trace_context and item["trace_context"] != trace_context:
                continue
            return
        raise AssertionError('Trigger "{}" hasn\'t been dispatched'.format(trigger))


class BaseActionAliasTestCase(BasePackResourceTestCase):
    action_alias_name = None
    action_alias_db = None

    def setUp(self):
        super().setUp()
        self.action_alias_db = load_alias(self._get_base_pack_path(), self.action_alias_name)

    def assertExtractedParametersMatch(self, format_string, command, parameters):
        formats = self.action_alias_db.get_format_strings()
        if format_string not in formats:
            raise ValueError('Format string "{}" is not available on the alias "{}"'.format(
                format_string, self.action_alias_db.name))
        result = ActionAliasFormatParser(format_string, command).get_extracted_param_value()
        self.assertEqual(result, parameters)

    def assertCommandMatchesExactlyOneFormatString(self, format_strings, command):
        matched = []
        for format_string in format_strings:
            try:
                ActionAliasFormatParser(format_string, command).get_extracted_param_value()
            except ParseException:
                continue
            matched.append(format_string)
        if len(matched) != 1:
            raise AssertionError('Command "{}" matched {} format strings ({}), expected exactly one'
                                 .format(command, len(matched), matched))


def _pack_trigger_schemas(pack_dir):
    """``{"<pack>.<trigger>": payload_schema}`` for every sensor YAML of the pack."""
    with open(os.path.join(pack_dir, "pack.yaml"), encoding="utf-8") as handle:
        pack = yaml.safe_load(handle)
    pack_ref = pack.get("ref") or pack["name"]
    schemas = {}
    sensors_dir = os.path.join(pack_dir, "sensors")
    for name in sorted(os.listdir(sensors_dir)) if os.path.isdir(sensors_dir) else []:
        if not name.endswith((".yaml", ".yml")):
            continue
        with open(os.path.join(sensors_dir, name), encoding="utf-8") as handle:
            meta = yaml.safe_load(handle) or {}
        for trigger in meta.get("trigger_types") or []:
            schemas["{}.{}".format(pack_ref, trigger["name"])] = _draft4(trigger.get("payload_schema"))
    return schemas


def _draft4(schema):
    """st2 payload schemas may mark properties ``required: true`` (draft 3 style)."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if not (k == "required" and isinstance(v, bool))}
    props = schema.get("properties")
    if isinstance(props, dict):
        out["properties"] = {k: _draft4(v) for k, v in props.items()}
        flagged = [k for k, v in props.items() if isinstance(v, dict) and v.get("required") is True]
        if flagged:
            out["required"] = sorted(set(list(out.get("required") or []) + flagged)) \
                if isinstance(out.get("required"), list) else flagged
    if isinstance(schema.get("items"), dict):
        out["items"] = _draft4(schema["items"])
    return out
