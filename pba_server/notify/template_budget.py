"""The render budget of notification templates: memory, output and CPU.

A template is tenant code run on the server's threads, so every render gets a
:class:`Budget` and the Jinja2 sandbox below spends it:

- **values**: no string, list or number a template builds may exceed
  ``MAX_VALUE`` characters (items of a list, nested ones counted; about 3
  decimal digits per 10 bits of an integer). The operators that can grow a
  value (``*``, ``**``, ``+``, ``%``, ``~``), the string methods and the
  filters that pad, repeat or join (``center``, ``ljust``, ``replace``,
  ``join``, ``format``, ``indent``, ``wordwrap``, ``batch``, ``slice``,
  ``sum``, ``tojson``...) are checked *before* they compute, so a value over
  the limit is never allocated; every other call's result is checked after;
- **output**: everything a render produces, counting macro results and
  ``{% set %}`` blocks, is at most ``MAX_PRODUCED`` characters, and each
  rendered part (subject, text, HTML) at most ``MAX_OUTPUT``. The template is
  rendered as a stream and stopped at the limit;
- **steps**: every loop item, call, filter, checked operator and output
  chunk is a step; a render takes at most ``MAX_STEPS`` steps and
  ``MAX_SECONDS`` of time (``time.monotonic``, not the wall clock).

Anything over budget raises :class:`BudgetExceeded`, which the caller turns
into a refused template (``NotificationTemplateSet``) or a failed delivery.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

MAX_VALUE = 100_000
MAX_OUTPUT = 100_000
MAX_PRODUCED = 400_000
MAX_STEPS = 50_000
MAX_SECONDS = 0.5
MAX_INT_BITS = 4096
MAX_INDENT = 16


class BudgetExceeded(Exception):
    """A render went over its budget. Deliberately not a ``TypeError`` or
    ``LookupError``, which Jinja2's attribute lookup would swallow."""


@dataclass
class Budget:
    max_steps: int = MAX_STEPS
    max_seconds: float = MAX_SECONDS
    max_produced: int = MAX_PRODUCED
    steps: int = 0
    produced: int = 0
    deadline: float = field(default=0.0)

    def start(self) -> Budget:
        self.deadline = time.monotonic() + self.max_seconds
        return self

    def tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.max_steps:
            raise BudgetExceeded(
                f"takes more than {self.max_steps} steps (loop items, calls and outputs)"
            )
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"takes longer than {self.max_seconds:g} s to render")

    def produce(self, n: int) -> None:
        self.produced += n
        if self.produced > self.max_produced:
            raise BudgetExceeded(f"produces more than {self.max_produced} characters")
        self.tick()


_current: ContextVar[Budget | None] = ContextVar("pba_template_budget", default=None)


def _tick(n: int = 1) -> None:
    b = _current.get()
    if b is not None:
        b.tick(n)


class active:  # noqa: N801 - used as ``with active(budget):``
    """Make ``budget`` the one spent by renders in this thread (or task)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget.start()

    def __enter__(self) -> Budget:
        self._token = _current.set(self.budget)
        return self.budget

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


# ---------------------------------------------------------------- sizes


def weight(obj: Any, limit: int = MAX_VALUE) -> int:
    """Characters of a string, items of a container (nested items counted
    each time they appear), about a digit per 3.3 bits of an integer; stops
    counting once past ``limit``."""
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            total += len(o)
        elif isinstance(o, (list, tuple)):
            total += len(o)
            if total > limit:
                return total
            stack.extend(o)
        elif isinstance(o, dict):
            total += len(o)
            if total > limit:
                return total
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, int) and not isinstance(o, bool):
            total += o.bit_length() // 3 + 1
        else:
            total += 1
        if total > limit:
            return total
    return total


def _refuse_over(size: int, what: str) -> None:
    if size > MAX_VALUE:
        raise BudgetExceeded(f"{what} would be more than {MAX_VALUE} characters or items")


def _as_int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


# printf-style conversion: flags, width, precision
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_percent(fmt: str, args: Any) -> None:
    """Refuse a ``%`` format whose result could exceed MAX_VALUE."""
    values = (
        list(args.values())
        if isinstance(args, dict)
        else list(args)
        if isinstance(args, tuple)
        else [args]
    )
    biggest = max((weight(v) for v in values), default=0)
    conversions = 0
    for m in _PERCENT.finditer(fmt):
        conversions += 1
        for num in m.groups():
            if num == "*":
                raise BudgetExceeded("a '*' width or precision in a % format is not allowed")
            if num is not None and int(num) > MAX_VALUE:
                raise BudgetExceeded(f"a % format width over {MAX_VALUE}")
    _refuse_over(len(fmt) + conversions * biggest, "a % format")


def _check_str_format(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    biggest = max((weight(v) for v in (*args, *kwargs.values())), default=0)
    fields = 0
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _literal, name, spec, _conv in parsed:
        if name is None:
            continue
        fields += 1
        spec = spec or ""
        if "{" in spec:
            raise BudgetExceeded("nested replacement fields in a format spec are not allowed")
        for num in re.findall(r"\d+", spec):
            if int(num) > MAX_VALUE:
                raise BudgetExceeded(f"a format width over {MAX_VALUE}")
    _refuse_over(len(fmt) + fields * biggest, "str.format")


def _replace_size(s: str, old: Any, new: Any, count: Any = -1) -> int:
    old, new = str(old), str(new)
    hits = s.count(old) if old else len(s) + 1
    n = _as_int(count) if count is not None else -1
    if n >= 0:
        hits = min(hits, n)
    return len(s) + hits * max(len(new) - len(old), 0)


def _joined(sep: Any, items: Iterable[Any]) -> list[Any]:
    """Materialise ``items`` for a join, refusing before the joined string is too big."""
    out: list[Any] = []
    total = 0
    step = len(str(sep))
    for x in items:
        total += weight(x) + step
        _refuse_over(total, "a join")
        out.append(x)
    _tick(len(out))
    return out


# ---------------------------------------------------------------- str methods


def _check_str_method(name: str, s: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Pre-check a string method that can grow its result; returns the
    (possibly materialised) arguments."""
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        _refuse_over(_as_int(width), f"str.{name}")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        _refuse_over(len(s) + s.count("\t") * max(_as_int(size), 0), "str.expandtabs")
    elif name == "replace" and len(args) >= 2:
        _refuse_over(_replace_size(s, *args[:3]), "str.replace")
    elif name == "join" and args:
        return (_joined(s, args[0]), *args[1:])
    elif name == "translate":
        raise BudgetExceeded("str.translate is not allowed in templates")
    return args


# ---------------------------------------------------------------- filters


def _filter_checks() -> dict[str, Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]]:
    def center(value: Any, width: Any = 80) -> tuple[tuple[Any, ...], dict[str, Any]]:
        _refuse_over(_as_int(width), "center")
        return (value, width), {}

    def indent(
        s: Any, width: Any = 4, first: bool = False, blank: bool = False
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        text = str(s)
        w = len(width) if isinstance(width, str) else max(_as_int(width), 0)
        _refuse_over(len(text) + (text.count("\n") + 1) * w, "indent")
        return (s, width, first, blank), {}

    def format_(value: Any, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        _check_percent(str(value), kwargs or tuple(args))
        return (value, *args), kwargs

    def replace(
        s: Any, old: Any, new: Any, count: Any = None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        _refuse_over(_replace_size(str(s), old, new, count), "replace")
        return (s, old, new, count), {}

    def join(
        value: Any, d: Any = "", attribute: Any = None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if attribute is not None:  # the attribute's values are checked by the post-check
            return (value, d, attribute), {}
        return (_joined(d, value), d), {}

    def wordwrap(s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> Any:
        text = str(s)
        wrap = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
        lines = len(text) // max(_as_int(width), 1) + text.count("\n") + 1
        _refuse_over(len(text) + lines * len(str(wrap)), "wordwrap")
        return (s, width, *args), kwargs

    def batch(value: Any, linecount: Any, fill_with: Any = None) -> Any:
        _refuse_over(_as_int(linecount), "batch")
        return (value, linecount, fill_with), {}

    def slice_(value: Any, slices: Any, fill_with: Any = None) -> Any:
        _refuse_over(_as_int(slices), "slice")
        return (value, slices, fill_with), {}

    def sum_(iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if isinstance(start, (str, list, tuple)):
            items = list(iterable)
            _refuse_over(weight(start) + sum(weight(x) for x in items), "sum")
            iterable = items
        return (iterable, attribute, start), {}

    def tojson(value: Any, indent: Any = None) -> Any:
        if indent is not None and _as_int(indent) > MAX_INDENT:
            raise BudgetExceeded(f"tojson indent over {MAX_INDENT}")
        return (value, indent), {}

    return {
        "center": center,
        "indent": indent,
        "format": format_,
        "replace": replace,
        "join": join,
        "wordwrap": wordwrap,
        "batch": batch,
        "slice": slice_,
        "sum": sum_,
        "tojson": tojson,
    }


def _budgeted_filter(
    f: Callable[..., Any], check: Callable[..., tuple[tuple[Any, ...], dict[str, Any]]] | None
) -> Callable[..., Any]:
    offset = 1 if hasattr(f, "jinja_pass_arg") else 0  # context, eval context or environment

    @wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if check is not None:
            given, kwargs = check(*args[offset:], **kwargs)
            args = (*args[:offset], *given)
        out = f(*args, **kwargs)
        _refuse_over(weight(out), f"the result of a filter ({f.__name__})")
        return out

    return run


# ---------------------------------------------------------------- globals


def _range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_STEPS:
        raise BudgetExceeded(f"range() of more than {MAX_STEPS} items")
    return rng


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > 20 or max > 100 or min > max:
        raise BudgetExceeded("lipsum() of more than 20 paragraphs of 100 words")
    return str(generate_lorem_ipsum(n, html, min, max))


# ---------------------------------------------------------------- the sandbox


class _BudgetCodeGenerator(CodeGenerator):
    """Counts every piece of output (of any frame: macros and ``{% set %}``
    blocks too) and checks ``~`` before it joins."""

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.budget_out({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.budget_out(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.budget_concat({func_name}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BudgetSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, spending the active :class:`Budget`."""

    code_generator_class = _BudgetCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        checks = _filter_checks()
        self.filters = {
            name: _budgeted_filter(f, checks.get(name)) for name, f in self.filters.items()
        }
        self.globals.update(range=_range, lipsum=_lipsum)

    # every for loop iterates through budget_iter (see _parse)
    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("budget_iter"), [loop.iter], [], None, None
            )
        return tree

    def budget_iter(self, iterable: Any) -> Iterator[Any]:
        for item in iterable:
            _tick()
            yield item

    def budget_out(self, value: Any) -> Any:
        b = _current.get()
        if b is not None:
            b.produce(len(value))
        return value

    def budget_concat(self, join: Callable[[Iterable[Any]], Any], parts: tuple[Any, ...]) -> Any:
        _tick()
        _refuse_over(sum(weight(p) for p in parts), "a ~ concatenation")
        return join(parts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        seq = (str, list, tuple)
        if operator == "*":
            if isinstance(left, int) and isinstance(right, seq):
                left, right = right, left
            if isinstance(left, seq) and isinstance(right, int):
                _refuse_over(weight(left) * max(right, 0), "a * repetition")
            elif (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise BudgetExceeded(f"a product over {MAX_INT_BITS} bits")
        elif operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left) > 1
                and right > 0
                and max(left.bit_length() - 1, 1) * right > MAX_INT_BITS
            ):
                raise BudgetExceeded(f"a power over {MAX_INT_BITS} bits")
        elif operator == "+":
            if isinstance(left, seq) and isinstance(right, seq):
                _refuse_over(weight(left) + weight(right), "a + concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str) and callable(target):
            name = getattr(target, "__name__", "")
            if name in ("format", "format_map"):
                values = args[0] if name == "format_map" and args else kwargs
                _check_str_format(
                    owner,
                    args if name == "format" else (),
                    dict(values) if isinstance(values, dict) else {},
                )
            else:
                args = _check_str_method(name, owner, args, kwargs)
        out = super().call(__context, __obj, *args, **kwargs)
        _refuse_over(weight(out), "the result of a call")
        return out
