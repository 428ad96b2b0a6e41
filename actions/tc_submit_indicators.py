from lib.action import PackAction
from lib.batch_report import error_limit, submission_summary
from lib.errors import ThreatConnectError


class TcSubmitIndicatorsAction(PackAction):
    """Chunk, send, poll and summarise any number of indicators and groups."""

    def run_action(self, indicators=None, groups=None, action="Create", halt_on_error=None,
                   attribute_write_type=None, max_errors=None):
        overrides = {}
        if halt_on_error is not None:
            overrides["haltOnError"] = halt_on_error
        if attribute_write_type is not None:
            overrides["attributeWriteType"] = attribute_write_type
        limit = error_limit(self.pack_config, max_errors)
        try:
            aggregate = self.threatconnect().submit(indicators or [], groups or [], action, overrides)
        except ThreatConnectError as error:
            partial = getattr(error, "partial_result", None)
            result = error.to_result()
            if partial is not None:  # what was already accepted is reported, not lost
                result["partial"] = submission_summary(partial, limit)
            return False, result
        summary = submission_summary(aggregate, limit)
        if aggregate["stopped"] or aggregate["totals"]["error"] or aggregate["totals"]["rejected"]:
            self.logger.warning("ThreatConnect submission incomplete: %s", aggregate["totals"])
        return summary
