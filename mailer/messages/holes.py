"""The subscriber-dependent stretches of a template, run as Python closures.

A campaign's templates are mostly text that is the same for everyone: `skeleton` renders
that once and leaves holes. What fills a hole (`{{ subscriber.email }}`, an `{% if %}` on a
subscriber's value, the greeting set in an imported template) is compiled here, once per
campaign, into closures that do per subscriber what Jinja2's generated code does
(`expressions`): output is `escape(finalize(value))` in an autoescaped template and
`str(finalize(value))` otherwise, folded to a constant where Jinja2 folds it.

Supported statements: output, `if`/`elif`/`else`, `set name = …`, and `import "…" as x with
context` (on top, of a template that only sets names, read as `x.name`). Anything else
raises `Unsupported` when compiling, and the template is rendered the plain way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import _PassArg, missing
from markupsafe import escape

from mailer.messages.expressions import Expr, Expressions, Frame
from mailer.messages.inheritance import Unsupported, parse

PLAIN_TYPES = (str, int, float, bool, type(None))
Stmt = Callable[[Frame, list[str]], None]


def plain_data(value: Any, depth: int = 0) -> bool:
    """Strings, numbers, None, and lists, tuples and dicts of them: nothing with a state."""
    if isinstance(value, PLAIN_TYPES):
        return True
    if depth > 8:
        return False
    if type(value) in (list, tuple):
        return all(plain_data(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(plain_data(k, depth + 1) and plain_data(v, depth + 1)
                   for k, v in value.items())
    return False


def run(statements: list[Stmt], frame: Frame) -> str:
    out: list[str] = []
    for statement in statements:
        statement(frame, out)
    return "".join(out)


class Compiler(Expressions):
    """Compiles the statements of one frame (a template's top level, or an imported one's).

    Names: one set in this frame before the point of reading is looked up in the frame (and,
    when a branch did not set it, in the context, as at Jinja2's top level); `consts` are names
    set once and for all by the static stretches; anything else is read from the render
    context, then the environment's globals, else it is Jinja2's undefined. A name that
    `future` says is set later, or that is set more than once, is not supported.
    """

    def __init__(self, environment: SandboxedEnvironment, name: str, *, future: set[str],
                 multiple: set[str], modules: dict[str, Module] | None = None) -> None:
        if environment.finalize is not None and _PassArg.from_obj(environment.finalize):
            raise Unsupported("a finalize function that takes an argument")
        super().__init__(environment, name)
        self.future = future
        self.multiple = multiple
        self.local: set[str] = set()
        self.consts: dict[str, Any] = {}
        self.imports: dict[str, Module] = {}  # names bound to an imported template
        self.context_reads: set[str] = set()
        self.modules = modules if modules is not None else {}
        self._depth = 0  # inside an if

    def statements(self, body: list[nodes.Node]) -> list[Stmt]:
        return [self.statement(node) for node in body]

    def statement(self, node: nodes.Node) -> Stmt:
        if isinstance(node, nodes.Output):
            return self.output(node.nodes)
        if isinstance(node, nodes.If):
            return self._if(node)
        if isinstance(node, nodes.Assign):
            return self._assign(node)
        if isinstance(node, nodes.Import):
            return self._import(node)
        raise Unsupported(f"{type(node).__name__} in a hole")

    def output(self, children: list[nodes.Expr]) -> Stmt:
        """Each child as `visit_Output` writes it: folded to a constant if it can be
        (`_output_child_to_const`), else evaluated, finalized, escaped or made a string."""
        autoescape = self.eval_ctx.autoescape
        finalize = self.environment.finalize
        wrap: Callable[[Any], str] = escape if autoescape else str
        pieces: list[str | Expr] = []
        for child in children:
            const = self._constant(child)
            if const is not None:
                pieces.append(const)
                continue
            value = self.expression(child)
            pieces.append(_finalized(value, finalize, wrap) if finalize is not None
                          else _wrapped(value, wrap))

        def output(frame: Frame, out: list[str]) -> None:
            for piece in pieces:
                out.append(piece if isinstance(piece, str) else piece(frame))

        return output

    def _constant(self, child: nodes.Expr) -> str | None:
        """`_output_child_to_const`: the child's text if Jinja2 folds it when compiling."""
        finalize = self.environment.finalize
        try:
            const = child.as_const(self.eval_ctx)
            if self.eval_ctx.autoescape:
                const = escape(const)
            if isinstance(child, nodes.TemplateData) or finalize is None:
                return str(const)
            return str(finalize(const))
        except Exception:  # as Jinja2's code generator: not constant, evaluated when run
            return None

    def _if(self, node: nodes.If) -> Stmt:
        self._depth += 1
        try:
            test = self.expression(node.test)
            body = self.statements(node.body)
            if node.elif_:
                first = node.elif_[0]
                rest = nodes.If(first.test, first.body, node.elif_[1:], node.else_,
                                lineno=first.lineno)
                otherwise = [self._if(rest)]
            else:
                otherwise = self.statements(node.else_)
        finally:
            self._depth -= 1

        def branch(frame: Frame, out: list[str]) -> None:
            for statement in body if test(frame) else otherwise:
                statement(frame, out)

        return branch

    def _assign(self, node: nodes.Assign) -> Stmt:
        target = node.target
        if not isinstance(target, nodes.Name) or target.ctx != "store":
            raise Unsupported("an assignment to something else than one name")
        value = self.expression(node.node)
        name = self._store(target.name)

        def assign(frame: Frame, out: list[str]) -> None:
            frame.vars[name] = value(frame)

        return assign

    def _import(self, node: nodes.Import) -> Stmt:
        template = node.template.value if isinstance(node.template, nodes.Const) else None
        if self._depth or not node.with_context or not isinstance(template, str):
            raise Unsupported("an import other than `import \"…\" as x with context` on top")
        if template not in self.modules:
            self.modules[template] = Module(self.environment, template)
        module = self.modules[template]
        if module.reads & (self.local | self.consts.keys() | self.future | self.multiple):
            raise Unsupported(f"{template} reads a name this template sets")
        name = self._store(node.target)
        self.imports[name] = module

        def imported(frame: Frame, out: list[str]) -> None:
            frame.vars[name] = module.exports(frame)

        return imported

    def _store(self, name: str) -> str:
        if name in self.multiple:
            raise Unsupported(f"{name} is set more than once")
        self.future.discard(name)
        self.local.add(name)
        return name

    # --- names ----------------------------------------------------------------------------

    def _x_Name(self, node: nodes.Name) -> Expr:
        name = node.name
        if node.ctx != "load" or name in self.imports:
            raise Unsupported(f"{name} used as a value")
        if name in self.multiple or name in self.future:
            raise Unsupported(f"{name} read before it is set, or set twice")
        if name in self.consts:
            value = self.consts[name]
            if not plain_data(value):
                raise Unsupported(f"{name} holds {type(value).__name__}")
            return lambda frame: value
        from_context = self._from_context(name)
        if name not in self.local:
            return from_context

        def local(frame: Frame) -> Any:
            value = frame.vars.get(name, missing)
            return from_context(frame) if value is missing else value

        return local

    def _from_context(self, name: str) -> Expr:
        self.context_reads.add(name)
        globals_ = self.environment.globals
        undefined = self.environment.undefined

        def from_context(frame: Frame) -> Any:
            value = frame.context.get(name, missing)
            if value is missing:
                value = globals_.get(name, missing)
                if value is missing:
                    return undefined(name=name)
            return value

        return from_context

    def _x_Getattr(self, node: nodes.Getattr) -> Expr:
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name in self.imports):
            return super()._x_Getattr(node)
        module, name, attr = self.imports[target.name], target.name, node.attr
        if attr not in module.names:
            raise Unsupported(f"{name}.{attr} is not set by {module.template}")
        fmt = self.environment.wrap_str_format

        def exported(frame: Frame) -> Any:  # the sandbox's getattr on a TemplateModule
            value = frame.vars[name][attr]
            wrapped = fmt(value)
            return value if wrapped is None else wrapped

        return exported


def _finalized(value: Expr, finalize: Callable[[Any], Any], wrap: Callable[[Any], str]
               ) -> Expr:
    return lambda frame: wrap(finalize(value(frame)))


def _wrapped(value: Expr, wrap: Callable[[Any], str]) -> Expr:
    return lambda frame: wrap(value(frame))


class Module:
    """A template imported `with context` that only sets names: run per rendering, its names
    kept. The parts of one message share it (`Frame.shared`) when its names are plain data:
    it reads only the render context (`Compiler._import` checks), the same for both parts."""

    def __init__(self, environment: SandboxedEnvironment, template: str) -> None:
        self.template = template
        tree = parse(environment, template)
        stores: list[str] = []
        for node in tree.body:
            if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name):
                stores.append(node.target.name)
            elif not (isinstance(node, nodes.Output)
                      and all(isinstance(c, nodes.TemplateData) for c in node.nodes)):
                raise Unsupported(f"{template} does more than set names")
        twice = {name for name in stores if stores.count(name) > 1}
        compiler = Compiler(environment, template, future=set(stores), multiple=twice)
        self._statements = compiler.statements(
            [node for node in tree.body if isinstance(node, nodes.Assign)]
        )
        self.names = frozenset(name for name in stores if not name.startswith("_"))
        self.reads = frozenset(compiler.context_reads)
        self._fixed = {k: v for k, v in compiler.fixed.items() if plain_data(v)}

    def exports(self, frame: Frame) -> dict[str, Any]:
        shared = frame.shared
        if shared is not None and self.template in shared:
            found: dict[str, Any] = shared[self.template]
            return found
        inner = Frame(frame.context)
        run(self._statements, inner)
        names = {name: inner.vars[name] for name in self.names}
        fixed = self._fixed
        if shared is not None and all(id(value) in fixed or plain_data(value)
                                      for value in names.values()):
            shared[self.template] = names
        return names
