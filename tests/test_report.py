"""`evalharness report`: group rules on runs, Markdown snapshot of a real run, HTML in a real browser."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from evalharness.cli.report import main as report_main
from evalharness.reporting.render import render_html, render_markdown, samples
from evalharness.reporting.report import build_report
from tests.conftest import DATA, TINY_LLAMA, run_cli
from tests.run_files import GOLDEN, acc, copy_golden, edit_first_sample, edit_results, seal, write_results

SNAPSHOTS = Path(__file__).parent / "snapshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAYLOAD = '<script>document.title="pwned";document.documentElement.setAttribute("data-pwned","1")</script>'


def metric(value: float, n: int = 100, stderr: float = 0.01) -> dict:
    return {"value": value, "stderr": stderr, "n": n}


def fake_run(folder: Path, tasks: dict, requested: list[str], model: str = "meta-llama/Llama-2-7b-hf",
             limit: int | None = None) -> Path:
    """A results.json shaped like the runner's (schema 1), for rule tests that need no model."""
    folder.mkdir(parents=True)
    entries = {name: {"num_fewshot": shots, "metrics": metrics, "groups": groups, "subtasks": subtasks, **extra}
               for name, (shots, metrics, groups, subtasks, extra) in tasks.items()}
    results = {"schema_version": 1, "created": "2026-01-01T00:00:00Z", "wall_time_s": 1.0,
               "config": {"model": model, "tasks": requested, "limit": limit, "seed": 1234},
               "harness": {"version": "0.1.0", "git_sha": "0" * 40}, "model": {"device": "cpu", "dtype": "float32"},
               "tasks": entries}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def by_id(rows, row_id):
    return next(r for r in rows if r.id == row_id)


# --- group rules on runs (no model needed) -------------------------------------------------------


def test_math_group_is_partial_until_both_members_ran(tmp_path):
    both = fake_run(tmp_path / "both", {
        "gsm8k": (8, {"exact_match_strict": metric(0.146, 1319)}, {}, {}, {}),
        "math": (4, {"exact_match": metric(0.025, 5000)}, {}, {}, {}),
    }, ["gsm8k", "math"])
    only = fake_run(tmp_path / "only", {"gsm8k": (8, {"exact_match_strict": metric(0.146, 1319)}, {}, {}, {})},
                    ["gsm8k"])
    report = build_report([both, only])
    assert report.model.id == "llama-2-7b" and "inferred" in report.card_reason
    assert [r.label for r in report.runs] == ["both", "only"]  # same model: the directories name the columns
    math_row = by_id(report.groups, "math")
    full, partial = math_row.measures
    assert full.status == "ok" and full.value == pytest.approx(8.55)  # mean(14.6, 2.5): the rule
    assert full.delta == pytest.approx(0.0)  # against the rule's 8.55, not the printed 14.6
    assert partial.status == "partial" and partial.value is None
    assert (partial.ran, partial.missing) == (["GSM8K"], ["MATH"])
    markdown = render_markdown(report)
    line = next(li for li in markdown.splitlines() if li.startswith("| Math |"))
    assert "14.6 <sup>1</sup> (rule: 8.55)" in line and "| 8.6 ± 0.7 | 0.0 |" in line
    assert "partial (1 of 2: GSM8K)" in line
    assert "Table 3 prints GSM8K alone" in markdown


def test_agieval_group_weights_members_by_questions(tmp_path):
    sizes = {"aqua_rat": 254, "logiqa_en": 651, "lsat_ar": 230, "lsat_lr": 510, "lsat_rc": 269,
             "sat_en": 206, "sat_en_without_passage": 206, "sat_math": 220}
    subtasks = {f"agieval_{k}": {"acc": metric(0.25 if k == "logiqa_en" else 0.5, n)} for k, n in sizes.items()}
    run = fake_run(tmp_path / "agi", {"agieval": (3, {"acc": metric(0.4, 2546)}, {}, subtasks, {})}, ["agieval"])
    (row,) = [r for r in build_report([run]).groups if r.id == "agieval"]
    expected = (0.25 * 651 + 0.5 * (2546 - 651)) / 2546 * 100
    assert row.measures[0].status == "ok" and row.measures[0].value == pytest.approx(expected)
    assert row.measures[0].n == 2546


def test_toxigen_groups_lower_is_better_and_approximations_are_labelled(tmp_path):
    from evalharness.tasks.toxigen import GROUPS

    groups = {g.key: {"toxic": metric(0.20, 50)} for g in GROUPS}
    run = fake_run(tmp_path / "tox", {"toxigen": (0, {"toxic_mean_of_groups": metric(0.20, 650)}, groups, {},
                                                  {"approximate": True, "classifier": {"name": "hatesonar-onnx"}})},
                   ["toxigen"])
    report = build_report([run], card_model="llama-2-7b")
    toxigen = by_id(report.safety, "toxigen")
    (m,) = toxigen.measures
    assert m.status == "ok" and m.value == pytest.approx(20.0) and m.delta == pytest.approx(-1.25) and m.better
    assert m.approximate == "classifier=hatesonar-onnx"
    markdown = render_markdown(report)
    assert "| ToxiGen |" in markdown and "20.00 ± " in markdown and "≈" in markdown
    assert "approximate: classifier=hatesonar-onnx" in markdown
    detail = next(d for d in report.details if d.task == "toxigen")
    assert ("middle_east", 19.95) == detail.groups[[g[0] for g in detail.groups].index("middle_east")][:2]


def test_one_mmlu_subject_is_partial_never_a_silent_mean(tmp_path):
    run = fake_run(tmp_path / "one", {"mmlu": (5, {"acc": metric(0.3, 135)}, {"stem": {"acc": metric(0.3, 135)}},
                                               {"mmlu_anatomy": {"acc": metric(0.3, 135)}}, {})}, ["mmlu_anatomy"])
    row = by_id(build_report([run]).groups, "mmlu")
    (m,) = row.measures
    assert m.status == "partial" and m.value is None and m.ran == ["MMLU STEM"]
    assert any("incomplete: MMLU STEM" in f for f in m.flags)
    stem = by_id(row.members, "mmlu_stem").measures[0]
    assert stem.status == "partial" and stem.flags == ["partial: 1 of 57 subtasks"]


def test_card_choice_and_chat_rows(tmp_path):
    run = fake_run(tmp_path / "chat", {"gsm8k": (8, {"exact_match_strict": metric(0.2)}, {}, {}, {})}, ["gsm8k"],
                   model="meta-llama/Llama-2-13b-chat-hf")
    report = build_report([run])
    assert report.model.id == "llama-2-13b-chat"
    assert by_id(report.safety, "truthfulqa").card == 62.18
    assert by_id(report.groups, "math").card is None  # the card has no academic numbers for chat models
    assert build_report([run], card_model="llama-2-70b").model.id == "llama-2-70b"


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert report_main(["report", str(tmp_path / "missing"), "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert "no results.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    assert report_main(["report", str(tmp_path / "bad")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


# --- a real run of the tiny model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-run")
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu,gsm8k", "--limit", "1", "--no-log-prompts",
                   "--data-dir", str(DATA), "--output", str(out), "--device", "cpu", "--no-cache",
                   "--gen-kwargs", "max_new_tokens=16")
    assert proc.returncode == 0, proc.stderr
    return out


def normalise(markdown: str) -> str:
    """Blank out what changes from run to run: time, wall time, harness commit, run directory."""
    volatile = ("created", "harness", "wall time", "directory")
    lines = [f"| {line.split('|')[1].strip()} | <volatile> |" if any(line.startswith(f"| {v} |") for v in volatile)
             else line for line in markdown.splitlines()]
    # ‡ marks card tasks not registered yet: it disappears as tasks land, so the snapshot ignores it.
    return "\n".join(line.replace(" ‡", "") for line in lines) + "\n"


def test_markdown_snapshot_of_a_real_run(tiny_run, tmp_path):
    output = tmp_path / "report.md"
    assert report_main(["report", str(tiny_run), "--format", "md", "--output", str(output)]) == 0
    got = normalise(output.read_text("utf-8"))
    snapshot = SNAPSHOTS / "report_tiny_mmlu_gsm8k.md"
    if os.environ.get("EVALHARNESS_UPDATE_SNAPSHOTS") == "1":
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(got, "utf-8")
    assert got == snapshot.read_text("utf-8"), "set EVALHARNESS_UPDATE_SNAPSHOTS=1 to accept the new report"
    results = json.loads((tiny_run / "results.json").read_text())
    acc = 100 * results["tasks"]["mmlu"]["metrics"]["acc"]["value"]
    assert f"| MMLU | 5-shot | 45.3 | {acc:.1f} ± " in got
    assert "| Code | 0/3-shot | 16.8 | not run |" in got
    assert "limited run (--limit 1" in got


def _browser(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="evalharness-chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *flags, url],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def html_report(tiny_run, tmp_path_factory) -> Path:
    """The real run, with one generation and one prompt replaced by a script payload."""
    folder = tmp_path_factory.mktemp("hostile")
    run = folder / "run"
    shutil.copytree(tiny_run, run)
    samples = [json.loads(li) for li in (run / "samples.jsonl").read_text("utf-8").splitlines()]
    target = next(s for s in samples if s["task"] == "gsm8k")
    target["output"] = f"The answer is {PAYLOAD}</pre><img src=x onerror=\"document.title='img'\">"
    target["prompt"] = f"Q: </textarea>{PAYLOAD}\nA:"
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples), "utf-8")
    results = json.loads((run / "results.json").read_text("utf-8"))  # re-commit the edited pair
    results["samples_sha256"] = hashlib.sha256((run / "samples.jsonl").read_bytes()).hexdigest()
    (run / "results.json").write_text(json.dumps(results), "utf-8")
    output = folder / "report.html"
    assert report_main(["report", str(run), "--format", "html", "--output", str(output)]) == 0
    return output


def test_html_is_self_contained_and_escaped(html_report):
    html = html_report.read_text("utf-8")
    assert html.count("<script") == 1 and "&lt;script&gt;document.title" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "@import" not in html
    assert "script-src 'sha256-" in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_in_headless_chromium(html_report, tiny_run, tmp_path):
    url = html_report.as_uri()
    dom = _browser(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    console = [li for li in dom.stderr.splitlines() if ":CONSOLE" in li]
    assert console == [], console  # no errors, no CSP violations, nothing logged
    root = re.search(r"<html[^>]*>", page).group(0)  # the script sets data-ready; the payload would set data-pwned
    assert 'data-ready="1"' in root and "data-error" not in root and "data-pwned" not in root
    assert "<title>Llama 2 model card: tiny-random-llama2</title>" in page
    assert "&lt;script&gt;document.title=\"pwned\"" in page  # shown as text
    assert "&lt;img src=x onerror" in page and "&lt;/textarea&gt;" in page
    results = json.loads((tiny_run / "results.json").read_text())
    acc = 100 * results["tasks"]["mmlu"]["metrics"]["acc"]["value"]
    mmlu_row = re.search(r"<tr><td><b>MMLU</b></td>.*?</tr>", page, re.S).group(0)
    assert "45.3" in mmlu_row and f"<b>{acc:.1f}</b>" in mmlu_row
    math_row = re.search(r"<tr><td><b>Math</b></td>.*?</tr>", page, re.S).group(0)
    assert "14.6" in math_row and "rule: 8.55" in math_row and "partial (1 of 2: GSM8K)" in math_row
    assert re.search(r'id="f-count"[^>]*>\d+ of \d+ shown<', page)

    wrong_only = _browser(url + "#wrong", "--dump-dom").stdout  # the page opens with the wrong-answer filter
    articles = re.findall(r"<article [^>]*>", wrong_only)
    assert articles and all(("hidden" in a) == ('data-wrong="0"' in a) for a in articles)

    shot = tmp_path / "report.png"
    taken = _browser(url, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


# --- malformed runs and hostile text ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "change", "word"), [
    ("results.json is a list", lambda f: write_results(f, []), "not an object"),
    ("value is NaN", lambda f: edit_results(f, lambda r: acc(r).update(value=float("nan"))), "NaN"),
    ("value missing", lambda f: edit_results(f, lambda r: acc(r).pop("value")), "has no value"),
    ("value is text", lambda f: edit_results(f, lambda r: acc(r).update(value="0.3")), "not a number"),
    ("results.json not UTF-8", lambda f: (f / "results.json").write_bytes(b'{"\xff": 1}'), "UTF-8"),
    ("sample without prompt_hash", lambda f: edit_first_sample(f, lambda s: s.pop("prompt_hash")), "prompt_hash"),
    ("samples from another run", lambda f: seal(f, "f" * 64), "come from different runs"),
])
def test_malformed_run_is_exit_2_in_one_line(tmp_path, capsys, name, change, word):
    folder = copy_golden(tmp_path / "run")
    change(folder)
    for fmt in ("md", "html"):
        assert report_main(["report", str(folder), "--format", fmt]) == 2, name
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and word in captured.err, captured.err


def test_unwritable_output_is_exit_2(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    assert report_main(["report", str(GOLDEN), "--output", str(tmp_path / "a-file" / "report.md")]) == 2
    assert "--output" in capsys.readouterr().err


def test_markdown_escapes_html_from_runs(tmp_path):
    """GitHub renders raw HTML in Markdown: every text that comes from a run is shown as text."""
    from evalharness.tasks.toxigen import GROUPS

    img = '<img src=x onerror="alert(1)">'
    groups = {g.key: {"toxic": metric(0.20, 50)} for g in GROUPS} | {"<b>bold</b>": {"toxic": metric(0.2, 50)}}
    run = fake_run(tmp_path / "hostile", {
        "toxigen": (0, {"toxic_mean_of_groups": metric(0.2, 650)}, groups, {},
                    {"approximate": True, "classifier": {"name": f"<script>{PAYLOAD}</script>"}}),
        "gsm8k": (8, {"exact_match_strict": metric(0.146, 1319)}, {}, {}, {}),
    }, ["toxigen", "gsm8k"], model=img)
    (run / "samples.jsonl").write_text(json.dumps({
        "task": "gsm8k", "subtask": "gsm8k", "doc_id": 0, "prompt_hash": "0" * 64, "output": PAYLOAD,
        "prediction": img, "gold": "1", "metrics": {"exact_match_strict": 0.0}}) + "\n", "utf-8")
    markdown = render_markdown(build_report([run], card_model="llama-2-7b"))
    assert "<script" not in markdown and "<img" not in markdown and "<b>" not in markdown
    assert "&lt;img src=x onerror=\"alert(1)\"&gt;" in markdown  # the column label, readable as text
    assert "classifier=&lt;script&gt;" in markdown and "| &lt;b&gt;bold&lt;/b&gt; |" in markdown
    assert "<sup>1</sup>" in markdown  # the template's own markup stays
    html = render_html(build_report([run], card_model="llama-2-7b"))
    assert "&lt;script&gt;document.title" in html and html.count("<script") == 1


def test_quac_note_is_for_users():
    html = render_html(build_report([GOLDEN], card_model="llama-2-7b"))
    assert "no local copy; loads from the hub" in html and "../shared" not in html


def test_sample_browser_uses_the_direction_in_results_json(tmp_path):
    """A metric marked higher_is_better false counts a document as wrong when its score is above 0."""
    folder = copy_golden(tmp_path / "run")
    edit_results(folder, lambda r: acc(r).update(higher_is_better=False))
    picked, _ = samples(build_report([folder]), per_task=500)
    assert picked and all(s["wrong"] == (s["score"] > 0) for s in picked)
    normal, _ = samples(build_report([GOLDEN]), per_task=500)
    assert all(s["wrong"] == (s["score"] < 1) for s in normal)
