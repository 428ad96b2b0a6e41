from lib.action import PackAction
from lib.ingest_status import IngestChecker


class CheckIngestsAction(PackAction):
    """Where a run's ingests stand: completed, failed, overdue or still waiting."""

    def run_action(self, ingests, ingested_at, overdue_after=None, cache_grace=60):
        if overdue_after is None:
            overdue_after = self.pack_config["assemblyline"]["completion_deadline"]
        return IngestChecker(self.assemblyline()).check(ingests, ingested_at, overdue_after, cache_grace)
