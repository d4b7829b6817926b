"""The machine's description and float32 peak, and the result tables (terminal and RESULTS.md)."""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NA_OURS = "n/a (task not implemented yet)"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    versions = {}
    for package in ("evalharness", "lm_eval", "torch", "transformers", "datasets"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "versions": versions,
    }


def measure_peak_flops(n: int = 2048, seconds: float = 3.0, windows: int = 6) -> float:
    """float32 matmul FLOP/s of this machine: torch.mm on n x n matrices for a few seconds.

    The best of several short windows, so a moment of outside load does not lower the peak.
    """
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):  # warm-up
        torch.mm(a, b)
    best = 0.0
    for _ in range(windows):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / windows:
            torch.mm(a, b)
            calls += 1
        best = max(best, 2 * n**3 * calls / elapsed)
    log.info("float32 matmul peak: %.1f GFLOP/s (%dx%d, %d threads)", best / 1e9, n, n, torch.get_num_threads())
    return best


def disturbed(row: dict[str, Any]) -> bool:
    """Whether other processes used more than 10% of a core while either harness of this row ran."""
    sides = [s for s in (row.get("ours"), row.get("lm_eval")) if s]
    return any(s.get("others_cpu_s", 0.0) > 0.1 * s["wall_s"] for s in sides)


def _f(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def peak_fraction(row: dict[str, Any], side: dict[str, Any] | None, peak_flops: float, tokens: str = "useful") -> float | None:
    """2 x parameters x tokens / wall time, as a share of the measured float32 matmul peak
    (None where the tokens are not known: the ours-only card line)."""
    if not side or not side.get("tokens"):
        return None
    return 2 * row["parameters"] * side["tokens"][tokens] / side["wall_s"] / peak_flops


def speed_table(rows: Sequence[dict[str, Any]], peak_flops: float) -> str:
    head = (
        "| task | model | docs | ours wall s | lm-eval wall s | lm-eval / ours | ours q/s | lm-eval q/s"
        " | ours peak RSS MiB | lm-eval peak RSS MiB | ours % of peak (useful FLOP/s)"
        " | lm-eval % of peak (useful FLOP/s) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        o, t = r.get("ours"), r.get("lm_eval") or {}
        if o is None:
            wall, ratio, qps, rss = NA_OURS, "–", "–", "–"
        else:
            wall, qps, rss = _f(o["wall_s"], ".1f"), _f(o["qps"], ".2f"), _f(o["peak_rss_mib"], ".0f")
            ratio = f"{t['wall_s'] / o['wall_s']:.2f}×" if t else "–"
        cells = [
            r["task"], r["model"], str(r["docs"]), wall, _f(t.get("wall_s"), ".1f"), ratio,
            qps, _f(t.get("qps"), ".2f"), rss, _f(t.get("peak_rss_mib"), ".0f"),
            _pct(peak_fraction(r, o, peak_flops)), _pct(peak_fraction(r, t, peak_flops)),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def agreement_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| task | model | docs compared | identical prompts | identical predictions (identical prompts) | max abs Δ log-lik"
        " (identical prompts) | identical greedy generations | score ours | score lm-eval |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        a = r.get("agreement")
        if a is None:
            t = r.get("lm_eval")
            if t is None:
                continue  # ours only: nothing to agree with
            cells = [r["task"], r["model"], NA_OURS, "–", "–", "–", "–", "–", _f(t.get("score"), ".3f")]
        else:
            ll = "–"
            if "max_abs_logprob_diff" in a:
                ll = f"{a['max_abs_logprob_diff']:.1e} ({a['max_abs_logprob_diff_same_prompt']:.1e})"
            gen = _pct(a["generations_identical"]) if "generations_identical" in a else "–"
            same = a.get("predictions_identical_same_prompt")  # absent from rows stored before it
            predictions = f"{_pct(a['predictions_identical'])} ({_pct(None if same is None or math.isnan(same) else same)})"
            cells = [
                r["task"], r["model"], str(a["n_compared"]), _pct(a["prompts_identical"]),
                predictions, ll, gen, f"{a['score_ours']:.3f}", f"{a['score_lm_eval']:.3f}",
            ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def work_table(rows: Sequence[dict[str, Any]], peak_flops: float) -> str:
    head = (
        "| task | model | parameters | useful tokens | tokens without prefix reuse | lm-eval % of peak at that count"
        " | ours eval s (self-reported) | lm-eval eval s (self-reported) | ours CPU s | lm-eval CPU s"
        " | other processes' CPU s during ours / lm-eval | settings |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        o, t, s = r.get("ours") or {}, r.get("lm_eval") or {}, r["settings"]
        tokens = t.get("tokens") or o.get("tokens") or {}
        settings = f"{s['limit']}/subtask, batch ours {s['ours_batch_size']}, lm-eval {_f(s['lm_eval_batch_size'], 'd')}"
        cells = [
            r["task"], r["model"], f"{r['parameters']:,}", _f(tokens.get("useful"), ","),
            _f(tokens.get("no_prefix_reuse"), ","), _pct(peak_fraction(r, t, peak_flops, "no_prefix_reuse")),
            _f(o.get("eval_s"), ".1f"),
            _f(t.get("eval_s"), ".1f"), _f(o.get("cpu_s"), ".0f"), _f(t.get("cpu_s"), ".0f"),
            f"{_f(o.get('others_cpu_s'), '.0f')} / {_f(t.get('others_cpu_s'), '.0f')}", settings,
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def results_markdown(
    rows: Sequence[dict[str, Any]],
    info: dict[str, Any],
    peak_flops: float,
    sweep: dict[str, Any] | None,
    command: str,
) -> str:
    v = info["versions"]
    parts = [
        "# Benchmark: evalharness vs lm-evaluation-harness\n",
        f"Latest run: `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}.\n",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM; both harnesses on the CPU"
        f" (float32, {info['torch_threads']} torch threads); Python {info['python']}.",
        f"- Versions: evalharness {v['evalharness']} (git {info['revision']}), lm-eval {v['lm_eval']},"
        f" torch {v['torch']}, transformers {v['transformers']}, datasets {v['datasets']}.",
        f"- float32 matmul peak measured in the same run (torch.mm 2048×2048, best 0.5 s window"
        " of six at the start and six at the end):"
        f" {peak_flops / 1e9:.1f} GFLOP/s.",
    ]
    if sweep:
        timings = ", ".join(f"{bs}: {s:.1f} s" for bs, s in sweep["wall_s"].items())
        parts.append(
            f"- lm-eval batch size: {sweep['winner']} won on a {sweep['questions']}-question MMLU slice"
            f" ({timings}; process wall time) and was used for every lm-eval row."
        )
    noisy = [f"{r['task']} / {r['model']}" for r in rows if disturbed(r)]
    if noisy:
        parts.append(
            f"- **Disturbed timings** (other processes used > 10% of a core meanwhile; see the work table):"
            f" {', '.join(noisy)}. Rerun with `--rerun-disturbed` on an idle machine."
        )
    parts += [
        "",
        "## Speed\n",
        "Wall time is the whole process (start-up, model load, data, evaluation); q/s = documents / wall time."
        " Peak RSS is the process's own maximum resident set (`os.wait4`). % of peak FLOP/s ="
        " 2 × parameters × *useful tokens* / wall time / the measured matmul peak. Neither harness reports the"
        " tokens it computes, so *useful tokens* is estimated from each harness's logged prompts and outputs:"
        " the distinct token positions over all the sequences the model must see (prompt + each scored"
        " continuation, prompt + generated text), i.e. every shared head (few-shot exemplars, the prompt"
        " before each choice) counted once — the least work any implementation can do. A harness that"
        " recomputes shared prefixes does more work than this and shows a lower share; see the work table"
        " for lm-eval's own count.\n",
        speed_table(rows, peak_flops),
        "## Agreement\n",
        "Documents are matched by (subtask, index in the source split). Predictions: for choice tasks the"
        " arg-max choice of the logged log-likelihoods (per character for HellaSwag and ARC, whose card metric"
        " is acc_norm); for generation tasks the answer each harness extracts (GSM8K strict match, BBH after"
        ' "the answer is", TriviaQA the first line), compared without surrounding space or a final full stop.'
        " WinoGrande's prompt is its two option contexts. Identical predictions are over every document and"
        " Δ log-lik over every (document, choice); in brackets only documents whose prompts are identical."
        " The card rows: *shared tasks* runs every llama2_card task that has an lm-eval template here"
        " (all subtasks) in one process per harness;"
        " *llama2_card (ours only)* is our whole card, which lm-eval cannot run on this data.\n",
        agreement_table(rows),
        "## Work and settings\n",
        "*Tokens without prefix reuse*: every distinct sequence in full (no padding) — what lm-eval's HF"
        " backend computes, since it merges only choices that differ in their last token (MMLU's one-token"
        " letters), so its own hardware utilisation is the next column. Our harness's own count depends on"
        " its prefix reuse and is not reported.\n",
        work_table(rows, peak_flops),
    ]
    notes: list[str] = []
    for r in rows:
        a = r.get("agreement")
        if a and a["notes"]:
            notes.append(f"- **{r['task']} / {r['model']}**")
            notes += [f"  - {note}" for note in a["notes"]]
    if notes:
        parts += ["## Disagreement examples (first few per row)\n", "\n".join(notes), ""]
    return "\n".join(parts) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)
