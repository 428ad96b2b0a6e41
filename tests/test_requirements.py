"""The pack's requirements never fight StackStorm's own pins.

``st2 pack install`` installs requirements.txt into the pack's virtualenv and
``st2-run-pack-tests`` installs requirements-tests.txt into st2's; a pin or cap
that excludes what StackStorm 3.9 ships would downgrade st2 itself.
"""
import os

import pytest

from packaging.requirements import Requirement

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# StackStorm 3.9.0's fixed-requirements.txt (shared/reference/stackstorm.md)
ST2_39_PINS = {"jsonschema": "3.2.0", "networkx": "3.1", "orjson": "3.10.15", "orquesta": "1.6.0"}
# Python versions StackStorm 3.9 runs on
ST2_PYTHONS = ("3.8", "3.9", "3.10", "3.11")


def requirements(name):
    parsed = []
    with open(os.path.join(PACK_DIR, name), encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                parsed.append(Requirement(line))
    return parsed


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-tests.txt"])
def test_installed_by_st2_never_excludes_st2_39_pins(name):
    for requirement in requirements(name):
        pinned = ST2_39_PINS.get(requirement.name.lower())
        if pinned is None:
            continue
        for python in ST2_PYTHONS:
            applies = requirement.marker is None or requirement.marker.evaluate({"python_version": python})
            assert not applies or requirement.specifier.contains(pinned), \
                "{}: {} would replace st2's {}=={} on Python {}".format(name, requirement, requirement.name,
                                                                     pinned, python)


def test_the_conductor_pin_is_outside_what_st2_installs():
    names = {r.name.lower() for r in requirements("requirements-tests.txt") + requirements("requirements.txt")}
    assert "orquesta" not in names
    assert [str(r) for r in requirements(os.path.join("tests", "requirements-conductor.txt"))] == \
        ['orquesta==1.2.0; python_version < "3.9"']
