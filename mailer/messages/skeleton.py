"""Render once per campaign what is the same for every subscriber; per subscriber, the holes.

For each part (subject, text, HTML) the template's `{% extends %}` chain is resolved into one
list of top-level nodes (`inheritance`), and each node, or each piece of an output node, is
sorted: *static* when it reads no subscriber-dependent name and calls nothing, *dynamic*
otherwise. The subscriber-dependent names are `subscriber`, `unsubscribe_url`,
`unsubscribe_mailto` (and `subject` when the subject depends on the subscriber), and every
name a dynamic node sets. Two of them have a value whose truth is the campaign's, not the
subscriber's (`{% if unsubscribe_url %}`: the URL is set or not for everyone), so such an
`if` is decided here.

The static nodes are rendered once, by Jinja2 itself, in one template where each dynamic
node is replaced by a marker: the text between markers is the static stretches, and the
names the static nodes set are kept for the holes. The dynamic nodes are compiled into
closures (`holes`) run per subscriber. Calls, `random`, `include`, macros and the like
are dynamic; a dynamic node `holes` cannot compile, a stretch that contains the marker, a
template `inheritance` cannot flatten: that part is rendered the plain way, whole.

`Skeleton.check` compares both ways on sample subscribers when a campaign is compiled, and
tests/test_render_once.py on many; any exception per subscriber sends the message the plain
way, so a failing subscriber gets Jinja2's own error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import _PassArg

from mailer.core.people import Recipient, header_text
from mailer.messages.bodies import Body
from mailer.messages.campaign import HTML, SUBJECT, TEXT
from mailer.messages.compose import quoted_printable
from mailer.messages.expressions import Frame
from mailer.messages.holes import Compiler, Module, Stmt, run
from mailer.messages.inheritance import Unsupported, flatten
from mailer.messages.render import Links, Parts, Renderer, ending

MARK = "\x00mailer-hole\x00"
DYNAMIC = frozenset({"subscriber", "unsubscribe_url", "unsubscribe_mailto"})
IMPURE = (
    nodes.Call, nodes.Include, nodes.Import, nodes.FromImport, nodes.Macro, nodes.CallBlock,
    nodes.NSRef, nodes.ExprStmt, nodes.EvalContextModifier, nodes.ContextReference,
    nodes.DerivedContextReference, nodes.InternalName, nodes.ImportedName,
    nodes.ExtensionAttribute, nodes.Extends, nodes.Block,
)  # fmt: skip
UNSEEDED = frozenset({"random"})  # a filter whose value is not a function of its input
STATIC, SETS, HOLE = "static", "sets", "hole"
SAMPLES = (  # when a campaign is compiled, both ways must agree on these (if both make them)
    Recipient(id=1, email="helene.dupont@exemple.fr", address="helene.dupont@exemple.fr",
              key="helene.dupont@exemple.fr", first_name="Hélène", last_name="Dupont",
              civility="Mme"),
    Recipient(id=2, email="x@exemple.fr", address="x@exemple.fr", key="x@exemple.fr"),
    Recipient(id=3, email="a&b@exemple.fr", address="a&b@exemple.fr", key="a&b@exemple.fr",
              first_name='<b>"Zoë" & Co</b>', last_name="\nN'Diaye\r", civility="M."),
)


@dataclass(frozen=True)
class Rendered:
    """One subscriber's parts, and the text and HTML bodies encoded when the skeleton made
    them (None: the composer encodes that part itself)."""

    parts: Parts
    bodies: tuple[bytes | None, bytes | None] = (None, None)


class Skeleton:
    """A campaign's subject, text and HTML: each a Program, or None for the plain way."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        campaign = renderer.campaign
        environment = renderer.environment
        known = {k: v for k, v in renderer.campaign_context.items() if k not in DYNAMIC}
        truths = Links.truths(campaign)
        modules: dict[str, Module] = {}
        self.reasons: dict[str, str] = {}  # why a part is rendered the plain way

        def part(file: str, known: dict[str, Any], dynamic: frozenset[str]) -> Program | None:
            try:
                return program(environment, campaign.template_name(file), known=known,
                               dynamic=dynamic, truths=truths, modules=modules)
            except Exception as exc:  # whatever it is, that part goes the plain way
                self.reasons[file] = f"{type(exc).__name__}: {exc}"
                return None

        self.subject_program = part(SUBJECT, known, DYNAMIC)
        self.subject: str | None = None
        dynamic = DYNAMIC | {"subject"}
        if self.subject_program is not None and not self.subject_program.holes:
            self.subject = header_text(self.subject_program.statics[0])
            if not self.subject:
                raise Unsupported("the subject renders empty")
            known, dynamic = {**known, "subject": self.subject}, DYNAMIC
        self.text = part(TEXT, known, dynamic)
        self.html = part(HTML, known, dynamic) if campaign.has_html else None
        self.bodies = tuple(None if p is None else Body(p.statics) for p in (self.text, self.html))

    @property
    def useful(self) -> bool:
        return any(p is not None for p in (self.subject_program, self.text, self.html))

    def render(self, recipient: Recipient, links: Links) -> Rendered | None:
        """The parts and bodies; None, or any exception, means: render the plain way."""
        renderer = self.renderer
        context = renderer.context(recipient, links)
        subject = self.subject
        if subject is None:
            template = renderer.template(SUBJECT)
            if self.subject_program is not None:
                raw = _join(self.subject_program, self.subject_program.fill(Frame(context)))
            else:
                assert template is not None
                raw = template.render(context)
            subject = header_text(raw)
            if not subject:
                return None
        context["subject"] = subject
        shared: dict[str, Any] = {}
        text, text_body = self._part(TEXT, 0, context, shared)
        html, html_body = (self._part(HTML, 1, context, shared)
                           if self.renderer.campaign.has_html else (None, None))
        return Rendered(Parts(subject, text, html), (text_body, html_body))

    def _part(self, file: str, index: int, context: dict[str, Any], shared: dict[str, Any]
              ) -> tuple[str, bytes | None]:
        made, body = (self.text, self.html)[index], self.bodies[index]
        if made is None or body is None:
            template = self.renderer.template(file)
            assert template is not None
            return ending(template.render(context)), None
        return body.make(made.fill(Frame(context, shared)))

    def check(self) -> bool:
        """Both ways agree on the samples: same parts, same bodies, and no sample made
        this way that the plain way refuses."""
        campaign = self.renderer.campaign
        for index, recipient in enumerate(SAMPLES):
            links = Links.build(campaign, f"{index:x}.SampleToken")
            try:
                plain: Parts | None = self.renderer.render(recipient, links)
            except Exception:  # a sample the templates cannot make
                plain = None
            try:
                fast = self.render(recipient, links)
            except Exception:  # made the plain way, then
                fast = None
            if fast is None:
                continue
            if plain is None or fast.parts != plain:
                return False
            for body, made in zip(fast.bodies, (plain.text, plain.html), strict=True):
                if body is not None and (made is None or body != quoted_printable(made)):
                    return False
        return True


def _join(made: Program, holes: list[str]) -> str:
    pieces = [made.statics[0]]
    for hole, stretch in zip(holes, made.statics[1:], strict=True):
        pieces += (hole, stretch)
    return "".join(pieces)


@dataclass(frozen=True)
class Program:
    """One part: `statics[0] holes[0] statics[1] …`; each hole is statements to run."""

    statics: tuple[str, ...]
    holes: tuple[list[Stmt], ...]

    def fill(self, frame: Frame) -> list[str]:
        return [run(hole, frame) for hole in self.holes]


def program(environment: SandboxedEnvironment, name: str, *, known: dict[str, Any],
            dynamic: frozenset[str], truths: dict[str, bool],
            modules: dict[str, Module]) -> Program:
    """The part `name`, given the values the same for everyone (`known`); Unsupported if it
    has to be rendered the plain way."""
    body = flatten(environment, name).body
    if any(type(found) is nodes.EvalContextModifier
           for node in body for found in _walk(node, nodes.EvalContextModifier)):
        raise Unsupported("an unscoped change of autoescaping")
    stores = Counter(n for node in body for n in _stores(node))
    body = _decide(body, {k: v for k, v in truths.items() if k not in stores})
    stores = Counter(n for node in body for n in _stores(node))
    eval_ctx = nodes.EvalContext(environment, name)
    items = list(_sort(body, environment, eval_ctx, set(dynamic)))

    tree = nodes.Template([node if kind != HOLE else nodes.Output([nodes.TemplateData(MARK)])
                           for kind, node in items], lineno=1)
    tree.set_environment(environment)
    code = environment.compile(tree, name=name)
    template = environment.template_class.from_code(
        environment, code, environment.make_globals(None), None
    )
    context = template.new_context(dict(known))
    statics = "".join(template.root_render_func(context)).split(MARK)
    if len(statics) != sum(kind == HOLE for kind, _ in items) + 1:
        raise Unsupported("the marker is in the text")

    compiler = Compiler(environment, name, future=set(stores),
                        multiple={n for n, count in stores.items() if count > 1},
                        modules=modules)
    holes: list[list[Stmt]] = []
    for kind, node in items:
        if kind == SETS:
            for stored in _stores(node):
                compiler.future.discard(stored)
                compiler.consts[stored] = context.vars[stored]
        elif kind == HOLE:
            holes.append(compiler.statements([node]))
    return Program(tuple(statics), tuple(holes))


def _sort(body: list[nodes.Node], environment: SandboxedEnvironment,
          eval_ctx: nodes.EvalContext, dynamic: set[str]) -> Iterator[tuple[str, nodes.Node]]:
    """Each top-level node, or piece of an output node, as STATIC, SETS (static, sets names)
    or HOLE; `dynamic` grows with the names the holes set."""
    for node in body:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                fixed = _folds(child, eval_ctx) or not (
                    _reads(child) & dynamic or _impure(child, environment))
                yield (STATIC if fixed else HOLE), nodes.Output([child], lineno=node.lineno)
            continue
        stores = set(_stores(node))
        if _reads(node) & dynamic or _impure(node, environment) or (
            stores and not isinstance(node, nodes.Assign | nodes.AssignBlock)
        ):
            dynamic |= stores
            yield HOLE, node
        else:
            yield (SETS if stores else STATIC), node


def _folds(child: nodes.Expr, eval_ctx: nodes.EvalContext) -> bool:
    """Jinja2 folds this piece of output into a constant when compiling."""
    if isinstance(child, nodes.TemplateData):
        return True
    try:
        child.as_const(eval_ctx)
    except Exception:  # as Jinja2's code generator: then it is not constant
        return False
    return True


def _walk(node: nodes.Node, kind: type[nodes.Node] | tuple[type[nodes.Node], ...]
          ) -> Iterator[nodes.Node]:
    if isinstance(node, kind):
        yield node
    yield from node.find_all(kind)


def _reads(node: nodes.Node) -> set[str]:
    return {n.name for n in _walk(node, nodes.Name) if isinstance(n, nodes.Name)
            and n.ctx == "load"}


def _impure(node: nodes.Node, environment: SandboxedEnvironment) -> bool:
    """Could give another value, or change something, when run again: a call, `random`,
    and any filter or test that takes the template context (`map('random')` is random)."""
    for found in _walk(node, (*IMPURE, nodes.Filter, nodes.Test)):
        if isinstance(found, IMPURE):
            return True
        if isinstance(found, nodes.Filter | nodes.Test):
            known = environment.filters if isinstance(found, nodes.Filter) else environment.tests
            function: Any = known.get(found.name)
            if (function is None or found.name in UNSEEDED
                    or _PassArg.from_obj(function) is _PassArg.context):
                return True
    return False


def _stores(node: nodes.Node) -> list[str]:
    """The names a top-level node sets in the template's top-level scope (an `if` has no
    scope of its own, nor has `{% autoescape %}`; a loop, a macro, `with` have)."""
    if isinstance(node, nodes.Assign | nodes.AssignBlock):
        return [n.name for n in _walk(node.target, (nodes.Name, nodes.NSRef))
                if isinstance(n, nodes.Name)]
    if isinstance(node, nodes.Import):
        return [node.target]
    if isinstance(node, nodes.FromImport):
        return [name[1] if isinstance(name, tuple) else name for name in node.names]
    if isinstance(node, nodes.Macro):
        return [node.name]
    if isinstance(node, nodes.If):
        return [n for child in [*node.body, *node.elif_, *node.else_] for n in _stores(child)]
    if isinstance(node, nodes.ScopedEvalContextModifier):
        return [n for child in node.body for n in _stores(child)]
    return []


def _decide(body: list[nodes.Node], truths: dict[str, bool]) -> list[nodes.Node]:
    """Top-level `if`s on a name whose truth is known, replaced by the branch taken."""
    out: list[nodes.Node] = []
    for node in body:
        chosen = _choose(node, truths) if isinstance(node, nodes.If) else None
        if chosen is None:
            out.append(node)
        else:
            out += _decide(chosen, truths)
    return out


def _choose(node: nodes.If, truths: dict[str, bool]) -> list[nodes.Node] | None:
    branches = [(node.test, node.body), *((e.test, e.body) for e in node.elif_)]
    for index, (test, body) in enumerate(branches):
        truth = _truth(test, truths)
        if truth is None:
            if index == 0:
                return None
            (first, first_body), rest = branches[index], branches[index + 1 :]
            elifs = [nodes.If(t, b, [], [], lineno=node.lineno) for t, b in rest]
            return [nodes.If(first, first_body, elifs, node.else_, lineno=node.lineno)]
        if truth:
            return body
    return node.else_


def _truth(test: nodes.Node, truths: dict[str, bool]) -> bool | None:
    if isinstance(test, nodes.Name) and test.ctx == "load":
        return truths.get(test.name)
    if isinstance(test, nodes.Not):
        inner = _truth(test.node, truths)
        return None if inner is None else not inner
    return None
