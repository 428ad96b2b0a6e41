from lib.action import PackAction
from lib.batch_report import error_limit, jobs_report
from lib.errors import InputError


class TcBatchesStatusAction(PackAction):
    """One status poll of several batch jobs; their errors once all are Completed."""

    def run_action(self, batch_ids, max_errors=None):
        if not isinstance(batch_ids, list) or not batch_ids:
            raise InputError("batch_ids must be a non-empty list of batch job ids")
        return jobs_report(self.threatconnect(), batch_ids, error_limit(self.pack_config, max_errors))
