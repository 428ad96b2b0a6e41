from lib.action import PackAction
from lib.batch_report import error_limit, submission_summary
from lib.errors import ThreatConnectError
from lib.tc_batch_config import batch_overrides
from lib.tc_submit import submit


class TcSubmitIndicatorsAction(PackAction):
    """Chunk, send, poll and summarise any number of indicators and groups."""

    def run_action(self, indicators=None, groups=None, action="Create", owner=None,
                   halt_on_error=None, attribute_write_type=None, tag_write_type=None,
                   security_label_write_type=None, file_merge_mode=None, hash_collision_mode=None,
                   max_errors=None):
        overrides = batch_overrides(
            owner=owner, halt_on_error=halt_on_error, attribute_write_type=attribute_write_type,
            tag_write_type=tag_write_type, security_label_write_type=security_label_write_type,
            file_merge_mode=file_merge_mode, hash_collision_mode=hash_collision_mode)
        limit = error_limit(self.pack_config, max_errors)
        try:
            aggregate = submit(self.threatconnect(), indicators or [], groups or [], action, overrides)
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
