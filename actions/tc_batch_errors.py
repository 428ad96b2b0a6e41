from lib.action import PackAction
from lib.batch_report import error_limit, first_errors


class TcBatchErrorsAction(PackAction):
    """The first errors of a completed job and how many there are."""

    def run_action(self, batch_id, max_errors=None):
        errors = [{"reason": e.get("errorReason"), "source": e.get("errorSource")}
                  for e in self.threatconnect().errors(batch_id)]
        result = {"batch_id": batch_id, "error_count": len(errors)}
        result.update(first_errors(errors, error_limit(self.pack_config, max_errors)))
        return result
