from lib.action import PackAction
from lib.tc_batch_config import batch_overrides


class TcBatchCreateAction(PackAction):
    """Create a batch job from the pack's BatchConfig defaults plus the given overrides."""

    def run_action(self, action="Create", owner=None, halt_on_error=None, attribute_write_type=None,
                   tag_write_type=None, security_label_write_type=None, file_merge_mode=None,
                   hash_collision_mode=None):
        overrides = batch_overrides(
            owner=owner, halt_on_error=halt_on_error, attribute_write_type=attribute_write_type,
            tag_write_type=tag_write_type, security_label_write_type=security_label_write_type,
            file_merge_mode=file_merge_mode, hash_collision_mode=hash_collision_mode)
        client = self.threatconnect()
        config = client.batch_config(action, overrides)
        return {"batch_id": client.create_batch(config), "config": config}
