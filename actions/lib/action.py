"""The pack's base action: validated config once, errors mapped at the edge.

Action modules subclass ``PackAction`` and implement ``run_action(**params)``.
A ``PackError`` becomes a failed execution whose result is
``{"error": <message>, "error_type": <kind>, ...}`` (st2's ``(False, result)``
convention) instead of a traceback in stderr. Unexpected exceptions still
propagate: they are bugs and st2 records them as such.
"""
import inspect
from typing import Any, Dict, Mapping, Optional

from st2common.runners.base_action import Action

from lib.assemblyline import AssemblylineService
from lib.config import load_config
from lib.errors import InputError, PackError
from lib.threatconnect import ThreatConnectClient


class PackAction(Action):
    def __init__(self, config=None, action_service=None):
        super().__init__(config=config, action_service=action_service)
        self._pack_config: Optional[Dict[str, Any]] = None
        self._assemblyline: Optional[AssemblylineService] = None
        self._threatconnect: Optional[ThreatConnectClient] = None

    @property
    def pack_config(self) -> Dict[str, Any]:
        """The validated config with defaults applied (raises ConfigError)."""
        if self._pack_config is None:
            self._pack_config = load_config(self.config)
        return self._pack_config

    def assemblyline(self) -> AssemblylineService:
        """One Assemblyline connection per action run, created on first use."""
        if self._assemblyline is None:
            self._assemblyline = AssemblylineService(self.pack_config["assemblyline"])
        return self._assemblyline

    def threatconnect(self) -> ThreatConnectClient:
        """One ThreatConnect session per action run, created on first use."""
        if self._threatconnect is None:
            self._threatconnect = ThreatConnectClient.from_config(self.pack_config)
        return self._threatconnect

    def run(self, **params):
        try:
            check_parameters(type(self).__module__, self.run_action, params)
            return self.run_action(**params)
        except PackError as error:
            self.logger.error("%s failed: %s", type(self).__name__, error)
            return False, error.to_result()

    def run_action(self, **params):
        raise NotImplementedError()


def check_parameters(action: str, method: Any, params: Mapping[str, Any]) -> None:
    """Raise ``InputError`` naming unknown and missing parameters (instead of a TypeError).

    st2 validates parameters against the action's YAML before ``run()``; this
    covers direct calls (``st2 run`` with a stale registration, tests, other
    Python code) with the same kind of clear message.
    """
    signature = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return
    unknown = sorted(set(params) - set(signature))
    missing = sorted(name for name, p in signature.items()
                     if p.default is inspect.Parameter.empty and name not in params
                     and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    problems = []
    if unknown:
        problems.append("unknown parameter{} {} (known: {})".format(
            "s" if len(unknown) > 1 else "", ", ".join(unknown), ", ".join(sorted(signature))))
    if missing:
        problems.append("missing required parameter{} {}".format(
            "s" if len(missing) > 1 else "", ", ".join(missing)))
    if problems:
        raise InputError("{}: {}".format(action, "; ".join(problems)))
