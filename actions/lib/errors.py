"""The pack's exceptions.

Every error the library raises on purpose is a ``PackError``: actions turn it
into a failed result with a clear message, sensors log it and carry on. The
messages never contain secret values: they are built from key names, HTTP
statuses and server messages only.
"""
from typing import Optional, Sequence


class PackError(Exception):
    """Base class of every error the pack raises on purpose.

    ``transient`` says whether the same call may succeed later unchanged
    (an unreachable server, a 5xx or 429, an analysis still running): the
    workflows retry exactly those and fail at once on everything else.
    """

    kind = "error"
    transient = False

    def to_result(self) -> dict:
        return {"error": str(self), "error_type": self.kind, "transient": self.transient}


class ConfigError(PackError):
    """The pack configuration is invalid; lists every problem at once."""

    kind = "config"

    def __init__(self, problems: Sequence[str], source: str = "pack config"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join("  - " + p for p in self.problems)
        super().__init__("Invalid {} ({} problem{}):\n{}".format(
            source, len(self.problems), "" if len(self.problems) == 1 else "s", lines))


class InputError(PackError):
    """An action parameter or trigger payload is unusable."""

    kind = "input"


class UnsafePathError(InputError):
    """A file was refused by the safe file selection rules."""

    kind = "unsafe_path"

    def __init__(self, path: str, reason: str, group: Optional[str] = None):
        self.path = path
        self.reason = reason
        self.group = group or reason  # the reason without per-file details, for counting
        super().__init__("Refused {!r}: {}".format(path, reason))


TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})


class RemoteError(PackError):
    """A remote service answered with an error or could not be reached."""

    kind = "remote"
    service = "remote service"

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return self.status is None or self.status in TRANSIENT_HTTP_STATUSES

    def __init__(self, message: str, status: Optional[int] = None):
        self.status = status
        self.message = message
        prefix = "{} error".format(self.service)
        if status is not None:
            prefix += " (HTTP {})".format(status)
        super().__init__("{}: {}".format(prefix, message))

    def to_result(self) -> dict:
        result = super().to_result()
        result["status"] = self.status
        return result


class AssemblylineError(RemoteError):
    kind = "assemblyline"
    service = "Assemblyline"


class ThreatConnectError(RemoteError):
    kind = "threatconnect"
    service = "ThreatConnect"


class AnalysisNotReady(PackError):
    """An Assemblyline submission is not completed yet: asking again later may succeed."""

    kind = "not_ready"
    transient = True
