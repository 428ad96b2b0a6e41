"""Stand-in for st2tests (tests only)."""
IS_STANDIN = True
