from lib.action import PackAction
from lib.ingest import ingest_files


class IngestFilesAction(PackAction):
    """Submit listed files; one file's failure never fails the others."""

    def run_action(self, paths, force=False, dedupe_days=30, concurrency=None, max_listed=100,
                   max_file_size=None, include_hidden=None, follow_symlinks=None, metadata=None,
                   notification_threshold=None, classification=None, description=None, deep_scan=None,
                   priority=None, services_selected=None, services_excluded=None, service_spec=None,
                   ignore_cache=None, submission_profile=None, generate_alert=None, never_drop=None):
        return ingest_files(
            self.pack_config, self.assemblyline(), self.action_service, paths=paths, force=force,
            dedupe_days=dedupe_days, concurrency=concurrency, max_listed=max_listed,
            max_file_size=max_file_size, include_hidden=include_hidden, follow_symlinks=follow_symlinks,
            metadata=metadata, notification_threshold=notification_threshold,
            submission_profile=submission_profile, classification=classification, description=description,
            deep_scan=deep_scan, priority=priority, services_selected=services_selected,
            services_excluded=services_excluded, service_spec=service_spec, ignore_cache=ignore_cache,
            generate_alert=generate_alert, never_drop=never_drop)
