"""Test session set-up shared by every test module.

Mirrors what ``st2-run-pack-tests`` does: ``actions/``, ``actions/lib`` and
``sensors/`` go on ``sys.path``; and installs the st2 stand-in only when the real
StackStorm modules are not importable.
"""
import os
import sys

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

for _sub in ("sensors", os.path.join("actions", "lib"), "actions"):
    _path = os.path.join(PACK_DIR, _sub)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tests.st2_standin import install_if_missing  # noqa: E402

install_if_missing()
