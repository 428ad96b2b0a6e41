"""Evaluate a rule's criteria on a trigger payload the way st2's rules engine does (test helper).

st2 (``st2reactor/rules/filter.py``) looks each ``trigger.<path>`` up in the
payload (a missing key gives ``None``), renders string patterns as Jinja, and
ANDs ``get_operator(type)(value, pattern)`` over the criteria; ``key#1``
repeats a key. ``action_parameters`` renders the rule's action parameters and
casts them to the action's declared types as st2 does
(``st2common/util/param.py``, ``st2common/util/casts.py``). The operators are st2's own (``st2common.operators``; the
stand-in only when st2 is not installed).
"""
import ast
import json
from typing import Any, Dict, Mapping

import jinja2

from st2common.operators import get_operator


def lookup(payload: Mapping[str, Any], key: str) -> Any:
    path = key.split("#", 1)[0].split(".")
    if path[0] != "trigger":
        raise ValueError("criteria keys start with trigger.: {}".format(key))
    value: Any = payload
    for part in path[1:]:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def criteria_match(rule: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    for key, criterion in (rule.get("criteria") or {}).items():
        pattern = criterion.get("pattern")
        if isinstance(pattern, str) and "{{" in pattern:
            pattern = jinja2.Template(pattern).render(trigger=payload)
        if not get_operator(criterion["type"])(lookup(payload, key), pattern):
            return False
    return True


def _cast(value: str, kind: Any) -> Any:
    """st2's casts for a rendered string: integer/number/boolean/object/array, else unchanged."""
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    if kind == "boolean":
        return value.strip().lower() in ("1", "true", "yes")
    if kind in ("object", "array"):
        try:
            return json.loads(value)
        except ValueError:
            return ast.literal_eval(value)
    return value


def action_parameters(rule: Mapping[str, Any], payload: Mapping[str, Any],
                      declared: Mapping[str, Any]) -> Dict[str, Any]:
    """The parameters a rule hands its action for ``payload`` (declared: the action's parameters)."""
    rendered = {}
    for name, value in (rule.get("action", {}).get("parameters") or {}).items():
        if isinstance(value, str) and "{{" in value:
            value = _cast(jinja2.Template(value).render(trigger=payload),
                          (declared.get(name) or {}).get("type"))
        rendered[name] = value
    return rendered
