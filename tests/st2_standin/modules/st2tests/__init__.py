"""Stand-in for st2tests (tests only)."""
