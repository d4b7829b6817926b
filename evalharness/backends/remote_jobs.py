"""What every remote backend (an OpenAI-compatible server, a managed endpoint) shares around HTTP.

Calls run on a thread pool (``concurrency`` in flight); each finished call is reported to the
response cache from the calling thread, so a killed run loses only the calls in flight. Stop
strings are cut client-side for servers that cannot stop on them, with the local backend's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from evalharness.backends.protocol import Resume
from evalharness.core.errors import EvalHarnessError
from evalharness.core.progress import progress_bar

T = TypeVar("T")
R = TypeVar("R")

def refuse_local_settings(options: Mapping[str, Any], owner: str, backend: str) -> None:
    """--device and --dtype belong to whoever serves the model (the CLI passes "auto" for them)."""
    for name in ("device", "dtype"):
        if str(options.get(name) or "auto") != "auto":
            raise EvalHarnessError(f"--{name} is the {owner}'s choice, not the {backend} backend's: leave it out")


Job = tuple[list[int], Callable[[], list[R]]]  # request indices, and the call answering them in order


def run_jobs(jobs: Sequence[Job[R]], resume: Resume[R], concurrency: int, desc: str) -> dict[int, R]:
    """Runs the jobs ``concurrency`` at a time; reports each finished job in this thread."""
    results: dict[int, R] = {}
    executor = ThreadPoolExecutor(concurrency, thread_name_prefix=desc)
    with progress_bar(total=sum(len(indices) for indices, _ in jobs), desc=desc, unit="req") as bar:
        pending: dict[Future[list[R]], list[int]] = {executor.submit(job): idx for idx, job in jobs}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    indices = pending.pop(future)
                    responses = future.result()
                    results.update(zip(indices, responses, strict=True))
                    resume.finished(indices, responses)
                    bar.update(len(indices))
        except BaseException:
            # An error or Ctrl-C: queued calls are dropped, calls in flight are not waited for.
            executor.shutdown(wait=False, cancel_futures=True)
            raise
    executor.shutdown()
    return results


def chunks(items: Sequence[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (which is dropped), and whether one was found:
    what the local backend returns when it stops on a stop string."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)
