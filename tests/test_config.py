"""The config module: one schema, defaults, every problem at once, no secrets in errors."""
import os

import pytest
import yaml

from st2tests.base import BaseActionTestCase

from check_config import CheckConfigAction
from lib.config import load_config, load_schema, masked_config
from lib.errors import ConfigError

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AL_SECRET = "alsecret-7f3a9c1e-LEAKCHECK"
TC_SECRET = "tcsecret-51d0be2a-LEAKCHECK"
TOKEN = "tctoken-c0ffee99-LEAKCHECK"


def minimal(**overrides):
    config = {
        "assemblyline": {"url": "https://al.example.org", "user": "st2", "api_key": "st2key:" + AL_SECRET},
        "threatconnect": {"api_url": "https://tc.example.org/api", "owner": "Example Org",
                          "access_id": "12345678901234567890", "secret_key": TC_SECRET},
    }
    for section, values in overrides.items():
        config[section] = dict(config.get(section, {}), **values)
    return config


def problems_of(raw):
    with pytest.raises(ConfigError) as caught:
        load_config(raw)
    return caught.value.problems, str(caught.value)


def test_example_config_validates_against_the_schema():
    with open(os.path.join(PACK_DIR, "assemblyline_threatconnect.yaml.example")) as handle:
        config = load_config(yaml.safe_load(handle))
    assert config["ingest"]["allowed_roots"] == ["/var/quarantine"]
    assert config["threatconnect"]["attribute_write_type"] == "Singleton"


def test_example_config_sets_every_schema_key_except_alternatives():
    """The example is complete: every key of the schema appears (set or commented)."""
    text = open(os.path.join(PACK_DIR, "assemblyline_threatconnect.yaml.example")).read()
    schema = yaml.safe_load(open(os.path.join(PACK_DIR, "config.schema.yaml")))
    missing = ["{}.{}".format(s, k) for s, sub in schema.items() for k in sub["properties"]
               if "{}:".format(k) not in text]
    assert missing == []


def test_defaults_are_applied_recursively():
    config = load_config(minimal())
    assert config["assemblyline"]["verify_tls"] is True
    assert config["assemblyline"]["retries"] == 5
    assert config["threatconnect"]["verify_tls"] is True
    assert config["threatconnect"]["batch_max_bytes"] == 2000000
    assert config["ingest"] == {"allowed_roots": [], "max_file_size": 104857600, "follow_symlinks": False, "allow_hardlinks": False,
                                "include_hidden": False, "concurrency": 4, "max_files_per_run": 1000}
    assert config["mapping"]["min_h_type"] == "suspicious"


def test_load_does_not_modify_the_input_and_accepts_pack_config_dict():
    from st2common.runners.utils import PackConfigDict
    raw = PackConfigDict("tests", minimal())
    config = load_config(raw)
    assert "verify_tls" not in raw["assemblyline"]
    assert type(config) is dict and type(config["assemblyline"]) is dict


def test_every_problem_is_reported_at_once():
    raw = minimal(assemblyline={"url": "ftp://al.example.org", "retries": 0, "timeuot": 3, "user": 7},
                  threatconnect={"api_token": TOKEN},
                  ingest={"allowed_roots": ["relative/dir"], "max_file_size": "big"})
    del raw["threatconnect"]["owner"]
    problems, message = problems_of(raw)
    assert problems == [
        "unknown key assemblyline.timeuot (check the spelling against config.schema.yaml)",
        "assemblyline.retries: minimum is 1",
        "assemblyline.user: expected string, got integer",
        "ingest.max_file_size: expected integer, got string",
        "missing required key threatconnect.owner",
        "assemblyline.url: must start with https:// (or http://)",
        "threatconnect: configure either api_token or access_id + secret_key, not both",
        "ingest.allowed_roots.0: must be an absolute path",
    ]
    assert message.startswith("Invalid pack config (8 problems):")


def test_empty_config_names_every_required_key():
    problems, _ = problems_of({})
    assert problems == [
        "missing required keys assemblyline.url, assemblyline.user, assemblyline.api_key",
        "missing required keys threatconnect.api_url, threatconnect.owner",
        "threatconnect: no credentials; set api_token or access_id + secret_key",
    ]


@pytest.mark.parametrize("threatconnect, expected", [
    ({"access_id": None, "secret_key": None}, "threatconnect: no credentials"),
    ({"api_token": TOKEN}, "threatconnect: configure either api_token or access_id + secret_key, not both"),
    ({"secret_key": None}, "threatconnect.secret_key: required with access_id"),
    ({"access_id": None}, "threatconnect.access_id: required with secret_key"),
    ({"api_url": "https://tc.example.org/v2"}, "threatconnect.api_url: must end with /api"),
    ({"api_url": "https://user:pw@tc.example.org/api"}, "threatconnect.api_url: must not carry credentials"),
    ({"api_url": "https:///api"}, "threatconnect.api_url: has no host name"),
    ({"ca_bundle": "/nonexistent/ca.pem"}, "threatconnect.ca_bundle: no such file"),
    ({"attribute_write_type": "Merge"}, "threatconnect.attribute_write_type: must be one of Append, Replace"),
    ({"batch_max_items": 30000}, "threatconnect.batch_max_items: maximum is 25000"),
])
def test_threatconnect_problems(threatconnect, expected):
    raw = minimal(threatconnect=threatconnect)
    raw["threatconnect"] = {k: v for k, v in raw["threatconnect"].items() if v is not None}
    problems, _ = problems_of(raw)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize("assemblyline, expected", [
    ({"api_key": AL_SECRET}, "assemblyline.api_key: must have the form keyname:secret"),
    ({"notification_queue": "Bad-Queue"}, "assemblyline.notification_queue: must match"),
    ({"poll_interval": 2}, "assemblyline.poll_interval: minimum is 4"),
    ({"proxies": {"https": 3128}}, "assemblyline.proxies.https: expected string, got integer"),
    ({"verify_tls": "no"}, "assemblyline.verify_tls: expected boolean, got string"),
])
def test_assemblyline_problems(assemblyline, expected):
    problems, _ = problems_of(minimal(assemblyline=assemblyline))
    assert any(p.startswith(expected) for p in problems), problems


def test_unknown_section_is_named():
    raw = minimal()
    raw["assemblylnie"] = {}
    problems, _ = problems_of(raw)
    assert problems == ["unknown key assemblylnie (check the spelling against config.schema.yaml)"]


def test_non_mapping_config_is_refused():
    problems, _ = problems_of(["not", "a", "mapping"])
    assert problems == ["the config must be a mapping of keys to values, got array"]


@pytest.mark.parametrize("raw", [
    minimal(assemblyline={"api_key": AL_SECRET, "user": AL_SECRET + "x" * 3, "retries": AL_SECRET}),
    minimal(threatconnect={"secret_key": 5, "access_id": TC_SECRET, "api_token": TOKEN,
                           "owner": ["x", TC_SECRET]}),
    minimal(assemblyline={"url": "https://x:" + AL_SECRET + "@al/"}, threatconnect={"api_url": TOKEN}),
    {"assemblyline": AL_SECRET, "threatconnect": {"api_token": {"nested": TOKEN}}, "mapping": TC_SECRET},
])
def test_secrets_never_appear_in_error_text(raw):
    _, message = problems_of(raw)
    for secret in (AL_SECRET, TC_SECRET, TOKEN):
        assert secret not in message


def test_masked_config_hides_every_secret():
    config = load_config(minimal())
    masked = masked_config(config)
    text = str(masked)
    assert AL_SECRET not in text and TC_SECRET not in text
    assert masked["assemblyline"]["api_key"] == "********"
    assert masked["threatconnect"]["access_id"] == "********"
    assert masked["assemblyline"]["url"] == "https://al.example.org"


def test_schema_translation_keeps_one_source_of_truth():
    schema = load_schema()
    assert schema["required"] == ["assemblyline", "threatconnect"]
    assert schema["properties"]["assemblyline"]["required"] == ["url", "user", "api_key"]
    assert "secret" not in schema["properties"]["assemblyline"]["properties"]["api_key"]


class CheckConfigActionTest(BaseActionTestCase):
    action_cls = CheckConfigAction

    def test_reports_effective_settings_without_secrets(self):
        result = self.get_action_instance(minimal()).run(check_connections=False)
        assert result["valid"] is True and result["threatconnect_auth"] == "hmac"
        assert "connections" not in result
        assert result["settings"]["threatconnect"]["secret_key"] == "********"
        assert AL_SECRET not in str(result) and TC_SECRET not in str(result)

    def test_invalid_config_fails_with_the_problem_list(self):
        ok, result = self.get_action_instance({"assemblyline": {"api_key": AL_SECRET}}).run()
        assert ok is False
        assert result["error_type"] == "config"
        assert "missing required keys assemblyline.url, assemblyline.user" in result["error"]
        assert AL_SECRET not in str(result)
