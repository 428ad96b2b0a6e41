from lib.action import PackAction
from lib.errors import ThreatConnectError
from lib.sending import send_analyses
from lib.tc_batch_config import batch_overrides


class SendToThreatconnectAction(PackAction):
    """Fetch, build and send the indicators of Assemblyline submissions in one process."""

    def run_action(self, sids, owner=None, attribute_write_type=None, tag_write_type=None,
                   security_label_write_type=None, max_tags=1000, max_listed=20):
        overrides = batch_overrides(owner=owner, attribute_write_type=attribute_write_type,
                                    tag_write_type=tag_write_type,
                                    security_label_write_type=security_label_write_type)
        try:
            return send_analyses(self.assemblyline(), self.threatconnect(), self.pack_config, sids,
                                 max_tags=max_tags, max_listed=max_listed, overrides=overrides)
        except ThreatConnectError as error:
            result = error.to_result()
            partial = getattr(error, "partial_result", None)
            if partial is not None:  # jobs already created are reported, not lost
                result["partial"] = partial
            return False, result
