"""Loading an alias from the pack's aliases/ directory (stand-in for the DB model)."""
import os
from typing import List

import yaml

from st2common.exceptions.content import ParseException  # noqa: F401  (re-exported)
from st2common.models.utils.action_alias_utils import ActionAliasFormatParser  # noqa: F401


class ActionAliasDB:
    def __init__(self, meta: dict):
        self.name = meta["name"]
        self.action_ref = meta["action_ref"]
        self.formats = meta.get("formats") or []

    def get_format_strings(self) -> List[str]:
        """Real ActionAliasDB's name: every representation, plus plain-string formats."""
        strings = []
        for item in self.formats:
            if isinstance(item, str):
                strings.append(item)
            else:
                strings.extend(item.get("representation") or [])
        return strings


def load_alias(pack_dir: str, name: str) -> ActionAliasDB:
    aliases_dir = os.path.join(pack_dir, "aliases")
    for file_name in sorted(os.listdir(aliases_dir)):
        if not file_name.endswith((".yaml", ".yml")):
            continue
        with open(os.path.join(aliases_dir, file_name), encoding="utf-8") as handle:
            meta = yaml.safe_load(handle) or {}
        if meta.get("name") == name:
            return ActionAliasDB(meta)
    raise ValueError('No alias named "{}" in {}'.format(name, aliases_dir))
