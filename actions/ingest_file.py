from lib.action import PackAction
from lib.ingest import FileIngester, submission_request


class IngestFileAction(PackAction):
    """Submit one file to Assemblyline and record it for the notification sensor."""

    def run_action(self, path, metadata=None, notification_queue=None, notification_threshold=None,
                   classification=None, description=None, deep_scan=None, priority=None,
                   services_selected=None, services_excluded=None, service_spec=None, ignore_cache=None,
                   submission_profile=None, generate_alert=None, never_drop=None):
        request = submission_request(
            metadata, classification=classification, description=description, deep_scan=deep_scan,
            priority=priority, services_selected=services_selected, services_excluded=services_excluded,
            service_spec=service_spec, ignore_cache=ignore_cache, generate_alert=generate_alert,
            never_drop=never_drop)
        ingester = FileIngester.from_config(self.pack_config, self.assemblyline(), self.action_service)
        if notification_queue:
            ingester.queue = notification_queue
        outcome = ingester.ingest_path(path, request.params, request.metadata, notification_threshold,
                                       submission_profile)
        result = {"ingest_id": outcome["ingest_id"], "sha256": outcome["sha256"], "size": outcome["size"],
                  "queue": outcome["queue"], "file_path": outcome["path"]}
        if "warning" in outcome:
            self.logger.warning(outcome["warning"])
            result["warning"] = outcome["warning"]
        return result
