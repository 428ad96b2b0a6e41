"""Stand-in for the StackStorm Python contracts (tests only).

``install_if_missing()`` puts this directory's ``st2common``, ``st2reactor`` and
``st2tests`` packages on ``sys.path`` when ``import st2common`` fails, so the
same tests run here and under upstream ``st2-run-pack-tests``.
"""
import importlib
import os
import sys

STANDIN_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(STANDIN_DIR, "modules")


REAL_MODULES = ("st2common", "st2reactor", "st2tests")


def real_st2_available() -> bool:
    """True only when all three real StackStorm packages import (a partial install is not enough)."""
    for name in REAL_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            return False
        if getattr(module, "IS_STANDIN", False):
            return False
    return True


def install_if_missing() -> bool:
    """Return True when the stand-in was installed."""
    if ROOT in sys.path:
        return True
    if real_st2_available():
        return False
    sys.path.insert(0, ROOT)
    return True
