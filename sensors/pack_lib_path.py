"""Make the pack's shared library (``actions/lib``) importable from sensors.

StackStorm puts only a sensor's own directory (``sensors/``) on ``sys.path``;
``actions/lib`` is added for actions alone, and a root ``lib/`` would need
``[packs] enable_common_libs = True``, which is off by default. So every
sensor module imports this one first::

    import pack_lib_path  # noqa: F401  (puts actions/ on sys.path)
    from lib.config import load_config

It adds the pack's ``actions/`` directory (the parent of ``lib``), exactly as
st2's python runner does for actions, so the library resolves to the same
package in both runtimes. Each sensor runs in its own process, so the path
change affects that sensor alone.
"""
import os
import sys

ACTIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions")


def ensure_pack_lib_importable() -> str:
    if ACTIONS_DIR not in sys.path:
        sys.path.insert(0, ACTIONS_DIR)
    return ACTIONS_DIR


ensure_pack_lib_importable()
