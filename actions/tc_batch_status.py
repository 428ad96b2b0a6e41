from lib.action import PackAction
from lib.batch_report import job_status


class TcBatchStatusAction(PackAction):
    """Status and counts of a batch job; with ``wait``, poll until it completes."""

    def run_action(self, batch_id, wait=False, wait_timeout=None):
        client = self.threatconnect()
        if wait:
            status, completed = client.wait(batch_id, timeout=wait_timeout)
        else:
            status = client.status(batch_id)
            completed = status.get("status") == "Completed"
        return job_status(batch_id, status, completed)
