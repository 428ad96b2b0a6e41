from lib.action import PackAction
from lib.errors import InputError
from lib.ingest import FileIngester, ingest_directory, submission_request

SECONDS_PER_DAY = 86400


class IngestDirectoryAction(PackAction):
    """Submit a directory tree; one file's failure never fails the others."""

    def run_action(self, directory=None, include=None, exclude=None, force=False, dedupe_days=30,
                   max_files=None, concurrency=None, max_listed=100, metadata=None,
                   notification_threshold=None, classification=None, description=None, deep_scan=None,
                   priority=None, services_selected=None, services_excluded=None, service_spec=None,
                   ignore_cache=None, submission_profile=None, generate_alert=None, never_drop=None):
        ingest_config = self.pack_config["ingest"]
        directory = directory or ingest_config.get("drop_directory")
        if not directory:
            raise InputError("no directory given and ingest.drop_directory is not configured")
        request = submission_request(
            metadata, classification=classification, description=description, deep_scan=deep_scan,
            priority=priority, services_selected=services_selected, services_excluded=services_excluded,
            service_spec=service_spec, ignore_cache=ignore_cache, generate_alert=generate_alert,
            never_drop=never_drop)
        ingester = FileIngester.from_config(self.pack_config, self.assemblyline(), self.action_service)
        return ingest_directory(
            ingester, directory, request.params, request.metadata, include or ["*"], exclude or [],
            concurrency=concurrency or ingest_config["concurrency"],
            max_files=max_files or ingest_config["max_files_per_run"], force=force,
            dedupe_ttl=dedupe_days * SECONDS_PER_DAY, threshold=notification_threshold,
            submission_profile=submission_profile, max_listed=max_listed)
