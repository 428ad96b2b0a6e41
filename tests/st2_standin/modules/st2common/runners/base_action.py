"""Stand-in for ``st2common.runners.base_action`` (same constructor and attributes)."""
import abc
import logging

from st2common.runners.utils import PackConfigDict


class Action(abc.ABC):
    description = None

    def __init__(self, config=None, action_service=None):
        self.config = config or {}
        if not isinstance(self.config, PackConfigDict):
            self.config = PackConfigDict("tests", self.config)
        self.action_service = action_service
        self.logger = logging.getLogger("actions.python.{}".format(type(self).__name__))

    @abc.abstractmethod
    def run(self, **kwargs):
        raise NotImplementedError()
