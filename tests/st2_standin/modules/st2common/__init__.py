"""Stand-in for st2common (tests only; see tests/st2_standin)."""
IS_STANDIN = True
