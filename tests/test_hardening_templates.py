"""Templates that would exhaust the machine stop as one TemplateError naming the template, fast
and without the memory they asked for; ordinary templates render exactly as before."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

import evalharness.core.prompt_render as prompt_render
from evalharness.cli.main import main
from evalharness.core.errors import TemplateError
from evalharness.core.prompt_render import PromptRenderer
from tests.conftest import DATA, TINY_LLAMA

VARS = {"question": "Q?", "choices": ["a", "b", "c", "d"]}
NS = "{% set ns = namespace(s='xxxxxxxxxx') %}"
# (template, a word of the message); each would hang, or allocate gigabytes, without the limits.
EXHAUSTING = {
    "nested_range": ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "range()"),
    "nested_loops": ("{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}", "longer than"),
    "loops_over_lists": ("{% set l = range(10000)|list %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
                         "longer than"),
    "power": ("{{ 10 ** (10**9) }}", "integer power"),
    "product": ("{{ (10**1000) * (10**1000) * (10**1000) * (10**1000) * (10**1000) }}", "integer product"),
    "string_times": ("{{ 'x' * 10**9 }}", "repeated string"),
    "list_times": ("{{ ([1] * 10**8)|length }}", "repeated string or list"),
    "doubling_tilde": (NS + "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", "~"),
    "doubling_plus": (NS + "{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}", "concatenation"),
    "output": ("{% for i in range(10000) %}{% for j in range(10000) %}xxxxxxxxxx{% endfor %}{% endfor %}", "rendered text"),
    "center": ("{{ 'x'|center(10**9) }}", "width"),
    "ljust": ("{{ 'x'.ljust(10**9) }}", "width"),
    "str_format": ("{{ '{:>999999999}'.format(1) }}", "format spec"),
    "printf": ("{{ '%999999999d' % 1 }}", "format width"),
    "format_filter": ("{{ '%999999999d'|format(1) }}", "format width"),
    "join": ("{{ (['x' * 100000] * 1000)|join }}", "joined text"),
    "str_join": ("{{ ''.join(['x' * 100000] * 1000) }}", "joined text"),
    "replace": ("{{ ('x' * 100000)|replace('x', 'yyyyyyyyyyyy') }}", "replaced text"),
    "indent": ("{{ ('x\n' * 100000)|indent(100) }}", "indented text"),
    "recursion": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
}


@pytest.fixture
def renderer(tmp_path, monkeypatch):
    monkeypatch.setattr(prompt_render, "RENDER_TIMEOUT_S", 1.0)
    for name, (source, _) in EXHAUSTING.items():
        (tmp_path / f"{name}.jinja").write_text(source)
    return PromptRenderer(tmp_path)


@pytest.mark.parametrize("name", list(EXHAUSTING))
def test_an_exhausting_template_is_one_template_error(renderer, name):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        renderer.render(f"{name}.jinja", VARS)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message and f"prompt template {name}.jinja" in message
    assert EXHAUSTING[name][1] in message
    assert elapsed < 5  # the timeout is 1 s here
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 500_000  # never the gigabytes the template asked for


def test_ordinary_templates_render_as_before(tmp_path):
    (tmp_path / "ok.jinja").write_text(
        "{{ question }}{% for c in choices %} {{ loop.index }}. {{ c }}{% if not loop.last %},{% endif %}{% endfor %}"
        " {{ 'a' ~ 'b' }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ '%5d'|format(3) }} {{ '{:>4}'.format('x') }}"
        " {{ choices|join('/') }} {{ 'a-b'|replace('-', '+') }} {{ 'x'.ljust(3) }}|{{ range(3)|list }}"
    )
    got = PromptRenderer(tmp_path).render("ok.jinja", VARS)
    assert got == "Q? 1. a, 2. b, 3. c, 4. d ab 1024 ababab     3    x a/b/c/d a+b x  |[0, 1, 2]"


def test_a_prompt_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    """The whole prompt (few-shot examples + document) is capped too, not only each render."""
    from evalharness.core.task_selection import resolve
    from evalharness.data.source import DataSource

    monkeypatch.setattr(prompt_render, "MAX_TEXT_CHARS", 1_000)
    (selection,) = resolve(["mmlu_anatomy"])
    data = DataSource(DATA)
    doc = selection.task.documents(data, "mmlu_anatomy")[0]
    shots = selection.task.fewshot_pool(data, "mmlu_anatomy")[:5]
    with pytest.raises(TemplateError, match="mmlu/default.jinja.*characters"):
        PromptRenderer().build(selection.task, doc, shots)


def test_the_cli_reports_an_exhausting_prompt_dir_template_in_one_line(tmp_path, capsys):
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "default.jinja").write_text("{{ question }}\n{{ 10 ** (10**9) }}\nAnswer:")
    code = main(["run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomy", "--limit", "1", "--data-dir",
                 str(DATA), "--prompt-dir", str(tmp_path), "--no-cache", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "evalharness: error: prompt template mmlu/default.jinja, line 2: an integer power's size in bits "
        "(4,000,000,000) exceeds the template limit (4,096)"
    ]


def test_bounding_costs_little_on_mmlu_prompts():
    """The limits run at every render (tens of thousands per run); keep them cheap."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    source = (Path(prompt_render.__file__).parents[2] / "prompts" / "mmlu" / "default.jinja").read_text()
    bounded = PromptRenderer()
    plain = SandboxedEnvironment(undefined=jinja2.StrictUndefined).from_string(source)
    bounded.render("mmlu/default.jinja", VARS)

    def best_of(render: object, n: int = 3000) -> float:
        times = []
        for _ in range(5):  # CPU time, best of 5: other processes share the machine
            started = time.process_time()
            for _ in range(n):
                render()  # type: ignore[operator]
            times.append(time.process_time() - started)
        return min(times)

    base = best_of(lambda: plain.render(**VARS))
    ours = best_of(lambda: bounded.render("mmlu/default.jinja", VARS))
    assert ours < base * 1.6 + 0.05  # generous: shared CI machines are noisy
