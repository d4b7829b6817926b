"""Speed and agreement of evalharness against lm-evaluation-harness, on the same model, data and prompts.

    tox -e bench                    # the full comparison (roughly 2 hours on 2 cores); writes benchmarks/RESULTS.md
    tox -e bench -- --card-limit 0  # without the whole-card rows (roughly 50 minutes)
    tox -e bench -- --quick         # a smoke version in a few minutes; writes benchmarks/.cache/RESULTS-quick.md
    tox -e bench -- --check-prompts # both harnesses' requests compared, without a model (a few minutes)

Each harness runs in its own subprocess per row (task × model, or the whole-card rows); wall time,
CPU time and peak RSS are those of that process. The tasks are the table in ``specs.py``. Every
finished row is appended to ``.cache/results.jsonl``, keyed by its settings and the code revisions,
so an interrupted run resumes where it stopped (``--fresh`` reruns).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import compare
import harnesses
import lmeval_setup
import prompt_check
import report
import smollm2
import specs
from harnesses import Workload
from specs import Part

log = logging.getLogger("bench")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = ("smollm2", "tiny")
BENCH_VERSION = 4  # part of every stored row's key: bump when a row's content changes
CARD_SHARED = "card: shared tasks"  # the whole-card row, both harnesses on the tasks both have
CARD_FULL = "card: llama2_card (ours only)"


def _pairs(text: str, flag: str) -> dict[str, str]:
    """``a=1,b=2`` as a dict (a clear error for anything else)."""
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    if any(not sep or not key.strip() for key, sep, _ in pairs):
        raise SystemExit(f"bench.py: {flag} {text!r}: expected TASK=VALUE[,TASK=VALUE...]")
    return {key.strip(): value.strip() for key, _, value in pairs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    shared = Path(os.environ.get("EVALHARNESS_SHARED", REPO.parent / "shared"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, no batch-size search, no card row: a smoke run")
    p.add_argument("--fresh", action="store_true", help="rerun rows already in .cache/results.jsonl")
    p.add_argument("--check-prompts", action="store_true",
                   help="only compare both harnesses' requests for every row's documents, without a model (seconds)")  # fmt: skip
    p.add_argument("--rerun-disturbed", action="store_true", help="rerun stored rows that other processes' CPU use disturbed")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: smollm2, tiny")
    p.add_argument("--tasks", default=",".join(specs.DEFAULT_ROWS), help=f"comma-separated, of: {', '.join(specs.BY_NAME)}")
    p.add_argument("--tiny-tasks", default=",".join(s.name for s in specs.SPECS if s.on_tiny),
                   help="the tasks also run on tiny-random-llama2 ('all': every task of --tasks)")  # fmt: skip
    p.add_argument("--mmlu-subjects", default=",".join(specs.MMLU_SUBJECTS), help="comma-separated MMLU subjects")
    p.add_argument("--subtasks", action="append", default=[], metavar="TASK=A,B",
                   help="a task's subtasks, e.g. bbh=navigate,web_of_lies (repeatable)")  # fmt: skip
    p.add_argument("--limit", type=int, help="MMLU questions per subject (default 20; same as --limits mmlu=N)")
    p.add_argument("--limits", default="", metavar="TASK=N,...",
                   help="documents per subtask, e.g. hellaswag=200,bbh=10 (defaults: "
                        + ", ".join(f"{s.name} {s.limit}" for s in specs.SPECS) + ")")  # fmt: skip
    p.add_argument("--card-limit", type=int, help="documents per subtask in the whole-card row (default 10; 0: no card row;"
                                                  " --quick: 0 unless given)")  # fmt: skip
    p.add_argument("--card-models", default="smollm2", help="the models the whole-card row runs on")
    p.add_argument("--card-tasks", default=",".join(s.name for s in specs.SPECS if s.in_card),
                   help="the card tasks both harnesses run in the card row (all their subtasks)")  # fmt: skip
    p.add_argument("--card-full", default="llama2_card", help="our --tasks for the ours-only card line ('': none)")
    p.add_argument("--card-task-args", default="judge=similarity,classifier=hatesonar-onnx",
                   help="our --task-args for that line (offline TruthfulQA judge and ToxiGen classifier)")  # fmt: skip
    p.add_argument("--ours-batch-size", type=lambda v: v if v == "default" else int(v), default=8,
                   help="our --batch-size, or 'default' (none given: scoring 8, generation's decode batch from memory)")
    p.add_argument("--lm-eval-batch-size", type=int, help="skip the search and use this batch size")
    p.add_argument("--search-batch-sizes", default="1,8,32", help="lm-eval batch sizes to try")
    p.add_argument("--search-questions", type=int, default=50, help="MMLU questions in the search slice")
    p.add_argument("--data-dir", type=Path, default=shared / "data")
    p.add_argument("--tiny-model", type=Path, default=shared / "models" / "tiny-random-llama2")
    p.add_argument("--cache-dir", type=Path, default=HERE / ".cache")
    p.add_argument("--results-md", type=Path, help="default: RESULTS.md here (--quick: in the cache)")
    args = p.parse_args(argv)
    for name in args.tasks.split(",") + args.card_tasks.split(","):
        specs.spec(name)  # an unknown name fails here, before anything runs
    args.subtask_lists = {"mmlu": tuple(args.mmlu_subjects.split(","))}
    for item in args.subtasks:
        name, sep, names = item.partition("=")
        if not sep or not specs.spec(name.strip()).subtasks or not names.strip():
            raise SystemExit(f"bench.py: --subtasks {item!r}: expected TASK=A,B with a task that has subtasks")
        args.subtask_lists[name.strip()] = tuple(n.strip() for n in names.split(","))
    for name, chosen in args.subtask_lists.items():
        if unknown := sorted(set(chosen) - set(all_subtasks(specs.spec(name)))):
            raise SystemExit(f"bench.py: {name} has no subtask {unknown[0]!r} (`evalharness tasks {name}` lists them)")
    args.limit_of = {s.name: s.limit for s in specs.SPECS} | ({"mmlu": args.limit} if args.limit else {})
    for name, value in _pairs(args.limits, "--limits").items():
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"bench.py: --limits {name}={value}: N must be a positive integer")
        args.limit_of[specs.spec(name).name] = int(value)
    if args.quick:
        args.subtask_lists["mmlu"] = args.subtask_lists["mmlu"][:2]
        args.limit_of = {name: min(n, specs.spec(name).quick_limit) for name, n in args.limit_of.items()}
        args.lm_eval_batch_size = args.lm_eval_batch_size or 8
    if args.card_limit is None:
        args.card_limit = 0 if args.quick else 10
    if args.results_md is None:
        args.results_md = args.cache_dir / "RESULTS-quick.md" if args.quick else HERE / "RESULTS.md"
    return args


def code_revision() -> str:
    """HEAD of this repository, plus a hash of any uncommitted change to the harness (read-only git)."""

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True, check=True).stdout

    try:
        head = git("rev-parse", "--short=12", "HEAD").strip()
        diff = git("diff", "HEAD", "--", "evalharness", "tasks", "prompts", "pyproject.toml")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (f"+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:10]}" if diff else "")


class ResultStore:
    """Rows as JSON lines, each with the key it was computed for; the last row per key wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text("utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.rows[self.id(entry["key"])] = entry

    @staticmethod
    def id(key: dict[str, Any]) -> str:
        return json.dumps(key, sort_keys=True)

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.rows.get(self.id(key))

    def add(self, key: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        entry = {"key": key, **row}
        self.rows[self.id(key)] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        return entry


def search_batch_size(args: argparse.Namespace, model: Path, store: ResultStore, include: Path) -> dict[str, Any]:
    """lm-eval's fastest batch size (process wall time) on an MMLU slice of ``--search-questions``."""
    subjects = list(args.subtask_lists["mmlu"])
    per_subject = max(1, args.search_questions // len(subjects))
    sizes = [int(b) for b in args.search_batch_sizes.split(",")]
    key = {"kind": "lm_eval_batch_search", "model": model.name, "subjects": subjects, "limit": per_subject,
           "batch_sizes": sizes, "lm_eval": report.machine()["versions"]["lm_eval"]}  # fmt: skip
    if (found := store.get(key)) and not args.fresh and not (args.rerun_disturbed and _search_disturbed(found)):
        log.info("lm-eval batch size %s from an earlier search", found["winner"])
        return found
    walls: dict[str, float] = {}
    others: dict[str, float] = {}
    for size in sizes:
        w = Workload("mmlu", model, per_subject, (Part(specs.BY_NAME["mmlu"], tuple(subjects)),), args.ours_batch_size, size)
        name = f"search-lm-eval-bs{size}"
        out, log_file = args.cache_dir / "runs" / name, args.cache_dir / "logs" / f"{name}.log"
        measured = harnesses.run_lm_eval(w, include, _clean(out), log_file).measured
        walls[str(size)], others[str(size)] = measured.wall_s, measured.others_cpu_s
    winner = int(min(walls, key=walls.__getitem__))
    log.info("lm-eval batch size search: %s -> %d wins", walls, winner)
    row = {"winner": winner, "wall_s": walls, "others_cpu_s": others, "questions": per_subject * len(subjects)}
    return store.add(key, row)


def _search_disturbed(search: dict[str, Any]) -> bool:
    return any(search["others_cpu_s"].get(size, 0.0) > 0.1 * wall for size, wall in search["wall_s"].items())


def _clean(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def run_row(w: Workload, args: argparse.Namespace, include: Path, model_name: str, available: set[str]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    slug = re.sub(r"[^\w.]+", "-", w.name).strip("-")  # "card: shared tasks" -> card-shared-tasks
    name = f"{slug}-{model_name}"
    run_dir, logs = args.cache_dir / "runs" / name, args.cache_dir / "logs"
    ours = harnesses.run_ours(w, args.data_dir, _clean(run_dir / "ours"), logs / f"{name}-ours.log", available)
    theirs = None
    if not w.ours_only:
        theirs = harnesses.run_lm_eval(w, include, _clean(run_dir / "lm-eval"), logs / f"{name}-lm-eval.log")
    tokenizer = AutoTokenizer.from_pretrained(str(w.model))

    def side(run: harnesses.HarnessRun | None) -> dict[str, Any] | None:
        if run is None:
            return None
        m, docs = run.measured, run.docs.values()
        return {
            "wall_s": m.wall_s, "eval_s": run.eval_time_s, "cpu_s": m.cpu_s, "others_cpu_s": m.others_cpu_s,
            "peak_rss_mib": m.peak_rss_mib, "docs": run.documents, "qps": run.documents / m.wall_s,
            "tokens": compare.token_counts(compare.input_sequences(run.docs, tokenizer)) if docs else None,
            "score": sum(d.score for d in docs) / len(docs) if docs else None,
        }  # fmt: skip

    return {
        "task": w.name, "model": model_name, "docs": (theirs or ours).documents if (theirs or ours) else 0,
        "parameters": compare.parameter_count(w.model), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": {"limit": w.limit, "subtasks": {p.spec.name: list(p.subtasks) for p in w.parts},
                     "our_tasks": w.our_task_list, "ours_batch_size": w.ours_batch_size,
                     "lm_eval_batch_size": None if w.ours_only else w.lm_eval_batch_size},
        "lm_eval": side(theirs), "ours": side(ours),
        "agreement": compare.agreement(ours.docs, theirs.docs) if ours and theirs else None,
    }  # fmt: skip


def row_key(w: Workload, model_name: str, revision: str, lm_eval_version: str) -> dict[str, Any]:
    """What a stored row was computed for: sizes, batch sizes and the code of both harnesses."""
    return {
        "kind": "row", "bench": BENCH_VERSION, "task": w.name, "model": model_name, "limit": w.limit,
        "parts": [[p.spec.name, list(p.subtasks)] for p in w.parts], "our_tasks": list(w.our_tasks),
        "task_args": w.task_args, "ours_batch_size": w.ours_batch_size,
        "lm_eval_batch_size": w.lm_eval_batch_size, "evalharness": revision, "lm_eval": lm_eval_version,
    }  # fmt: skip


def all_subtasks(spec: specs.TaskSpec) -> tuple[str, ...]:
    """Every subtask of one of our tasks (all 57 MMLU subjects), from our registry."""
    from evalharness.core.task_selection import resolve

    if not spec.subtasks:
        return ()
    (selection,) = resolve([spec.name])
    return tuple(s.removeprefix(spec.our_prefix) for s in selection.subtasks)


def task_part(args: argparse.Namespace, task: str) -> Part:
    spec = specs.spec(task)
    return Part(spec, args.subtask_lists.get(task, spec.subtasks))


def card_parts(args: argparse.Namespace) -> tuple[Part, ...]:
    return tuple(Part(spec, all_subtasks(spec)) for spec in map(specs.spec, args.card_tasks.split(",")))


def workloads(args: argparse.Namespace, models: dict[str, Path], lm_bs: int) -> list[tuple[str, Workload]]:
    """Every row to run, in order: the task rows per model, then the whole-card rows."""
    rows = []
    for model_name, model in models.items():
        tasks = args.tasks.split(",")
        if model_name == "tiny" and args.tiny_tasks != "all":
            tasks = [t for t in tasks if t in args.tiny_tasks.split(",")]
        for task in tasks:
            w = Workload(task, model, args.limit_of[task], (task_part(args, task),), args.ours_batch_size, lm_bs)
            rows.append((model_name, w))
    if args.card_limit > 0:
        card = card_parts(args)
        for model_name in args.card_models.split(","):
            model = models[model_name]
            rows.append((model_name, Workload(CARD_SHARED, model, args.card_limit, card, args.ours_batch_size, lm_bs)))
            if args.card_full:
                full = Workload(CARD_FULL, model, args.card_limit, (), args.ours_batch_size, lm_bs,
                                tuple(args.card_full.split(",")), args.card_task_args)  # fmt: skip
                rows.append((model_name, full))
    return rows


def check_prompts(args: argparse.Namespace) -> int:
    """--check-prompts: every task's requests on both sides, compared without a model."""
    parts = [(t, task_part(args, t), args.limit_of[t]) for t in args.tasks.split(",")]
    if args.card_limit > 0:
        parts += [(f"{CARD_SHARED}: {p.spec.name}", p, args.card_limit) for p in card_parts(args)]
    include = lmeval_setup.render(args.cache_dir / "lm_eval_tasks", args.data_dir, [p for _, p, _ in parts])
    print(prompt_check.check(parts, include, args.data_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HOME", str(args.cache_dir / "hf"))  # lm-eval's datasets cache, kept here
    if args.check_prompts:
        return check_prompts(args)
    command = "python benchmarks/bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    info = report.machine()
    store = ResultStore(args.cache_dir / "results.jsonl")
    revision = info["revision"] = code_revision()
    available = harnesses.our_task_names()

    models: dict[str, Path] = {}
    for name in dict.fromkeys(args.models.split(",") + (args.card_models.split(",") if args.card_limit > 0 else [])):
        models[name] = smollm2.ensure_smollm2(args.cache_dir) if name == "smollm2" else args.tiny_model
    if (load := os.getloadavg()[0]) > 0.5:
        log.warning("load average %.2f: something else is running, timings may be disturbed", load)
    search = None
    lm_bs = args.lm_eval_batch_size or 0  # 0: found by the search below, before any row runs
    planned = workloads(args, models, lm_bs)
    parts = [p for _, w in planned for p in w.parts] + [Part(specs.BY_NAME["mmlu"], args.subtask_lists["mmlu"])]
    include = lmeval_setup.render(args.cache_dir / "lm_eval_tasks", args.data_dir, parts)
    peak_flops = report.measure_peak_flops()  # measured again at the end: the best of the two counts

    if not lm_bs:
        search = search_batch_size(args, models.get("smollm2", next(iter(models.values()))), store, include)
        lm_bs = int(search["winner"])
        log.info("lm-eval runs with --batch_size %d (fastest of %s)", lm_bs, args.search_batch_sizes)
        planned = workloads(args, models, lm_bs)

    rows = []
    for model_name, w in planned:
        key = row_key(w, model_name, revision, info["versions"]["lm_eval"])
        if (done := store.get(key)) and not args.fresh and not (args.rerun_disturbed and report.disturbed(done)):
            log.info("%s on %s: already in %s (use --fresh to rerun)", w.name, model_name, store.path)
            rows.append(done)
            continue
        log.info("%s on %s: %d documents per subtask", w.name, model_name, w.limit)
        rows.append(store.add(key, run_row(w, args, include, model_name, available)))

    peak_flops = max(peak_flops, report.measure_peak_flops())
    print()
    print(report.speed_table(rows, peak_flops))
    print(report.agreement_table(rows))
    if search:
        print(f"lm-eval batch size: {search['winner']} (process wall time per batch size: {search['wall_s']})")
    text = report.results_markdown(rows, info, peak_flops, search, command)
    report.write_atomic(args.results_md, text)
    log.info("wrote %s", args.results_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
