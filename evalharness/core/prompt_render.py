"""Render few-shot prompts from Jinja templates.

Templates live under ``prompts/`` (and optionally a user folder searched first). They render in
a sandboxed environment with ``StrictUndefined``: a misspelt variable is an error naming the
template and line, never a silently empty string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from evalharness.core.errors import TemplateError
from evalharness.core.task import Doc, Prompt, Task


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PromptRenderer:
    def __init__(self, user_dir: str | Path | None = None) -> None:
        search = [str(Path(str(resources.files("evalharness.prompts"))))]
        if user_dir is not None:
            folder = Path(user_dir).expanduser()
            if not folder.is_dir():
                raise TemplateError(f"--prompt-dir {str(user_dir)!r} is not a directory")
            search.insert(0, str(folder))
        self.env = SandboxedEnvironment(
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
        if name not in self.template_hashes and template.filename:
            self.template_hashes[name] = sha256_text(Path(template.filename).read_text("utf-8"))
        return template

    def render(self, name: str, variables: Mapping[str, Any]) -> str:
        template = self._template(name)
        try:
            return template.render(**variables)
        except jinja2.UndefinedError as exc:
            line = _template_line(exc, template)
            raise TemplateError(f"prompt template {name}{line}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"prompt template {name}{_template_line(exc, template)}: {exc}") from None
        except Exception as exc:  # a user template can raise anything: 1/0, bad indexing, ...
            message = str(exc).splitlines()[0] if str(exc) else ""
            raise TemplateError(
                f"prompt template {name}{_template_line(exc, template)}: {type(exc).__name__}: {message}"
            ) from None

    def build(self, task: Task, doc: Doc, shots: Sequence[Doc]) -> Prompt:
        """description + k × (example + delimiter + answer + separator) + the test example."""
        parts = [task.description(doc.subtask)]
        for shot in shots:
            example = self.render(task.template, task.template_vars(shot))
            parts.append(example + task.target_delimiter + task.target(shot) + task.fewshot_delimiter)
        document = self.render(task.template, task.template_vars(doc))
        text = "".join(parts) + document
        return Prompt(text, len(document), sha256_text(text), tuple(s.doc_id for s in shots))


def _template_line(exc: Exception, template: jinja2.Template) -> str:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == (template.filename or "<template>"):
            return f", line {tb.tb_lineno}"  # jinja rewrites frames to template lines
        tb = tb.tb_next
    return ""
