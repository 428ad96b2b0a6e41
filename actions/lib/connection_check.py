"""Connection and credential checks of both services, for the ``check_config`` action.

Each check makes one real round trip (Assemblyline: the client's login;
ThreatConnect: ``GET /v2/owners``, an authenticated read that also shows
whether the configured owner is reachable) and answers
``{"ok": True, ...}`` or ``{"ok": False, "settings": [...], "error": ...}``
where ``settings`` names the config keys to look at. Messages come from the
services' errors, which are already free of secrets.
"""
from typing import Any, Dict, List, Mapping

from lib.assemblyline import TLS_LOGIN_STATUS, AssemblylineService
from lib.errors import AssemblylineError, ThreatConnectError
from lib.threatconnect import ThreatConnectClient

Check = Dict[str, Any]


def check_assemblyline(service: AssemblylineService) -> Check:
    """Log in to Assemblyline with the configured URL, user and API key."""
    try:
        service.client  # noqa: B018 (the property logs in)
    except AssemblylineError as error:
        return _failed(_assemblyline_settings(error), str(error), error.transient)
    return {"ok": True, "url": service.settings["url"], "user": service.settings["user"]}


def _assemblyline_settings(error: AssemblylineError) -> List[str]:
    text = str(error)
    if error.status == TLS_LOGIN_STATUS or "TLS with" in text:
        return ["assemblyline.ca_bundle", "assemblyline.verify_tls"]
    if error.status in (401, 403):
        return ["assemblyline.user", "assemblyline.api_key"]
    if "assemblyline.timeout" in text:
        return ["assemblyline.url", "assemblyline.timeout"]
    return ["assemblyline.url"]  # unreachable ("Max retry reached"), 404, not Assemblyline


def check_threatconnect(client: ThreatConnectClient) -> Check:
    """An authenticated read; the configured owner must be among the user's owners."""
    try:
        owners = client.owners()
    except ThreatConnectError as error:
        return _failed(_threatconnect_settings(error, client.settings), str(error), error.transient)
    if client.owner not in owners:
        return _failed(["threatconnect.owner"], "threatconnect.owner {!r} is not among the owners this "
                       "API user can access ({})".format(client.owner, ", ".join(owners) or "none"),
                       False)
    return {"ok": True, "url": client.api_url, "owner": client.owner}


def _threatconnect_settings(error: ThreatConnectError, settings: Mapping[str, Any]) -> List[str]:
    text = str(error)
    if error.status is None:
        if "TLS" in text:
            return ["threatconnect.ca_bundle", "threatconnect.verify_tls"]
        if "no answer within" in text or "timed out" in text:
            return ["threatconnect.api_url", "threatconnect.timeout"]
        return ["threatconnect.api_url"]
    if error.status in (401, 403):
        if settings.get("api_token"):
            return ["threatconnect.api_token"]
        return ["threatconnect.access_id", "threatconnect.secret_key"]
    return ["threatconnect.api_url"]  # 404, redirects, answers that are not TC's


def _failed(settings: List[str], error: str, transient: bool) -> Check:
    return {"ok": False, "settings": settings, "transient": transient,
            "error": "check {}: {}".format(" / ".join(settings), error)}
