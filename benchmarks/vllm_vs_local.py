"""Throughput and agreement: the local transformers backend vs a vLLM server, same model and slice.

    .tox/py/bin/python benchmarks/vllm_vs_local.py [--mmlu-limit 5] [--gsm8k-limit 2] [--max-new-tokens 64]

SmolLM2-135M-Instruct (float32 folder from tests/vllm_server.py), MMLU 5-shot on a few subjects and
GSM8K 8-shot with a short generation budget. Each side runs through ``evaluate`` without the response
cache; the vLLM server starts once (not timed) and serves both slices. Prints one markdown row per
slice: wall time each side, the ratio, identical predictions and the largest log-likelihood difference.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import vllm_server  # noqa: E402
from tests.conftest import DATA  # noqa: E402

log = logging.getLogger("vllm_vs_local")


def timed(backend: Any, tasks: str, limit: int, gen_kwargs: dict[str, Any]) -> tuple[float, Any]:
    from evalharness import evaluate

    start = time.perf_counter()
    result = evaluate(backend, tasks, limit=limit, data_dir=str(DATA), cache_path=None, gen_kwargs=gen_kwargs)
    return time.perf_counter() - start, result


def agreement(a: Any, b: Any) -> tuple[int, int, float]:
    same, worst = 0, 0.0
    for x, y in zip(a.samples, b.samples, strict=True):
        same += x["prediction"] == y["prediction"]
        for u, v in zip(_values(x["output"]), _values(y["output"]), strict=False):
            worst = max(worst, abs(u - v))
    return same, len(a.samples), worst


def _values(output: Any) -> list[float]:
    items = output.values() if isinstance(output, dict) else output if isinstance(output, list) else []
    return [float(v) for v in items if isinstance(v, (int, float))]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mmlu-subjects", default="mmlu_anatomy,mmlu_virology,mmlu_astronomy")
    p.add_argument("--mmlu-limit", type=int, default=5)
    p.add_argument("--gsm8k-limit", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from evalharness.backends.hf import HFBackend
    from evalharness.backends.hf.loader import ModelConfig
    from evalharness.backends.openai_compat import OpenAIBackend

    model = vllm_server.ensure_model()
    server = vllm_server.Server(model, 8031)
    try:
        server.wait_ready()
        remote = OpenAIBackend("smollm2", server.url, tokenizer=str(model), concurrency=args.concurrency)
        local = HFBackend(ModelConfig(str(model), dtype="float32", device="cpu"), batch_size=8)
        rows = []
        for name, tasks, limit, gen in (
            (f"MMLU 5-shot, {args.mmlu_limit} q × {len(args.mmlu_subjects.split(','))} subjects",
             args.mmlu_subjects, args.mmlu_limit, {}),
            (f"GSM8K 8-shot, {args.gsm8k_limit} q, ≤{args.max_new_tokens} tokens", "gsm8k", args.gsm8k_limit,
             {"max_new_tokens": args.max_new_tokens}),
        ):  # fmt: skip
            t_local, r_local = timed(local, tasks, limit, gen)
            t_remote, r_remote = timed(remote, tasks, limit, gen)
            same, n, worst = agreement(r_remote, r_local)
            ratio = t_local / t_remote
            rows.append(f"| {name} | {t_local:.1f} s | {t_remote:.1f} s | {ratio:.2f}× | {same}/{n} | {worst:.1e} |")
        print("| slice (SmolLM2-135M, 2 CPU cores) | local hf | vLLM (1 replica) | local/vLLM | same prediction "
              "| max Δ log-lik |")
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
