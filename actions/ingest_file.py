from lib.action import PackAction
from lib.ingest import ingest_one


class IngestFileAction(PackAction):
    """Submit one file to Assemblyline and record it for the notification sensor."""

    def run_action(self, path, metadata=None, notification_queue=None, notification_threshold=None,
                   classification=None, description=None, deep_scan=None, priority=None,
                   services_selected=None, services_excluded=None, service_spec=None, ignore_cache=None,
                   submission_profile=None, generate_alert=None, never_drop=None):
        result = ingest_one(
            self.pack_config, self.assemblyline(), self.action_service, path, metadata=metadata,
            notification_queue=notification_queue, notification_threshold=notification_threshold,
            submission_profile=submission_profile, classification=classification, description=description,
            deep_scan=deep_scan, priority=priority, services_selected=services_selected,
            services_excluded=services_excluded, service_spec=service_spec, ignore_cache=ignore_cache,
            generate_alert=generate_alert, never_drop=never_drop)
        if "warning" in result:
            self.logger.warning(result["warning"])
        return result
