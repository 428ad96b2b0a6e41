from lib.action import PackAction
from lib.dead_letters import DeadLetters
from lib.errors import InputError


class ListDeadLettersAction(PackAction):
    """Notification messages the sensor could not turn into triggers (oldest first)."""

    def run_action(self, limit=20, delete=None):
        letters = DeadLetters(self.action_service)
        deleted = []
        for key in delete or []:
            try:
                if letters.delete(key):
                    deleted.append(key)
            except ValueError as error:
                raise InputError(str(error)) from None
        result = letters.list(limit)
        result["deleted"] = deleted
        return result
