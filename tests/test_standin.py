"""The st2 stand-in keeps st2's real contracts (these run only without real st2)."""
import pytest

from tests.st2_standin import real_st2_available

if real_st2_available():  # before the imports: some names below exist only in the stand-in
    pytest.skip("real StackStorm modules are installed", allow_module_level=True)

from st2common.runners.base_action import Action  # noqa: E402
from st2common.runners.utils import PackConfigDict  # noqa: E402
from st2reactor.sensor.base import PollingSensor, Sensor  # noqa: E402
from st2tests.base import BaseActionAliasTestCase, BaseSensorTestCase  # noqa: E402
from st2tests.mocks.datastore import MockDatastoreService  # noqa: E402
from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper, PayloadViolation  # noqa: E402
from st2common.models.utils.action_alias_utils import ActionAliasFormatParser  # noqa: E402
from st2common.exceptions.content import ParseException  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_pack_config_dict_raises_value_error_on_missing_key():
    config = PackConfigDict("assemblyline_threatconnect", {"a": 1})
    assert config["a"] == 1 and config.get("b") is None
    with pytest.raises(ValueError, match='Config for pack "assemblyline_threatconnect" is missing key "b"'):
        config["b"]


def test_action_contract():
    class Echo(Action):
        def run(self, x):
            return x

    action = Echo(config={"k": "v"})
    assert isinstance(action.config, PackConfigDict) and action.config["k"] == "v"
    assert action.action_service is None and action.logger.name.endswith("Echo")
    with pytest.raises(TypeError):
        Action()  # abstract


def test_datastore_local_names_str_ttl_and_encryption():
    clock = Clock()
    store = MockDatastoreService(pack_name="assemblyline_threatconnect", class_name="QueueSensor", clock=clock)
    assert store.set_value("cursor", 42) is True
    assert store.get_value("cursor") == "42"  # st2 stores str(value)
    assert store.get_value("assemblyline_threatconnect.QueueSensor:cursor", local=False) == "42"
    store.set_value("short", "x", ttl=10)
    clock.now += 11
    assert store.get_value("short") is None
    store.set_value("secret", "hunter2", encrypt=True)
    assert store.get_value("secret") != "hunter2"
    assert store.get_value("secret", decrypt=True) == "hunter2"
    assert [kv.name for kv in store.list_values(prefix="c")] == ["assemblyline_threatconnect.QueueSensor:cursor"]
    assert store.delete_value("cursor") is True and store.delete_value("cursor") is False
    with pytest.raises(ValueError):
        store.get_value("x", scope="user")


def test_list_values_ignores_limit_and_offset_like_st2tests():
    store = MockDatastoreService(pack_name="p", class_name="C")
    for i in range(5):
        store.set_value("k{}".format(i), i)
    assert [kv.value for kv in store.list_values(limit=2, offset=1)] == ["0", "1", "2", "3", "4"]


def test_polling_sensor_interval():
    class Poller(PollingSensor):
        def setup(self): pass
        def poll(self): pass
        def cleanup(self): pass
        def add_trigger(self, trigger): pass
        def update_trigger(self, trigger): pass
        def remove_trigger(self, trigger): pass

    sensor = Poller(sensor_service=None, config={"a": 1}, poll_interval=7)
    assert issubclass(Poller, Sensor) and sensor.config == {"a": 1}
    assert sensor.get_poll_interval() == 7
    sensor.set_poll_interval(30)
    assert sensor.get_poll_interval() == 30


SCHEMAS = {"p.done": {"type": "object", "additionalProperties": False,
                      "properties": {"sid": {"type": "string", "required": True}}}}


def make_service():
    from st2tests.base import _draft4
    return MockSensorService(MockSensorWrapper("p", "S"), {k: _draft4(v) for k, v in SCHEMAS.items()})


def test_dispatch_validates_payloads_like_st2_would_drop_them():
    service = make_service()
    service.dispatch("p.done", {"sid": "abc"}, trace_tag="t1")
    assert service.dispatched_triggers == [{"trigger": "p.done", "payload": {"sid": "abc"},
                                            "trace_context": {"trace_tag": "t1"}}]
    with pytest.raises(PayloadViolation, match="sid"):
        service.dispatch("p.done", {})
    with pytest.raises(PayloadViolation, match="unknown trigger"):
        service.dispatch("p.other", {"sid": "x"})
    assert len(service.violations) == 2 and len(service.dispatched_triggers) == 1


def test_sensor_test_case_fails_when_a_swallowed_violation_happened():
    class Swallower(PollingSensor):
        def setup(self): pass
        def cleanup(self): pass
        def add_trigger(self, trigger): pass
        def update_trigger(self, trigger): pass
        def remove_trigger(self, trigger): pass

        def poll(self):
            try:
                self.sensor_service.dispatch("assemblyline_threatconnect.no_such_trigger", {})
            except Exception:
                pass

    class Case(BaseSensorTestCase):
        sensor_cls = Swallower

        def runTest(self):
            self.get_sensor_instance().poll()

    result = Case().run()
    assert len(result.failures) == 1
    assert "dispatched payloads that real st2 would drop" in result.failures[0][1]


@pytest.mark.parametrize("fmt, command, expected", [
    ("run {{cmd}} on {{hosts}}", "run ls -la on web1", {"cmd": "ls -la", "hosts": "web1"}),
    ("al ingest {{path}}", 'al ingest "/data/a b.exe"', {"path": "/data/a b.exe"}),
    ("al ingest {{path}}", "al ingest /data/a.exe priority=200", {"path": "/data/a.exe", "priority": "200"}),
    ("al results {{sid}} {{limit=20}}", "al results abc", {"sid": "abc", "limit": "20"}),
    ("al results {{sid}} {{limit=20}}", "al results abc 5", {"sid": "abc", "limit": "5"}),
    ("(run|execute) {{cmd}}( on {{hosts=localhost}})?[!.]?", "execute date!", {"cmd": "date", "hosts": "localhost"}),
])
def test_alias_parser(fmt, command, expected):
    assert ActionAliasFormatParser(fmt, command).get_extracted_param_value() == expected


def test_alias_parser_rejects_a_non_matching_command():
    with pytest.raises(ParseException):
        ActionAliasFormatParser("al ingest {{path}}", "al status x").get_extracted_param_value()


@pytest.mark.parametrize("real, expected", [
    (("st2common",), "False"),
    (("st2common", "st2reactor"), "False"),
    (("st2common", "st2reactor", "st2tests"), "True"),
])
def test_stand_in_is_used_unless_all_real_packages_import(tmp_path, real, expected):
    import os
    import subprocess
    import sys
    for name in real:  # empty packages standing for a real install
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    pack_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys; sys.path[:0] = [{!r}, {!r}]; from tests.st2_standin import real_st2_available; " \
           "print(real_st2_available())".format(str(tmp_path), pack_dir)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
