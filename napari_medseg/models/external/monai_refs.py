"""A MONAI bundle config read as data: references followed, expressions never evaluated.

MONAI's ``ConfigParser`` evaluates every string that starts with ``$`` as Python, reads
``%file#key`` macros from other files and imports any ``_target_``. Here a config is plain
JSON/YAML data: ``@id`` references (``#`` or ``::`` between levels) are followed by this
module, a string that is exactly ``$@id`` is read as ``@id`` (it evaluates nothing more), and
every other ``$`` expression or ``%`` macro in a value that is used is refused, naming its key.
Nothing is imported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ExternalModelError

__all__ = ["ConfigView", "MAX_REFERENCE_DEPTH"]

#: References followed one after the other before giving up (a loop, or a hostile chain).
MAX_REFERENCE_DEPTH = 16
_ID = r"[A-Za-z0-9_\-]+(?:(?:#|::)[A-Za-z0-9_\-]+)*"
_REFERENCE = re.compile(rf"^\$?@({_ID})$")
#: Keys of a component besides its arguments that change nothing this project reads.
_NOTES = frozenset({"_desc_"})


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class ConfigView:
    """One parsed config file (``configs/inference.json``) and the checks on what is read.

    Args:
        config: the file's top-level mapping.
        file: its name inside the bundle, for messages (``"configs/inference.json"``).
        label: the bundle path errors name.
    """

    def __init__(self, config: Mapping[str, Any], file: str, label: Path) -> None:
        self.config = config
        self.file = file
        self.label = label

    def fail(self, key: str, value: Any, problem: str) -> ExternalModelError:
        """The error for ``key = value`` (to raise)."""
        return ExternalModelError(self.label, f"{self.file}: {key} = {_shown(value)} {problem}")

    def has(self, ident: str) -> bool:
        try:
            self.lookup(ident)
        except ExternalModelError:
            return False
        return True

    def lookup(self, ident: str) -> Any:
        """The raw entry at ``ident`` (``"a#b#0"`` or ``"a::b::0"``), not checked."""
        node: Any = self.config
        for part in re.split(r"::|#", ident):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ExternalModelError(self.label, f"{self.file}: @{ident} refers to nothing (no {part!r})")
        return node

    def follow(self, value: Any, key: str, depth: int = 0) -> tuple[Any, str]:
        """``value`` with references followed until it is not one; and the key that holds it."""
        while isinstance(value, str) and _REFERENCE.match(value):
            if depth >= MAX_REFERENCE_DEPTH:
                raise self.fail(key, value, f"is a reference more than {MAX_REFERENCE_DEPTH} deep (a loop?)")
            ident = _REFERENCE.match(value).group(1)
            value, key, depth = self.lookup(ident), f"{key} -> @{ident}", depth + 1
        return value, key

    def literal(self, value: Any, key: str, depth: int = 0) -> Any:
        """``value`` as plain data: references resolved, everything else checked to be a literal.

        Raises:
            ExternalModelError: a ``$`` expression, a ``%`` macro, a component (``_target_``)
                or a value of another type anywhere inside; the message names key and value.
        """
        if depth > MAX_REFERENCE_DEPTH:
            raise self.fail(key, value, f"nests references more than {MAX_REFERENCE_DEPTH} deep (a loop?)")
        value, key = self.follow(value, key, depth)
        if isinstance(value, str):
            if value.startswith("$"):
                raise self.fail(key, value, "is a Python expression; expressions are never evaluated")
            if value.startswith("%"):
                raise self.fail(key, value, "is a macro reading another file; macros are not followed")
            return value
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, list):
            return [self.literal(item, f"{key}#{i}", depth + 1) for i, item in enumerate(value)]
        if isinstance(value, Mapping):
            if "_target_" in value:
                raise self.fail(key, value, "is a component (_target_); only literal values are read here")
            if not all(isinstance(k, str) for k in value):
                raise self.fail(key, value, "has keys that are not strings")
            return {k: self.literal(v, f"{key}#{k}", depth + 1) for k, v in value.items()}
        raise self.fail(key, value, f"is a {type(value).__name__}, not a literal value")

    def component(self, value: Any, key: str) -> tuple[str, str, dict[str, Any]] | None:
        """A component entry: (its ``_target_``, the key that holds it, its raw arguments);
        None when ``_disabled_`` is true. The arguments are not checked: the caller checks
        those it uses (:meth:`literal`).

        Raises:
            ExternalModelError: not a mapping with a string ``_target_``, or one with
                ``_requires_``/``_mode_`` (they run code or change how it is called).
        """
        value, key = self.follow(value, key)
        if not isinstance(value, Mapping) or not isinstance(value.get("_target_"), str):
            raise self.fail(key, value, "must be a component: a mapping with a '_target_' name")
        target = self.literal(value["_target_"], f"{key}#_target_")
        if self.literal(value.get("_disabled_", False), f"{key}#_disabled_") is True:
            return None
        arguments = {}
        for name, argument in value.items():
            if name in ("_target_", "_disabled_") or name in _NOTES:
                continue
            if name.startswith("_") and name.endswith("_"):
                raise self.fail(f"{key}#{name}", argument, "is a special key this project does not follow")
            arguments[name] = argument
        return target, key, arguments
