from lib.action import PackAction
from lib.config import masked_config


class CheckConfigAction(PackAction):
    """Report the validated configuration so an operator can confirm what the pack will use."""

    def run_action(self):
        config = self.pack_config
        return {
            "valid": True,
            "threatconnect_auth": "token" if config["threatconnect"].get("api_token") else "hmac",
            "settings": masked_config(config),
        }
