"""The fault suite (tests/fault_suite.py): 1,000 ingests, 20 % AL faults, a sensor killed and
restarted at random points. Every ingest Assemblyline holds is reported exactly once."""
import pytest

from st2tests.base import BaseSensorTestCase

from notification_sensor import AssemblylineNotificationSensor
from tests import fault_suite
from tests.emulators.assemblyline import AssemblylineEmulator
from tests.helpers import AL_APIKEY, AL_USER


class FaultSuiteTest(BaseSensorTestCase):
    sensor_cls = AssemblylineNotificationSensor

    @pytest.fixture(autouse=True)
    def _emulator(self, tmp_path):
        with AssemblylineEmulator(user=AL_USER, apikey=AL_APIKEY) as emulator:
            self.emulator, self.drop = emulator, tmp_path
            yield

    def test_a_thousand_ingests_through_faults_and_kills_lose_nothing(self):
        figures = fault_suite.run(self.emulator, self.sensor_service, self.drop, files=1000, seed=7)
        print("\nfault suite:", figures)
        assert figures["lost"] == 0 and figures["unflagged_duplicates"] == 0
        assert figures["pending_left"] == 0
        # the faults and kills really happened, at every kind of point
        faults = figures["faults_injected"]
        assert all(faults.get(kind, 0) >= 20 for kind in (502, 503, "timeout", "lost")), faults
        assert set(figures["sensor_kills"]) == {"after_pop", "at_persist", "at_dispatch"}
        assert figures["reconciled"] > 0 and figures["flagged_redeliveries"] > 0
        outcomes = figures["outcomes"]
        assert outcomes.get("completed", 0) > 800 and outcomes.get("failed", 0) > 10
        # every upload AL holds ends as one outcome; overdue only where AL kept no submission
        # (an ingest it skipped, whose failure message died with a page)
        assert sum(outcomes.values()) == figures["uploads_held_by_al"]
        assert figures["overdue_with_a_submission"] == 0

    def test_the_suite_counts_a_lost_ingest_and_an_unflagged_duplicate(self):
        """The figures are not vacuous: a dropped trigger and a plain repeat are both seen."""
        figures = fault_suite.run(self.emulator, self.sensor_service, self.drop, files=30, fault_rate=0,
                                  seed=3)
        assert figures["lost"] == 0 and figures["unflagged_duplicates"] == 0
        dispatched = self.sensor_service.dispatched_triggers
        outcome = [d for d in dispatched if d["trigger"] in fault_suite.OUTCOMES]
        dispatched.append(dict(outcome[0]))   # a repeat without the redelivered flag
        dispatched.remove(outcome[1])         # and a trigger that never fired
        from lib.ledger import IngestLedger
        again = fault_suite.figures(self.emulator, self.sensor_service, IngestLedger(self.sensor_service),
                                    [], fault_suite.Counter(), 0, 0.0)
        assert again["lost"] == 1 and again["unflagged_duplicates"] == 1
