"""Sensors import the pack library from a clean process with only st2's sensor path.

st2's sensor container puts the sensor's own directory (sensors/) on sys.path,
next to the pack virtualenv's site-packages and st2's own modules; actions/ and
actions/lib are not there. Each sensor module must still import, with
``lib`` resolving to this pack's actions/lib.
"""
import glob
import os
import site
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.st2_standin import ROOT as STANDIN_ROOT, real_st2_available

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENSORS_DIR = os.path.join(PACK_DIR, "sensors")


def sensor_modules():
    modules = ["pack_lib_path"]
    for path in sorted(glob.glob(os.path.join(SENSORS_DIR, "*.yaml"))):
        meta = yaml.safe_load(open(path))
        modules.append(os.path.splitext(meta["entry_point"])[0])
    return modules


def run_clean(code):
    """Run ``code`` in a fresh interpreter whose sys.path holds only what st2 gives sensors."""
    path = [SENSORS_DIR] + site.getsitepackages()
    if not real_st2_available():
        path.append(STANDIN_ROOT)
    program = ("import sys\n"
               "stdlib = [p for p in sys.path if p.startswith(sys.base_prefix) and 'site-packages' not in p]\n"
               "sys.path[:] = stdlib + {!r}\n".format(path)) + textwrap.dedent(code)
    # -E ignores PYTHONPATH, -s the user site; cwd outside the pack so '' adds nothing.
    return subprocess.run([sys.executable, "-E", "-s", "-c", program], cwd="/",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=60)


@pytest.mark.parametrize("module", sensor_modules())
def test_sensor_module_imports_the_pack_library_in_a_clean_process(module):
    done = run_clean("""
        import importlib, os
        try:
            import lib
            raise SystemExit("lib importable before the sensor module: the test proves nothing")
        except ImportError:
            pass
        importlib.import_module({module!r})
        import lib.config
        from lib.config import load_config
        print(os.path.dirname(os.path.abspath(lib.config.__file__)))
    """.format(module=module))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == os.path.join(PACK_DIR, "actions", "lib")


def test_without_the_bootstrap_the_library_is_not_importable():
    done = run_clean("import lib.config\n")
    assert done.returncode != 0 and "No module named 'lib'" in done.stderr
