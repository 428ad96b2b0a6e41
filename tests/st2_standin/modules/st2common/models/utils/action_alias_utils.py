"""Alias format matching with st2's documented semantics (stand-in, own code).

- ``{{ p }}`` is a required parameter, ``{{ p=default }}`` an optional one whose
  default applies when the command leaves it out;
- the rest of a format is a regular expression, anchored ``^\\s*...\\s*$``;
- values may be "double quoted", 'single quoted', {json-ish} or plain text;
- trailing ``key=value`` pairs are extracted as extra parameters.
"""
import re
from typing import Dict, List, Optional, Tuple

from st2common.exceptions.content import ParseException

_PLACEHOLDER = re.compile(r"(\s*){{\s*([\w.]+)\s*(?:=\s*(.*?))?\s*}}", re.DOTALL)
_VALUE = r"\"[^\"]*\"|'[^']*'|\{.*?\}|.+?"
_PAIR = re.compile(r"(?:^|\s+)([\w.]+)=(\"[^\"]*\"|'[^']*'|\{.*?\}|\S+)")
_TRAILING_PAIRS = re.compile(r"((?:\s+[\w.]+=(?:\"[^\"]*\"|'[^']*'|\{.*?\}|\S+))+)\s*$", re.DOTALL)


class ActionAliasFormatParser:
    def __init__(self, alias_format=None, param_stream=None):
        self._format = alias_format or ""
        self._stream = param_stream or ""
        self._defaults: Dict[str, Optional[str]] = {}
        self._regex = self._compile()

    def _compile(self):
        parts: List[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(self._format):
            parts.append(self._format[position:match.start()])
            spaces, name, default = match.group(1), match.group(2), match.group(3)
            group = "(?P<{}>{})".format(name, _VALUE)
            if default is not None:
                self._defaults[name] = default
                parts.append("(?:{}{})?".format(r"\s+" if spaces else "", group))
            else:
                parts.append((r"\s+" if spaces else "") + group)
            position = match.end()
        parts.append(self._format[position:])
        return re.compile(r"^\s*" + "".join(parts) + r"\s*$", re.DOTALL)

    def _split_pairs(self) -> Tuple[str, Dict[str, str]]:
        stream = " " + self._stream
        extras: Dict[str, str] = {}
        match = _TRAILING_PAIRS.search(stream)
        if match and self._regex.match(stream[:match.start()].strip()):
            for key, value in _PAIR.findall(match.group(1)):
                extras[key] = _unquote(value)
            stream = stream[:match.start()]
        return stream.strip(), extras

    def get_extracted_param_value(self) -> Dict[str, Optional[str]]:
        stream, extras = self._split_pairs()
        match = self._regex.match(stream)
        if not match:
            raise ParseException('Command "{}" doesn\'t match format string "{}"'.format(
                self._stream, self._format))
        result = {k: (_unquote(v) if v is not None else None) for k, v in match.groupdict().items()}
        for name, default in self._defaults.items():
            if not result.get(name):
                result[name] = default
        result.update(extras)
        return result


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def extract_parameters(format_str, param_stream):
    return ActionAliasFormatParser(format_str, param_stream).get_extracted_param_value()
