"""HumanEval, MBPP and the code sandbox: hostile programs, real solutions, pass@k, prompts, CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from evalharness.core.errors import EvalHarnessError
from evalharness.core.prompt_render import PromptRenderer
from evalharness.core.requests import GenerateResponse
from evalharness.core.task import Doc, Outcome, TaskContext
from evalharness.core.task_selection import resolve
from evalharness.data.source import DataSource
from evalharness.scoring.code_sandbox import Execution, Limits, Sandbox
from evalharness.shapes.short_answer import pass_at_k
from tests.conftest import DATA, REPO, TINY_LLAMA, run_cli

FAST = Limits(timeout_s=3, cpu_s=2)
CONTEXT = TaskContext(device="cpu", dtype="float32", batch_size=1, seed=0, data_dir=str(DATA))
SANDBOX_UIDS = 1_000_000_000  # as root, every program runs under a fresh uid at or above this


def live_sandbox_processes() -> list[str]:
    """Processes (not zombies) still running under a sandbox uid."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":", 1) for line in Path(entry.path, "status").read_text().splitlines() if ":" in line
            )
        except OSError:
            continue
        if int(status["Uid"].split()[0]) >= SANDBOX_UIDS and not status["State"].strip().startswith("Z"):
            found.append(f"{entry.name} {status['Name'].strip()}")
    return found


# -- the sandbox against hostile programs: all in one batch, each judged on its own ---------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    parent = tmp_path_factory.mktemp("parent")
    parent_canary = parent / "canary.txt"
    parent_canary.write_text("parent")
    home_canary = Path.home() / f".evalharness-canary-{uuid.uuid4().hex}"
    home_canary.write_text("home")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    programs = {
        "correct": "assert sum([1, 2, 3]) == 6\n",
        "infinite_loop": "while True:\n    pass\n",
        "allocate_10gb": "block = bytearray(10 * 1024**3)\nassert block\n",
        "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
        "delete_parent_dir": f"import os, shutil\nos.remove({str(parent_canary)!r})\nshutil.rmtree('..')\n",
        "delete_home": (
            "import os, shutil\n"
            f"os.remove({str(home_canary)!r})\n"
            "shutil.rmtree(os.path.expanduser('~'))\n"
            f"shutil.rmtree({str(Path.home())!r})\n"
        ),
        "read_project": f"print(open({str(REPO / 'README.md')!r}).read())\n",
        "loopback_socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
        "huge_file": "with open('huge.bin', 'wb') as f:\n    for _ in range(4096):\n        f.write(b'x' * 1024**2)\n",
    }
    before = sorted(p.name for p in parent.iterdir())
    started = time.monotonic()
    results = Sandbox("bwrap", FAST, workers=2).run_all(list(programs.values()))
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    stop.set()
    thread.join()
    server.close()
    yield {
        "results": dict(zip(programs, results, strict=True)), "elapsed": elapsed, "accepted": accepted,
        "parent_canary": parent_canary, "home_canary": home_canary,
        "parent_before": before, "parent_after": sorted(p.name for p in parent.iterdir()),
        "leftover": live_sandbox_processes(),
    }  # fmt: skip
    home_canary.unlink(missing_ok=True)


EXPECTED = {
    "infinite_loop": (None, ""),  # the wall-clock timeout or the CPU-seconds limit, whichever comes first
    "allocate_10gb": ("failed", "MemoryError"),
    "fork_bomb": (None, ""),  # hits the process limit (BlockingIOError) or the timeout
    "delete_parent_dir": ("failed", "FileNotFoundError"),
    "delete_home": ("failed", "FileNotFoundError"),
    "read_project": ("failed", "FileNotFoundError"),
    "loopback_socket": ("failed", "ConnectionRefusedError"),
    "huge_file": ("failed", ""),  # the file size limit or the full tmpfs
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_hostile_program_fails_on_its_own(hostile, case):
    result: Execution = hostile["results"][case]
    status, detail = EXPECTED[case]
    assert not result.passed
    if status:
        assert result.status == status, result
    assert detail in result.detail, result


def test_the_batch_goes_on_and_nothing_outside_changes(hostile):
    assert hostile["results"]["correct"] == Execution("passed")
    assert hostile["parent_canary"].read_text() == "parent"
    assert hostile["home_canary"].read_text() == "home"
    assert hostile["parent_before"] == hostile["parent_after"]
    assert hostile["accepted"] == []  # the loopback server never saw a connection
    assert hostile["leftover"] == []  # the fork bomb left nothing running
    assert hostile["elapsed"] < 20


def test_fork_bomb_hits_the_process_limit():
    program = "import os, time\nfor i in range(200):\n    if os.fork() == 0:\n        time.sleep(30)\n"
    (result,) = Sandbox("bwrap", FAST).run_all([program])
    assert result.status == "failed" and "BlockingIOError" in result.detail


def test_limits_only_still_limits_and_cleans_up():
    programs = [
        "while True:\n    pass\n",
        "block = bytearray(10 * 1024**3)\n",
        "import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)\n",  # exits 0, leaves a child
        "assert 2 + 2 == 4\n",
    ]
    loop, memory, background, correct = Sandbox("limits-only", FAST, workers=2).run_all(programs)
    assert not loop.passed and loop.status in ("timeout", "failed")  # wall clock or CPU seconds, whichever first
    assert memory.status == "failed" and "MemoryError" in memory.detail
    assert background.passed and correct.passed
    assert live_sandbox_processes() == []


def test_missing_bubblewrap_is_one_line_naming_the_package(tmp_path, monkeypatch):
    (tmp_path / "prlimit").symlink_to(shutil.which("prlimit"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EvalHarnessError) as error:
        Sandbox("bwrap").check()
    message = str(error.value)
    assert "\n" not in message and "apt-get install bubblewrap" in message and "sandbox=limits-only" in message
    assert Sandbox("limits-only").check().startswith("3.")


def test_cli_refuses_without_bubblewrap_before_loading_the_model(tmp_path):
    (tmp_path / "prlimit").symlink_to(shutil.which("prlimit"))
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "humaneval", "--limit", "1",
                   "--data-dir", str(DATA), "--no-cache", "--output", str(tmp_path / "out"),
                   env={"PATH": str(tmp_path)})  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bubblewrap" in lines[0], proc.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_limits_only_is_recorded_as_approximate_and_reported():
    from evalharness.reporting.report import approximation

    (selection,) = resolve(["humaneval"], {"sandbox": "limits-only", "samples": 4})
    entry = selection.task.config()
    assert entry["sandbox"] == "limits-only" and entry["approximate"] is True
    assert "sandbox=limits-only" in approximation(entry)
    (faithful,) = resolve(["humaneval"], {"samples": 4})
    assert faithful.task.config()["approximate"] is False


# -- real problems through the tasks ----------------------------------------------------------


def first_docs(name: str, n: int = 3) -> tuple[object, list[Doc]]:
    (selection,) = resolve([name])
    return selection.task, selection.task.documents(DataSource(str(DATA)), name)[:n]


def finalize(task, docs: list[Doc], completions: list[list[str]]) -> list[Outcome]:
    scored = []
    for doc, texts in zip(docs, completions, strict=True):
        responses = [GenerateResponse(t, 1, "stop") for t in texts]
        scored.append((doc, task.score(doc, responses)))
    return task.finalize(scored, CONTEXT).outcomes


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail():
    task, docs = first_docs("humaneval")
    right = finalize(task, docs, [[d.fields["canonical_solution"]] for d in docs])
    wrong = finalize(task, docs, [["    return None\n"] for _ in docs])
    assert [o.metrics["pass@1"] for o in right] == [1.0, 1.0, 1.0]
    assert [o.metrics["pass@1"] for o in wrong] == [0.0, 0.0, 0.0]
    assert wrong[0].extra["result"] == "failed" and "AssertionError" in wrong[0].extra["error"]


def test_humaneval_completion_is_cut_at_the_stop_sequences():
    task, (doc,) = first_docs("humaneval", 1)
    text = (
        doc.fields["canonical_solution"]
        + "\nprint(has_close_elements([], 1.0))\ndef helper():\n    raise SystemExit(1)\n"
    )
    (outcome,) = finalize(task, [doc], [[text]])
    assert outcome.prediction == doc.fields["canonical_solution"]
    assert outcome.metrics["pass@1"] == 1.0


def test_mbpp_reference_code_passes_and_wrong_code_fails():
    task, docs = first_docs("mbpp")
    right = finalize(task, docs, [["\n" + d.fields["code"] + "\n[DONE]"] for d in docs])
    wrong = finalize(task, docs, [["\ndef nothing():\n    pass\n"] for _ in docs])
    assert [o.metrics["pass@1"] for o in right] == [1.0, 1.0, 1.0]
    assert [o.metrics["pass@1"] for o in wrong] == [0.0, 0.0, 0.0]
    assert "NameError" in wrong[0].extra["error"]


def test_mbpp_runs_the_test_setup_code():
    task, docs = first_docs("mbpp", 500)
    (doc,) = [d for d in docs if d.fields["task_id"] == 367]
    assert doc.fields["test_setup_code"]
    (outcome,) = finalize(task, [doc], [[doc.fields["code"]]])
    assert outcome.metrics["pass@1"] == 1.0


# -- pass@k -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (5, 2, 1, 0.4),
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (3, 3, 2, 1.0),
        (10, 0, 5, 0.0),
        (200, 10, 100, 1 - math.comb(190, 100) / math.comb(200, 100)),
    ],
)
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_over_samples_per_problem():
    (selection,) = resolve(["humaneval"], {"samples": 4, "pass_at": 2})
    task = selection.task
    (doc,) = task.documents(DataSource(str(DATA)), "humaneval")[:1]
    wrong = "    return None\n"
    (outcome,) = finalize(task, [doc], [[doc.fields["canonical_solution"], wrong, wrong, wrong]])
    assert outcome.metrics == {"pass@2": 0.5}
    assert outcome.extra["passed"] == 1 and outcome.extra["result"] == ["passed", "failed", "failed", "failed"]


def test_decoding_follows_the_options():
    def sampling(**options: object):
        (selection,) = resolve(["mbpp"], options)
        return selection.task.sampling()

    assert sampling().greedy
    assert (sampling(samples=10).temperature, sampling(samples=10).top_p) == (0.1, 0.95)
    assert (sampling(samples=100, pass_at=80).temperature, sampling(samples=100, pass_at=80).top_p) == (0.8, 0.95)
    with pytest.raises(EvalHarnessError, match="pass_at=5 needs samples >= 5"):
        resolve(["mbpp"], {"samples": 2, "pass_at": 5})
    with pytest.raises(EvalHarnessError, match="sandbox"):
        resolve(["mbpp"], {"sandbox": "docker"})


def test_code_group_is_humaneval_and_mbpp():
    assert [s.task.name for s in resolve(["code"])] == ["humaneval", "mbpp"]


# -- prompts ----------------------------------------------------------------------------------


def first_prompt(name: str) -> str:
    (selection,) = resolve([name])
    task, data = selection.task, DataSource(str(DATA))
    doc = task.documents(data, name)[0]
    shots = task.select_fewshot(task.fewshot_pool(data, name), task.default_fewshot, doc, 1234)
    return PromptRenderer().build(task, doc, shots).text


def test_first_humaneval_prompt_is_exact():
    assert first_prompt("humaneval") == (
        "from typing import List\n\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        '    """ Check if in given list of numbers, are any two numbers closer to each other than\n'
        "    given threshold.\n"
        "    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n"
        "    False\n"
        "    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\n"
        "    True\n"
        '    """\n'
    )


def test_first_mbpp_prompt_is_exact():
    intro = "You are an expert Python programmer, and here is your task: "
    tail = " Your code should pass these tests:\n\n"
    assert first_prompt("mbpp") == (
        f"{intro}Write a function to find the similar elements from the given two tuple lists.{tail}"
        "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
        "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\n"
        "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)\n"
        "[BEGIN]\n"
        "def similar_elements(test_tup1, test_tup2):\r\n"
        "  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
        "  return (res) \n"
        "[DONE]\n\n"
        f"{intro}Write a python function to identify non-prime numbers.{tail}"
        "assert is_not_prime(2) == False\n"
        "assert is_not_prime(10) == True\n"
        "assert is_not_prime(35) == True\n"
        "[BEGIN]\n"
        "import math\r\n"
        "def is_not_prime(n):\r\n"
        "    result = False\r\n"
        "    for i in range(2,int(math.sqrt(n)) + 1):\r\n"
        "        if n % i == 0:\r\n"
        "            result = True\r\n"
        "    return result\n"
        "[DONE]\n\n"
        f"{intro}Write a function to find the largest integers from a given list of numbers using heap queue"
        f" algorithm.{tail}"
        "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] \n"
        "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] \n"
        "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]\n"
        "[BEGIN]\n"
        "import heapq as hq\r\n"
        "def heap_queue_largest(nums,n):\r\n"
        "  largest_nums = hq.nlargest(n, nums)\r\n"
        "  return largest_nums\n"
        "[DONE]\n\n"
        f"{intro}Write a python function to remove first and last occurrence of a given character from the"
        f" string.{tail}"
        'assert remove_Occ("hello","l") == "heo"\n'
        'assert remove_Occ("abcda","a") == "bcd"\n'
        'assert remove_Occ("PHP","P") == "H"\n'
        "[BEGIN]"
    )


# -- end to end -------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path):
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "humaneval,mbpp", "--limit", "3",
                   "--data-dir", str(DATA), "--device", "cpu", "--dtype", "float32", "--no-cache",
                   "--gen-kwargs", "max_new_tokens=8", "--output", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for name in ("humaneval", "mbpp"):
        entry = results["tasks"][name]
        assert entry["n"] == 3 and set(entry["metrics"]) == {"pass@1"}
        assert entry["sandbox"] == "bwrap" and entry["pass_at_protocol"] == "greedy"
        assert entry["approximate"] is True and "greedy" in entry["approximation"]
        assert entry["sandbox_details"]["interpreter_version"].startswith("3.")
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["task"] for s in samples] == ["humaneval"] * 3 + ["mbpp"] * 3
    assert all(s["result"] in ("passed", "failed", "timeout") for s in samples)
    assert samples[3]["fewshot_ids"] == [1, 2, 3]  # task ids 2, 3, 4 of the prompt split
