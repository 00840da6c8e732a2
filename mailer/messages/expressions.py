"""Jinja2 expressions compiled to Python closures that do what Jinja2's generated code does.

`Expressions.expression(node)` folds constants with Jinja2's own optimizer, as its code
generator does (`optimizeconst`), then turns each node into a closure over a `Frame`: the
sandbox's `environment.getattr`/`getitem`/`call`, the environment's filter and test
functions (with the evaluation context or the environment when they ask for it),
`markup_join`/`str_join` for `~`, Python's operators where Jinja2 writes Python's operators.
The objects are Jinja2's, `StrictUndefined` included: whatever raises there raises here.

What it does not compile raises `Unsupported` (a filter or call that takes the template
context, `*args`, an inline `if` without `else`, an intercepted operator, a node of another
kind). How names are found is the subclass's business (`holes.Compiler`).
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.optimizer import Optimizer
from jinja2.runtime import Context, markup_join, new_context, str_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import _PassArg, missing
from markupsafe import Markup

from mailer.messages.inheritance import Unsupported, copy_node

BINARY: dict[type[nodes.Node], tuple[str, Callable[[Any, Any], Any]]] = {
    nodes.Add: ("+", operator.add), nodes.Sub: ("-", operator.sub),
    nodes.Mul: ("*", operator.mul), nodes.Div: ("/", operator.truediv),
    nodes.FloorDiv: ("//", operator.floordiv), nodes.Pow: ("**", operator.pow),
    nodes.Mod: ("%", operator.mod),
}  # fmt: skip
UNARY: dict[type[nodes.Node], tuple[str, Callable[[Any], Any]]] = {
    nodes.Neg: ("-", operator.neg), nodes.Pos: ("+", operator.pos),
}
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gteq": operator.ge,
    "lt": operator.lt, "lteq": operator.le,
    "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}  # fmt: skip


def _no_arguments(frame: Frame) -> tuple[Any, ...]:  # no arguments, as a closure
    return ()


def _no_keywords(frame: Frame) -> dict[str, Any]:  # no keyword arguments, as a closure
    return {}


class Frame:
    """One rendering's names: the render context, the names set so far, and the imported
    templates the parts of one message share."""

    __slots__ = ("context", "shared", "vars")

    def __init__(self, context: dict[str, Any], shared: dict[str, Any] | None = None) -> None:
        self.context = context
        self.vars: dict[str, Any] = {}
        self.shared = shared


Expr = Callable[[Frame], Any]


class Expressions:
    """Compiles the expressions of one template (its name sets the autoescaping)."""

    def __init__(self, environment: SandboxedEnvironment, name: str) -> None:
        self.environment = environment
        self.name = name
        self.context: Context = new_context(environment, name, {})  # for sandboxed calls
        self.eval_ctx = self.context.eval_ctx
        self.fixed: dict[int, Any] = {}  # folded literals, by id: plain data for good

    def expression(self, node: nodes.Node) -> Expr:
        """Folded as the code generator folds, then compiled."""
        folded = Optimizer(self.environment).visit(copy_node(node, self.environment),
                                                   self.eval_ctx)
        return self._expr(folded)

    def _expr(self, node: nodes.Node) -> Expr:
        kind = type(node)
        if kind in BINARY:
            return self._binary(node)
        if kind in UNARY:
            return self._unary(node)
        method = getattr(self, f"_x_{kind.__name__}", None)
        if method is None:
            raise Unsupported(f"{kind.__name__} in a hole")
        compiled: Expr = method(node)
        return compiled

    def _x_Const(self, node: nodes.Const) -> Expr:
        value = node.value
        if isinstance(value, list | dict | set):
            self.fixed[id(value)] = value  # the same object each time: a folded literal
        return lambda frame: value

    def _x_Getattr(self, node: nodes.Getattr) -> Expr:
        """`environment.getattr(obj, attr)`; on a plain dict (the subscriber, its attributes,
        a literal) its outcome depends on the name only, so it is worked out once: a key
        when dict has no such attribute (else Jinja2's undefined), the attribute when the
        sandbox allows it."""
        obj = self._expr(node.node)
        attr = node.attr
        environment = self.environment
        getattr_ = environment.getattr
        if not hasattr(dict, attr):
            undefined = environment.undefined

            def item(frame: Frame) -> Any:
                target = obj(frame)
                if type(target) is not dict:
                    return getattr_(target, attr)
                value = target.get(attr, missing)
                return undefined(obj=target, name=attr) if value is missing else value

            return item
        method = getattr({}, attr)
        if environment.is_safe_attribute({}, attr, method) and (
            environment.wrap_str_format(method) is None
        ):

            def attribute(frame: Frame) -> Any:
                target = obj(frame)
                return getattr(target, attr) if type(target) is dict else getattr_(target, attr)

            return attribute
        return lambda frame: getattr_(obj(frame), attr)

    def _x_Getitem(self, node: nodes.Getitem) -> Expr:
        obj = self._expr(node.node)
        if isinstance(node.arg, nodes.Slice):  # slices bypass the sandbox, as generated
            part = self._x_Slice(node.arg)
            return lambda frame: obj(frame)[part(frame)]
        arg = self._expr(node.arg)
        getitem = self.environment.getitem
        return lambda frame: getitem(obj(frame), arg(frame))

    def _x_Slice(self, node: nodes.Slice) -> Expr:
        bounds = [None if n is None else self._expr(n) for n in (node.start, node.stop, node.step)]

        def part(frame: Frame) -> slice:
            start, stop, step = (None if b is None else b(frame) for b in bounds)
            return slice(start, stop, step)

        return part

    def _x_Tuple(self, node: nodes.Tuple) -> Expr:
        items = [self._expr(item) for item in node.items]
        return lambda frame: tuple([item(frame) for item in items])

    def _x_List(self, node: nodes.List) -> Expr:
        items = [self._expr(item) for item in node.items]
        return lambda frame: [item(frame) for item in items]

    def _x_Dict(self, node: nodes.Dict) -> Expr:
        pairs = [(self._expr(pair.key), self._expr(pair.value)) for pair in node.items]
        return lambda frame: {key(frame): value(frame) for key, value in pairs}

    def _x_Concat(self, node: nodes.Concat) -> Expr:
        join = markup_join if self.eval_ctx.autoescape else str_join
        items = [self._expr(item) for item in node.nodes]
        return lambda frame: join([item(frame) for item in items])

    def _x_Compare(self, node: nodes.Compare) -> Expr:
        first = self._expr(node.expr)
        ops = [(COMPARE[op.op], self._expr(op.expr)) for op in node.ops]

        def compare(frame: Frame) -> Any:  # Python's chained comparison, as generated
            left = first(frame)
            result: Any = True
            for function, operand in ops:
                right = operand(frame)
                result = function(left, right)
                if not result:
                    return result
                left = right
            return result

        return compare

    def _x_And(self, node: nodes.And) -> Expr:
        left, right = self._expr(node.left), self._expr(node.right)
        return lambda frame: left(frame) and right(frame)

    def _x_Or(self, node: nodes.Or) -> Expr:
        left, right = self._expr(node.left), self._expr(node.right)
        return lambda frame: left(frame) or right(frame)

    def _x_Not(self, node: nodes.Not) -> Expr:
        value = self._expr(node.node)
        return lambda frame: not value(frame)

    def _binary(self, node: nodes.Node) -> Expr:
        assert isinstance(node, nodes.BinExpr)
        symbol, function = BINARY[type(node)]
        if symbol in self.environment.intercepted_binops:
            raise Unsupported(f"the sandbox intercepts {symbol}")
        left, right = self._expr(node.left), self._expr(node.right)
        return lambda frame: function(left(frame), right(frame))

    def _unary(self, node: nodes.Node) -> Expr:
        assert isinstance(node, nodes.UnaryExpr)
        symbol, function = UNARY[type(node)]
        if symbol in self.environment.intercepted_unops:
            raise Unsupported(f"the sandbox intercepts {symbol}")
        value = self._expr(node.node)
        return lambda frame: function(value(frame))

    def _x_CondExpr(self, node: nodes.CondExpr) -> Expr:
        if node.expr2 is None:
            raise Unsupported("an inline if without else")
        test, yes, no = self._expr(node.test), self._expr(node.expr1), self._expr(node.expr2)
        return lambda frame: yes(frame) if test(frame) else no(frame)

    def _x_MarkSafe(self, node: nodes.MarkSafe) -> Expr:
        value = self._expr(node.expr)
        return lambda frame: Markup(value(frame))  # noqa: S704 - as the generated code

    def _x_MarkSafeIfAutoescape(self, node: nodes.MarkSafeIfAutoescape) -> Expr:
        value = self._expr(node.expr)
        if self.eval_ctx.autoescape:
            return lambda frame: Markup(value(frame))  # noqa: S704 - as the generated code
        return value

    def _x_Filter(self, node: nodes.Filter) -> Expr:
        if node.node is None:
            raise Unsupported("a filter block")
        return self._apply(node, node.node, self.environment.filters.get(node.name))

    def _x_Test(self, node: nodes.Test) -> Expr:
        return self._apply(node, node.node, self.environment.tests.get(node.name))

    def _apply(self, node: nodes.Filter | nodes.Test, target: nodes.Expr, function: Any
               ) -> Expr:
        if function is None:
            raise Unsupported(f"no filter or test named {node.name}")
        pass_arg = _PassArg.from_obj(function)
        if pass_arg is _PassArg.context:
            raise Unsupported(f"{node.name} takes the template context")
        first: tuple[Any, ...] = ()
        if pass_arg is _PassArg.eval_context:
            first = (self.eval_ctx,)
        elif pass_arg is _PassArg.environment:
            first = (self.environment,)
        value = self._expr(target)
        positional, keywords = self._arguments(node)
        if keywords is not None:
            return lambda frame: function(*first, value(frame), *positional(frame),
                                          **keywords(frame))
        if first or positional is not _no_arguments:
            return lambda frame: function(*first, value(frame), *positional(frame))
        return lambda frame: function(value(frame))

    def _arguments(self, node: nodes.Call | nodes.Filter | nodes.Test
                   ) -> tuple[Callable[[Frame], tuple[Any, ...]],
                              Callable[[Frame], dict[str, Any]] | None]:
        """The positional arguments as one closure (a constant tuple when they are all
        constants), the keyword ones as another (None: there are none)."""
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise Unsupported("*args or **kwargs in a call")
        args = [self._expr(arg) for arg in node.args]
        kwargs = []
        for keyword in node.kwargs:  # Keyword nodes, though the filters' annotation says Pair
            if not isinstance(keyword, nodes.Keyword):
                raise Unsupported("an argument that is not a keyword")
            kwargs.append((keyword.key, self._expr(keyword.value)))
        if any(key in ("_loop_vars", "_block_vars") for key, _ in kwargs):
            raise Unsupported("an argument named as Jinja2's own")
        keywords = (lambda frame: {k: v(frame) for k, v in kwargs}) if kwargs else None
        if not args:
            return _no_arguments, keywords
        if all(isinstance(arg, nodes.Const) and not isinstance(arg.value, list | dict | set)
               for arg in node.args):
            values = tuple(arg.value for arg in node.args)  # type: ignore[attr-defined]
            return (lambda frame: values), keywords
        return (lambda frame: tuple([a(frame) for a in args])), keywords

    def _x_Call(self, node: nodes.Call) -> Expr:
        """`environment.call(context, f, …)`. A builtin function or method (`titles.get`)
        has no `unsafe_callable`, `alters_data` or pass-argument mark to find: called
        directly, with the sandbox's answer to a StopIteration."""
        function = self._expr(node.node)
        positional, keywords = self._arguments(node)
        named = keywords or _no_keywords
        call = self.environment.call
        undefined = self.environment.undefined
        context = self.context

        def called(frame: Frame) -> Any:
            target = function(frame)
            if type(target) is types.BuiltinFunctionType:
                try:
                    return target(*positional(frame), **named(frame))
                except StopIteration:
                    return undefined("value was undefined because a callable raised a"
                                     " StopIteration exception")
            if _PassArg.from_obj(target) is _PassArg.context or (
                hasattr(target, "__call__")  # noqa: B004 - as Context.call looks
                and _PassArg.from_obj(target.__call__) is _PassArg.context
            ):
                raise Unsupported("a call that takes the template context")
            return call(context, target, *positional(frame), **named(frame))

        return called
