from lib.action import PackAction
from lib.al_results import TagOrder, fetch_results


class GetSubmissionResultsAction(PackAction):
    """Summarise one analysis: state, verdict, IOC tags and file hashes."""

    def run_action(self, sid, max_tags=1000, max_files=100):
        order = TagOrder.from_mapping(self.pack_config.get("mapping"))
        return fetch_results(self.assemblyline(), sid, max_tags, max_files, order)
