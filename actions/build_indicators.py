from lib.action import PackAction
from lib.al_results import TagOrder, fetch_results
from lib.errors import InputError
from lib.indicators import build_indicators


class BuildIndicatorsAction(PackAction):
    """Turn one Assemblyline analysis into ThreatConnect batch indicators and its group."""

    def run_action(self, sid=None, results=None, max_tags=1000):
        if (sid is None) == (results is None):
            raise InputError("give exactly one of 'sid' (fetched from Assemblyline) or 'results' "
                             "(the output of get_submission_results)")
        if results is None:
            results = fetch_results(self.assemblyline(), sid, max_tags=max_tags,
                                    order=TagOrder.from_mapping(self.pack_config.get("mapping")))
        elif isinstance(results, dict) and "error" in results and "sid" not in results:
            raise InputError("'results' is a failed action's result, not submission results: "
                             "{}".format(str(results["error"])[:300]))
        built = build_indicators(results, self.pack_config).to_dict()
        built["sid"] = results["sid"]
        if built["rejected"]:
            self.logger.info("%d values rejected for submission %s", len(built["rejected"]),
                             built["sid"])
        return built
