"""Stand-in for ``st2common.operators``: the rule criteria operators a rule of this pack uses.

Same names, aliases and semantics as st2's module: ``get_operator(op)``
returns ``f(value, criteria_pattern)``; an unknown name raises
``Exception("Invalid operator: <op>")``.
"""
import re

__all__ = ["get_operator", "get_allowed_operators"]


def _equals(value, criteria_pattern):
    return value == criteria_pattern


def _nequals(value, criteria_pattern):
    return value != criteria_pattern


def _ordered(compare):
    def operator(value, criteria_pattern):
        if value is None or criteria_pattern is None:
            return False
        try:
            return compare(value, criteria_pattern)
        except TypeError:
            return False
    return operator


def _exists(value, criteria_pattern):
    return value is not None


def _nexists(value, criteria_pattern):
    return value is None


def _inside(value, criteria_pattern):
    return criteria_pattern is not None and value in criteria_pattern


def _ninside(value, criteria_pattern):
    return criteria_pattern is not None and value not in criteria_pattern


def _regex(flags, match):
    def operator(value, criteria_pattern):
        if value is None or criteria_pattern is None:
            return False
        regex = re.compile(criteria_pattern, flags)
        return bool((regex.match if match else regex.search)(str(value)))
    return operator


_OPERATORS = {
    "equals": _equals, "eq": _equals,
    "nequals": _nequals, "neq": _nequals,
    "greaterthan": _ordered(lambda v, p: v > p), "gt": _ordered(lambda v, p: v > p),
    "lessthan": _ordered(lambda v, p: v < p), "lt": _ordered(lambda v, p: v < p),
    "exists": _exists, "nexists": _nexists,
    "inside": _inside, "in": _inside, "ninside": _ninside, "nin": _ninside,
    "matchregex": _regex(re.DOTALL, True), "regex": _regex(0, False), "iregex": _regex(re.IGNORECASE, False),
}


def get_allowed_operators():
    return dict(_OPERATORS)


def get_operator(op):
    op = op.lower()
    if op not in _OPERATORS:
        raise Exception("Invalid operator: " + op)
    return _OPERATORS[op]
