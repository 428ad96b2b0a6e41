from lib.action import PackAction
from lib.errors import InputError
from lib.tc_batch_bodies import iter_jobs


class TcBatchUploadAction(PackAction):
    """Upload one job body; a body that does not fit one job is refused (use tc_submit_indicators)."""

    def run_action(self, batch_id, indicators=None, groups=None, gzip=None):
        client = self.threatconnect()
        rejected = []
        jobs = list(iter_jobs(groups or [], indicators or [], client.max_items, client.max_bytes, rejected))
        if rejected:
            raise InputError("{} item(s) cannot be sent, first: {} ({})".format(
                len(rejected), rejected[0]["reason"], rejected[0]["source"]))
        if len(jobs) != 1:
            raise InputError("{} items need {} batch jobs (limits: {} items, {} bytes per job); "
                             "use tc_submit_indicators".format(
                                 sum(j.items for j in jobs), len(jobs), client.max_items, client.max_bytes)
                             if jobs else "nothing to upload: indicators and groups are empty")
        answer = client.upload(batch_id, jobs[0].body, gzip=gzip)
        return {"batch_id": batch_id, "status": answer.get("status"), "items": jobs[0].items,
                "bytes": len(jobs[0].body)}
