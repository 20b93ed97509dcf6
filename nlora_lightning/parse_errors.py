"""One line for a command-line parse error: the option, the type it expects, the value given.

jsonargparse reports a bad option as an indented, multi-line explanation after an 80-90 line usage
dump. :func:`describe_parse_error` keeps what a user needs: which option, what it expects, what it
got, or, for an unknown option, the closest known one.
"""

from __future__ import annotations

import difflib
import re
from typing import Iterable

__all__ = ["describe_parse_error"]

_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")


def _type_names(text: str) -> str:
    """``[list[str], <class 'NoneType'>]`` -> ``list[str] or null``."""
    text = _CLASS.sub(r"\1", text.strip()).replace("NoneType", "null")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[(" 
        depth -= char in "])"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return " or ".join(p for p in parts if p)


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text)
    return found[-1].strip() if found else None


def describe_parse_error(message: str, known_options: Iterable[str] = ()) -> str:
    """A one-line description of a jsonargparse error message.

    Example:
        >>> describe_parse_error('Parser key "data.tasks":\\n  Subtypes: [list[str], <class \\'NoneType\\'>]\\n'
        ...                      '  Given value type: <class \\'str\\'>\\n  Given value: reviews,topics')
        "data.tasks expects list[str] or null, got 'reviews,topics'"
    """
    unknown = _last(r"does not accept (?:option|nested key) '([^']+)'", message) or _last(r"Key '([^']+)' is not expected", message)
    if unknown:
        close = difflib.get_close_matches(unknown, list(known_options), n=1, cutoff=0.6)
        return f"unknown option {unknown!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    keys = _PARSER_KEY.findall(message)
    if keys:
        key = keys[0] + "".join(f" -> {k}" for k in keys[1:])
        missing = _last(r"File does not exist: (.+)", message)
        if missing:
            return f"--{key}: file does not exist: {missing}"
        subtypes = _last(r"Subtypes: (\[.*\])", message)
        expected = [e for e in re.findall(r"Expected a (.+)", message) if not e.startswith("path")]
        types = _type_names(subtypes) if subtypes else (_type_names(expected[-1]) if expected else None)
        given = _last(r"Given value: (.*)", message)
        if types and given is not None:
            return f"{key} expects {types}, got {given!r}"
        detail = [line.strip() for line in message.splitlines()[len(keys):] if line.strip()]
        return f"{key}: " + "; ".join(detail) if detail else key
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
