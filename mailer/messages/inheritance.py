"""A template's `{% extends %}` chain resolved into one list of top-level Jinja2 nodes.

`flatten(environment, name)` parses the template and its parents and puts, in place of each
`{% block %}` of the base, the body of its most derived definition: the nodes Jinja2 would
run, in order, in one scope. It does so only where that is exactly what Jinja2 does, and
raises `Unsupported` otherwise, for the caller to render that template the plain way:

- `{% extends "a constant" %}` first in a child (nothing is printed before it), and after it
  only blocks and output (which Jinja2 drops unrun in a child);
- blocks at the top level of a template or of another block only (a block inside an `if` or
  a `for` has a scope of its own), neither `scoped` nor `required`, whose bodies assign no
  name (`set`, `import`, `macro`: a block's names are its own) and call no `super()`;
- no `self`, and every template of the chain escaped alike (`.html` or not): a block is
  compiled with its own template's autoescaping.

Pure: no rendering happens here. The nodes returned are fresh copies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TypeVar

from jinja2 import nodes
from jinja2.environment import Environment

N = TypeVar("N", bound=nodes.Node)
MAX_DEPTH = 10  # parents, and blocks within blocks
# Nodes that give a name to the scope they are in: inside a block, that scope is the block's.
ASSIGNING = (nodes.Assign, nodes.AssignBlock, nodes.Import, nodes.FromImport, nodes.Macro)


class Unsupported(Exception):  # a reason to render the plain way, not an error
    """This template is rendered the plain way: the reason is the message."""


@dataclass(frozen=True)
class Flat:
    """One template with its parents resolved."""

    name: str  # the template asked for
    chain: tuple[str, ...]  # it, its parent, ... the base
    body: list[nodes.Node]  # the top-level nodes, blocks replaced by their bodies


def parse(environment: Environment, name: str) -> nodes.Template:
    """The template's syntax tree, parsed as the environment parses it for rendering."""
    loader = environment.loader
    if loader is None:
        raise Unsupported("no loader")
    source, filename, _ = loader.get_source(environment, name)
    return environment.parse(source, name, filename)


def flatten(environment: Environment, name: str) -> Flat:
    overrides: dict[str, nodes.Block] = {}  # the most derived definition of each block
    chain: list[str] = []
    current = name
    while True:
        if len(chain) > MAX_DEPTH or current in chain:
            raise Unsupported(f"{current}: the extends chain is too long or loops")
        chain.append(current)
        tree = parse(environment, current)
        _refuse_everywhere(tree, current)
        for block in tree.find_all(nodes.Block):
            overrides.setdefault(block.name, block)
        extends = list(tree.find_all(nodes.Extends))
        if not extends:
            break
        current = _parent(tree, extends, current)
    escaping = {_autoescape(environment, template) for template in chain}
    if len(escaping) != 1:
        raise Unsupported(f"{name}: its templates are not all escaped alike")
    body = _substitute(tree.body, overrides, 0)
    return Flat(name, tuple(chain), [copy_node(node, environment) for node in body])


def _parent(tree: nodes.Template, extends: list[nodes.Extends], name: str) -> str:
    first = tree.body[0] if tree.body else None
    if len(extends) != 1 or first is not extends[0]:
        raise Unsupported(f"{name}: extends is not the first thing in the template")
    if not isinstance(first.template, nodes.Const) or not isinstance(first.template.value, str):
        raise Unsupported(f"{name}: the parent template is not a constant name")
    for node in tree.body[1:]:
        if not isinstance(node, nodes.Block | nodes.Output):
            raise Unsupported(f"{name}: {type(node).__name__} beside the blocks of a child")
    return first.template.value


def _refuse_everywhere(tree: nodes.Template, name: str) -> None:
    for found in tree.find_all(nodes.Name):
        if found.name in ("self", "super"):
            raise Unsupported(f"{name}: uses {found.name}")
    for block in tree.find_all(nodes.Block):
        if block.scoped or block.required:
            raise Unsupported(f"{name}: block {block.name} is scoped or required")
        for node in block.body:
            if isinstance(node, ASSIGNING) or any(True for _ in node.find_all(ASSIGNING)):
                raise Unsupported(f"{name}: block {block.name} assigns a name")


def _substitute(
    body: list[nodes.Node], overrides: dict[str, nodes.Block], depth: int
) -> list[nodes.Node]:
    if depth > MAX_DEPTH:
        raise Unsupported("blocks nested too deep")
    out: list[nodes.Node] = []
    for node in body:
        if isinstance(node, nodes.Block):
            out += _substitute(overrides[node.name].body, overrides, depth + 1)
            continue
        if any(True for _ in node.find_all(nodes.Block)):
            raise Unsupported(f"a block inside {type(node).__name__}")
        out.append(node)
    return out


def _autoescape(environment: Environment, name: str) -> bool:
    setting = environment.autoescape
    return bool(setting(name) if callable(setting) else setting)


def copy_node(node: N, environment: Environment) -> N:
    """A deep copy sharing the environment: compiling a tree folds constants in place."""
    return copy.deepcopy(node, {id(environment): environment})
