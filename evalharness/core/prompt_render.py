"""Render few-shot prompts from Jinja templates.

Templates live under ``prompts/`` (and optionally a user folder searched first). They render in
a sandboxed environment with ``StrictUndefined``: a misspelt variable is an error naming the
template and line, never a silently empty string.

User templates are untrusted code that runs tens of thousands of times per run, so the sandbox
also bounds what one render may cost: ``range`` lengths, the size of integers, strings and lists
built by operators, filters and string methods, the rendered text, and the wall time (checked at
every loop iteration, call and operator, which is cheap; no signals, so it works in any thread).
Each limit trips as one TemplateError naming the template.
"""

from __future__ import annotations

import hashlib
import re
import string
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from evalharness.core.errors import TemplateError
from evalharness.core.task import Doc, Prompt, Task

MAX_RANGE = 10_000  # items in one range() inside a template
MAX_INT_BITS = 4096  # about 1,200 decimal digits
MAX_TEXT_CHARS = 1_000_000  # a string or list built in a template, a rendered template, a prompt
RENDER_TIMEOUT_S = 10.0  # wall time of one render
SIZED_STR_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LimitExceeded(Exception):
    """A template asked for more than the sandbox allows (size or time)."""


def _too_big(what: str, size: int, limit: int) -> LimitExceeded:
    return LimitExceeded(f"{what} ({size:,}) exceeds the template limit ({limit:,})")


def _check_printf(fmt: str) -> None:
    for width, precision in _PRINTF_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_TEXT_CHARS):
                raise LimitExceeded(f"format width {number!r} exceeds the template limit")


def _check_format_spec(fmt: str) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format reports the malformed string itself
    for _, _, spec, _ in fields:
        if spec and ("{" in spec or any(int(n) > MAX_TEXT_CHARS for n in _NUMBER.findall(spec))):
            raise LimitExceeded(f"format spec {spec!r} exceeds the template limit")


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _int(value: Any) -> bool:
    return isinstance(value, int)


def check_binop(op: str, left: Any, right: Any) -> None:
    """Rejects, before computing it, an operation whose result would exceed the limits."""
    if op == "**" and _int(left) and _int(right) and right > 0 and abs(left) > 1:
        bits = right * abs(left).bit_length()
        if bits > MAX_INT_BITS:
            raise _too_big("an integer power's size in bits", bits, MAX_INT_BITS)
    elif op == "*":
        if _int(left) and _int(right):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                raise _too_big("an integer product's size in bits", bits, MAX_INT_BITS)
            return
        for seq, times in ((left, right), (right, left)):
            size = _length(seq)
            if size is not None and _int(times) and size * times > MAX_TEXT_CHARS:
                raise _too_big("a repeated string or list's length", size * times, MAX_TEXT_CHARS)
    elif op == "+":
        sizes = (_length(left), _length(right))
        if sizes[0] is not None and sizes[1] is not None and sizes[0] + sizes[1] > MAX_TEXT_CHARS:
            raise _too_big("a concatenation's length", sizes[0] + sizes[1], MAX_TEXT_CHARS)
    elif op == "%" and isinstance(left, str):
        _check_printf(left)


class _Bound(NodeTransformer):
    """Routes every loop's iterable and every ``~`` through the environment's bounded helpers."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(
            nodes.EnvironmentAttribute("bounded_concat"), list(node.nodes), [], None, None, lineno=node.lineno
        )


class BoundedSandbox(SandboxedEnvironment):
    """A SandboxedEnvironment whose renders are bounded in size and time."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._local = threading.local()  # the deadline of the render running in this thread
        self.globals["range"] = self.bounded_range
        for name, check in (("center", _check_width_arg), ("indent", _check_indent),
                            ("format", _check_format_filter), ("join", _check_join),
                            ("replace", _check_replace)):
            self.filters[name] = _guarded(self.filters[name], check)

    # -- the clock ------------------------------------------------------------------------
    def start_clock(self) -> None:
        self._local.deadline = time.monotonic() + RENDER_TIMEOUT_S

    def stop_clock(self) -> None:
        self._local.deadline = None

    def tick(self) -> None:
        deadline = getattr(self._local, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            raise LimitExceeded(f"rendering took longer than {RENDER_TIMEOUT_S:g} s")

    # -- hooks the compiled template calls ------------------------------------------------
    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _Bound().visit(super()._parse(source, name, filename))
        assert isinstance(tree, nodes.Template)
        return tree

    def bounded_iter(self, iterable: Any) -> Iterator[Any]:
        tick = self.tick
        for item in iterable:
            tick()
            yield item

    def bounded_concat(self, *parts: Any) -> str:
        self.tick()
        texts = [str(p) for p in parts]
        size = sum(map(len, texts))
        if size > MAX_TEXT_CHARS:
            raise _too_big("a ~ concatenation's length", size, MAX_TEXT_CHARS)
        return "".join(texts)

    def bounded_range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise _too_big("a range() length", len(numbers), MAX_RANGE)
        return numbers

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in SIZED_STR_METHODS:
                _check_width_arg(owner, *args, **kwargs)
            elif name == "join" and args:
                items = list(args[0])
                _check_join(items, owner)
                args = (items, *args[1:])
            elif name == "replace":
                _check_replace(owner, *args, **kwargs)
            elif name == "expandtabs":
                tab = args[0] if args else kwargs.get("tabsize", 8)
                if _int(tab) and tab * owner.count("\t") > MAX_TEXT_CHARS:
                    raise _too_big("expandtabs() width", tab, MAX_TEXT_CHARS)
        return SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_spec(value.__self__)
        return wrapped


def _guarded(filter_func: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    passes_context = hasattr(filter_func, "jinja_pass_arg")  # e.g. join(eval_ctx, value, ...)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(*(args[1:] if passes_context else args), **kwargs)
        return filter_func(*args, **kwargs)

    if passes_context:
        guarded.jinja_pass_arg = filter_func.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


def _check_width_arg(value: Any, width: Any = 80, *_: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    if _int(width) and width > MAX_TEXT_CHARS:
        raise _too_big("a width", width, MAX_TEXT_CHARS)


def _check_indent(value: Any, width: Any = 4, *_: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    size = len(width) if isinstance(width, str) else width if _int(width) else 0
    lines = str(value).count("\n") + 1
    if size * lines + len(str(value)) > MAX_TEXT_CHARS:
        raise _too_big("indented text's length", size * lines + len(str(value)), MAX_TEXT_CHARS)


def _check_format_filter(value: Any, *_: Any, **__: Any) -> None:
    if isinstance(value, str):
        _check_printf(value)


def _check_join(value: Any, separator: Any = "", *_: Any, **__: Any) -> None:
    if not isinstance(value, (list, tuple)):
        return  # generators: jinja materialises them; their items are bounded on creation
    size = sum(len(v) if isinstance(v, str) else 8 for v in value) + len(str(separator)) * len(value)
    if size > MAX_TEXT_CHARS:
        raise _too_big("joined text's length", size, MAX_TEXT_CHARS)


def _check_replace(value: Any, old: Any = "", new: Any = "", count: Any = -1, *_: Any, **__: Any) -> None:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        hits = value.count(old) if old else len(value) + 1
        if _int(count) and count >= 0:
            hits = min(hits, count)
        size = len(value) + hits * (len(new) - len(old))
        if size > MAX_TEXT_CHARS:
            raise _too_big("replaced text's length", size, MAX_TEXT_CHARS)


class PromptRenderer:
    def __init__(self, user_dir: str | Path | None = None) -> None:
        search = [str(Path(str(resources.files("evalharness.prompts"))))]
        if user_dir is not None:
            folder = Path(user_dir).expanduser()
            if not folder.is_dir():
                raise TemplateError(f"--prompt-dir {str(user_dir)!r} is not a directory")
            search.insert(0, str(folder))
        self.env = BoundedSandbox(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,  # prompts are plain text; the HTML report escapes on its own
        )
        self.template_hashes: dict[str, str] = {}

    def _template(self, name: str) -> jinja2.Template:
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound:
            raise TemplateError(f"prompt template {name!r} not found") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"prompt template {exc.name or name}, line {exc.lineno}: {exc.message}") from None
        except RecursionError:
            raise TemplateError(f"prompt template {name}: nested too deeply to compile") from None
        if name not in self.template_hashes and template.filename:
            self.template_hashes[name] = sha256_text(Path(template.filename).read_text("utf-8"))
        return template

    def render(self, name: str, variables: Mapping[str, Any]) -> str:
        template = self._template(name)
        try:
            return self._render_bounded(template, variables)
        except jinja2.UndefinedError as exc:
            line = _template_line(exc, template)
            raise TemplateError(f"prompt template {name}{line}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"prompt template {name}{_template_line(exc, template)}: {exc}") from None
        except LimitExceeded as exc:
            raise TemplateError(f"prompt template {name}{_template_line(exc, template)}: {exc}") from None
        except Exception as exc:  # a user template can raise anything: 1/0, bad indexing, ...
            message = str(exc).splitlines()[0] if str(exc) else ""
            raise TemplateError(
                f"prompt template {name}{_template_line(exc, template)}: {type(exc).__name__}: {message}"
            ) from None

    def _render_bounded(self, template: jinja2.Template, variables: Mapping[str, Any]) -> str:
        """template.render(), with the clock running and the output size capped as it grows."""
        self.env.start_clock()
        try:
            chunks: list[str] = []
            size = 0
            for chunk in template.generate(**variables):
                size += len(chunk)
                if size > MAX_TEXT_CHARS:
                    raise _too_big("the rendered text's length", size, MAX_TEXT_CHARS)
                chunks.append(chunk)
            return "".join(chunks)
        finally:
            self.env.stop_clock()

    def build(self, task: Task, doc: Doc, shots: Sequence[Doc]) -> Prompt:
        """description + k × (example + delimiter + answer + separator) + the test example."""
        parts = [task.description(doc.subtask)]
        for shot in shots:
            example = self.render(task.template, task.template_vars(shot))
            parts.append(example + task.target_delimiter + task.target(shot) + task.fewshot_delimiter)
        document = self.render(task.template, task.template_vars(doc))
        text = "".join(parts) + document
        if len(text) > MAX_TEXT_CHARS:  # tokenizers abort (not raise) on prompts of ~100 MB
            raise TemplateError(
                f"prompt template {task.template}: the prompt for {doc.subtask} document {doc.doc_id} "
                f"has {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,}"
            )
        return Prompt(text, len(document), sha256_text(text), tuple(s.doc_id for s in shots))


def _template_line(exc: Exception, template: jinja2.Template) -> str:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == (template.filename or "<template>"):
            return f", line {tb.tb_lineno}"  # jinja rewrites frames to template lines
        tb = tb.tb_next
    return ""

