from lib.action import PackAction


class TcBatchCreateAction(PackAction):
    """Create a batch job from the pack's BatchConfig defaults plus the given overrides."""

    def run_action(self, action="Create", owner=None, halt_on_error=None, attribute_write_type=None,
                   tag_write_type=None, security_label_write_type=None, file_merge_mode=None,
                   hash_collision_mode=None):
        overrides = {key: value for key, value in (
            ("owner", owner), ("haltOnError", halt_on_error), ("attributeWriteType", attribute_write_type),
            ("tagWriteType", tag_write_type), ("securityLabelWriteType", security_label_write_type),
            ("fileMergeMode", file_merge_mode), ("hashCollisionMode", hash_collision_mode),
        ) if value is not None}
        client = self.threatconnect()
        config = client.batch_config(action, overrides)
        return {"batch_id": client.create_batch(config), "config": config}
