"""The one JSON/YAML parser of every file and string the tools read: bounded depth and size.

Two hostile inputs, each a few bytes: deep nesting (``[`` x 50,000) makes the parsers recurse
until ``RecursionError`` (a 3,000-line traceback, or a C stack overflow in libyaml's composer),
and a YAML alias bomb ("billion laughs": nine levels of ten aliases each) is a small graph once
loaded but expands to 10**9 nodes when printed, hashed or serialised. So:

* JSON: the bracket depth is measured before parsing (strings removed, then a running sum of
  brackets in numpy: linear and fast even for a large manifest); deeper than ``MAX_DEPTH`` is
  refused.
* YAML: the pure-Python ``SafeLoader`` (never the C one, whose composer is recursive C) with
  the composer's depth counted, and the node graph's *expanded* size (every alias counted as a
  copy of what it names, memoised so the count is linear) checked before anything is built;
  an alias that names its own ancestor (a cycle) is refused too.

Both raise ``ParseLimitError`` (a ``ValueError``), so callers that already turn a parse error
into a one-line ``InputError`` do the same for these.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np
import yaml

from frozenaug.common.safeio import DATA_JSON_MAX_BYTES, read_bytes

MAX_DEPTH = 100  # a policy nests Compose/OneOf a few levels; a manifest 4
MAX_NODES = 1_000_000  # values after alias expansion (a large policy is ~10,000)


class ParseLimitError(ValueError):
    """A document nested too deeply, or expanding to too many values."""


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text (brackets inside strings ignored)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    stripped = np.frombuffer(_JSON_STRING.sub(b'""', data), np.uint8)
    step = ((stripped == ord("[")) | (stripped == ord("{"))).astype(np.int32)
    step -= ((stripped == ord("]")) | (stripped == ord("}"))).astype(np.int32)
    return int(np.cumsum(step).max()) if len(step) else 0


def parse_json(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of a text nested at most ``max_depth`` deep.

    Raises:
        ParseLimitError: nested deeper.
        ValueError: not JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``).
    """
    depth = json_depth(text)
    if depth > max_depth:
        raise ParseLimitError(f"nested {depth:,} levels deep, more than {max_depth}")
    try:
        return json.loads(text)
    except RecursionError:  # not reached below max_depth; kept so it can never be a traceback
        raise ParseLimitError("nested too deeply") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer counts its depth and whose graph is sized before building."""

    max_depth, max_nodes = MAX_DEPTH, MAX_NODES

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        if self._depth > self.max_depth:
            mark = self.peek_event().start_mark
            raise ParseLimitError(f"nested more than {self.max_depth} levels deep "
                                  f"(line {mark.line + 1})")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            expanded_size(node, self.max_nodes)
        return node


def expanded_size(root: yaml.Node, limit: int) -> int:
    """How many values a YAML node graph holds with every alias expanded; ParseLimitError past
    ``limit`` or on a cycle. Iterative (no recursion) and memoised by node."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > limit:
                raise ParseLimitError(f"expands to more than {limit:,} values (YAML aliases "
                                      "repeat what they name; an alias bomb?)")
            continue
        if key in sizes:
            continue
        if key in active:
            raise ParseLimitError("an alias names a value that holds it (a cycle)")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` with the limits above.

    Raises:
        ParseLimitError: too deep, too large once expanded, or a cycle.
        yaml.YAMLError: not YAML.
    """
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # the constructor cannot recurse past max_depth; never a traceback
        raise ParseLimitError("nested too deeply") from None
    finally:
        loader.dispose()


def parse_config_text(text: str | bytes, suffix: str) -> Any:
    """A config or policy file's text by its suffix: ``.json`` as JSON, anything else YAML."""
    return parse_json(text) if suffix.lower() == ".json" else parse_yaml(text)


def read_json(path: str | os.PathLike, what: str = "JSON file",
              limit: int = DATA_JSON_MAX_BYTES) -> Any:
    """A JSON file the tools wrote (manifest, split, state, run info), read and parsed within
    the limits: raises InputError (not a regular file, too large), OSError, or ValueError (not
    UTF-8 or JSON, nested too deeply) for the caller to name in its own words."""
    return parse_json(read_bytes(path, limit, what))
