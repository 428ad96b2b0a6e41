"""Stand-in for st2reactor (tests only)."""
IS_STANDIN = True
