"""``make demo``: the pack end to end against loopback emulators (see demo/run.py)."""
