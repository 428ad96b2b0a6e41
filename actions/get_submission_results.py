from lib.action import PackAction
from lib.al_results import shape_results
from lib.errors import InputError


class GetSubmissionResultsAction(PackAction):
    """Summarise one analysis: state, verdict, IOC tags and file hashes."""

    def run_action(self, sid, max_tags=1000, max_files=100):
        sid = (sid or "").strip()
        if not sid or "/" in sid:
            raise InputError("sid must be an Assemblyline submission ID")
        service = self.assemblyline()
        full = service.full(sid)
        summary = service.summary(sid)
        return shape_results(summary, full, service.submission_link(sid), max_tags, max_files)
