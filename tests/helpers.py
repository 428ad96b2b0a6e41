"""Shared test helpers: pack configs pointing at the emulators."""
from typing import Any, Dict, Optional, Sequence

AL_USER = "st2"
AL_APIKEY = "st2key:al-s3cret-9d1f"
TC_ACCESS_ID = "12345678901234567890"
TC_SECRET_KEY = "tc-s3cret-key-0a7c"
TC_TOKEN = "tc-t0ken-5e2b"
TC_OWNER = "Example Org"
SECRETS = (AL_APIKEY.split(":", 1)[1], TC_SECRET_KEY, TC_TOKEN)


def pack_config(al_url: str = "https://al.example.org", tc_url: str = "https://tc.example.org/api",
                roots: Sequence[str] = (), drop_directory: Optional[str] = None,
                **sections: Dict[str, Any]) -> Dict[str, Any]:
    """A raw st2 config (before validation), like /opt/stackstorm/configs/<pack>.yaml."""
    config: Dict[str, Any] = {
        "assemblyline": {"url": al_url, "user": AL_USER, "api_key": AL_APIKEY, "retries": 2, "timeout": 5},
        "threatconnect": {"api_url": tc_url, "owner": TC_OWNER, "access_id": TC_ACCESS_ID,
                          "secret_key": TC_SECRET_KEY},
        "ingest": {"allowed_roots": list(roots)},
    }
    if drop_directory:
        config["ingest"]["drop_directory"] = drop_directory
    for name, values in sections.items():
        config[name] = dict(config.get(name, {}), **values)
    return config


def assert_no_secrets(*texts: Any) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), "a secret leaked"
