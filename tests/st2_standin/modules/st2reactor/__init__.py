"""Stand-in for st2reactor (tests only)."""
