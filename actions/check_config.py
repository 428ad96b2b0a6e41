from lib.action import PackAction
from lib.config import masked_config
from lib.connection_check import check_assemblyline, check_threatconnect


class CheckConfigAction(PackAction):
    """Validate the configuration, then log in to Assemblyline and read from ThreatConnect.

    Every failed check names the settings to look at; both services are
    always checked, so one run shows every problem.
    """

    def run_action(self, check_connections=True):
        config = self.pack_config
        result = {
            "valid": True,
            "threatconnect_auth": "token" if config["threatconnect"].get("api_token") else "hmac",
            "settings": masked_config(config),
        }
        if not check_connections:
            return result
        checks = {"assemblyline": check_assemblyline(self.assemblyline()),
                  "threatconnect": check_threatconnect(self.threatconnect())}
        result["connections"] = checks
        failed = [check for check in checks.values() if not check["ok"]]
        if not failed:
            return result
        result.update(error="; ".join(check["error"] for check in failed), error_type="connection",
                      transient=all(check["transient"] for check in failed))
        self.logger.error("check_config: %s", result["error"])
        return False, result
