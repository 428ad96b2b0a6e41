"""``PackConfigDict``: the mapping st2 hands to actions as ``self.config``."""


class PackConfigDict(dict):
    """A dict whose ``[]`` on a missing key raises ``ValueError`` like st2's."""

    def __init__(self, pack_name, *args):
        super().__init__(*args)
        self._pack_name = pack_name

    def __getitem__(self, key):
        try:
            return super().__getitem__(key)
        except KeyError:
            raise ValueError(
                'Config for pack "{}" is missing key "{}". Make sure that the config file '
                "exists on disk (/opt/stackstorm/configs/{}.yaml) and contains that key."
                .format(self._pack_name, key, self._pack_name))
