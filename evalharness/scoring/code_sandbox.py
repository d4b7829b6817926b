"""The code sandbox: every candidate program runs in its own process and passes when it exits 0.

``bwrap`` (the default) runs each program inside bubblewrap: new user, network, PID, IPC, UTS
and cgroup namespaces (no network at all, not even the host's loopback), a root file system
holding only read-only binds of ``/usr`` (and the ``/lib*``, ``/bin`` links) and of the
interpreter's prefix, a fresh size-capped tmpfs as the working directory (``/sandbox``, the
program copied in) and another as ``/tmp``; nothing of the project, ``$HOME`` or the caches is
visible. ``--die-with-parent`` and ``--new-session`` keep it from outliving the run or reaching
the terminal. Resource limits are set with ``prlimit`` before bubblewrap starts, and inherited:
CPU seconds, address space, processes, file size, open files, no core dumps; a wall-clock
timeout kills the whole sandbox. Run as root, every program also gets its own fresh unprivileged
uid, so the process limit (which the kernel never applies to root) holds a fork bomb, and its
files belong to nobody else.

``limits-only`` (an explicit choice, recorded as approximate) runs the interpreter directly with
the same limits, in a fresh temporary directory, without isolation. As root it still runs under
a fresh uid (which cannot read root's files) and every process left under that uid is killed
afterwards; as another user a program can read and change whatever that user can.

A program that passes the tests exits 0; anything else (an exception, a failed assert, a limit,
the timeout) fails it, and the run goes on. A sandbox that cannot start at all is an error.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from evalharness.core.errors import EvalHarnessError
from evalharness.scoring.scorer import Judgement, Judgements

if TYPE_CHECKING:
    from evalharness.core.task import Doc, TaskContext

log = logging.getLogger(__name__)

MODES = ("bwrap", "limits-only")
MISSING = {
    "bwrap": "bubblewrap (bwrap): apt-get install bubblewrap",
    "prlimit": "prlimit (util-linux): apt-get install util-linux",
}
LIMITS_ONLY_HINT = "or pass --task-args sandbox=limits-only to run candidates with resource limits only (no isolation)"
SANDBOX_DIR = "/sandbox"
PROGRAM = "program.py"
TAIL_BYTES = 4096
SIGNALS: dict[int, str] = {
    signal.SIGXCPU: "CPU time limit",
    signal.SIGXFSZ: "file size limit",
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
}


@dataclass(frozen=True)
class Limits:
    """Per program. ``processes`` counts every task of the program's uid (bubblewrap's own two
    included); ``scratch_bytes`` caps each tmpfs (the working directory and /tmp)."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 2 * 1024**3
    processes: int = 32
    file_bytes: int = 16 * 1024**2
    open_files: int = 256
    scratch_bytes: int = 64 * 1024**2


@dataclass(frozen=True)
class Execution:
    status: str  # "passed", "failed" or "timeout"
    detail: str = ""  # why it failed: the last line of stderr, the limit or signal

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _world_readable(path: Path) -> bool:
    """Whether another uid can reach ``path``: every ancestor searchable, the path readable."""
    try:
        for part in [path, *path.parents]:
            mode = part.stat().st_mode
            if not mode & stat.S_IXOTH or (part == path and not mode & stat.S_IROTH):
                return False
    except OSError:
        return False
    return True


def _tail(handle: IO[bytes]) -> str:
    handle.seek(0, os.SEEK_END)
    handle.seek(max(0, handle.tell() - TAIL_BYTES))
    return handle.read().decode("utf-8", "replace")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _tasks_of(uid: int) -> int:
    """Processes and threads now running under ``uid`` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


class Sandbox:
    """Runs programs, each in its own sandboxed process, several at a time."""

    def __init__(self, mode: str = "bwrap", limits: Limits | None = None, workers: int = 0) -> None:
        if mode not in MODES:
            raise EvalHarnessError(f"sandbox={mode!r}: choose one of {', '.join(MODES)}")
        self.mode = mode
        self.limits = limits or Limits()
        self.workers = workers or max(1, min(8, os.cpu_count() or 1))
        self.as_root = os.geteuid() == 0
        self.python, self.prefix = self._interpreter()
        self._nproc_base = 0

    # -- setting up ------------------------------------------------------------------------

    def _interpreter(self) -> tuple[str, Path]:
        """This harness's own interpreter (its base, outside any virtual environment), or, when
        a fresh uid cannot read it (root's pyenv), the system's /usr/bin/python3."""
        own = Path(os.path.realpath(sys.executable))
        prefix = Path(sys.base_prefix)
        if not self.as_root or _world_readable(own):
            return str(own), prefix
        system = Path("/usr/bin/python3")
        if system.exists():
            return str(system), Path("/usr")
        return str(own), prefix  # check() will say why it cannot run

    def _binds(self) -> list[str]:
        args = ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = Path("/", name)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        if not (self.prefix == Path("/usr") or Path("/usr") in self.prefix.parents):
            args += ["--ro-bind", str(self.prefix), str(self.prefix)]
        return args

    def _prlimit(self) -> list[str]:
        lim = self.limits
        nproc = lim.processes + self._nproc_base
        return [
            "prlimit", f"--cpu={lim.cpu_s}", f"--as={lim.memory_bytes}", f"--nproc={nproc}",
            f"--fsize={lim.file_bytes}", f"--nofile={lim.open_files}", "--core=0", "--",
        ]  # fmt: skip

    def _bwrap(self, program_fd: int, status_fd: int, argv: Sequence[str]) -> list[str]:
        size = str(self.limits.scratch_bytes)
        return [
            "bwrap", "--unshare-user", "--unshare-all", "--disable-userns", "--die-with-parent", "--new-session",
            *self._binds(), "--proc", "/proc", "--dev", "/dev",
            "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", SANDBOX_DIR,
            "--file", str(program_fd), f"{SANDBOX_DIR}/{PROGRAM}", "--chdir", SANDBOX_DIR,
            "--clearenv", "--setenv", "HOME", SANDBOX_DIR, "--setenv", "TMPDIR", "/tmp",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
            "--json-status-fd", str(status_fd), "--", *argv,
        ]  # fmt: skip

    def check(self) -> str:
        """Fails with one line when the sandbox cannot run a program; returns the interpreter's
        version (as the sandbox sees it)."""
        needed = ["prlimit"] + (["bwrap"] if self.mode == "bwrap" else [])
        for tool in needed:
            if shutil.which(tool) is None:
                hint = f"; {LIMITS_ONLY_HINT}" if tool == "bwrap" else ""
                raise EvalHarnessError(f"the code sandbox needs {MISSING[tool]}{hint}")
        if self.mode == "bwrap":  # bubblewrap itself, with nothing but `true` inside
            result = self._execute("", argv=["true"])
            if not result.passed:
                raise EvalHarnessError(f"bubblewrap cannot start a sandbox here ({result.detail}); {LIMITS_ONLY_HINT}")
        probe = self._execute("import sys; sys.stdout.write(sys.version.split()[0])", capture=True)
        if not probe.passed:
            raise EvalHarnessError(f"the code sandbox cannot run {self.python} ({probe.detail}); {LIMITS_ONLY_HINT}")
        return probe.detail

    # -- running ---------------------------------------------------------------------------

    def run_all(self, programs: Sequence[str]) -> list[Execution]:
        """Every program in its own sandbox, ``workers`` at a time; results in order."""
        if not self.as_root:
            # Without a uid of its own, RLIMIT_NPROC counts all of this user's tasks.
            self._nproc_base = _tasks_of(os.getuid()) + self.workers * self.limits.processes
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sandbox") as pool:
            return list(pool.map(self.run, programs))

    def run(self, program: str) -> Execution:
        result = self._execute(program)
        if result.status == "error":  # the sandbox did not start: once more, then give up
            result = self._execute(program)
            if result.status == "error":
                raise EvalHarnessError(f"the code sandbox failed to start a program: {result.detail}")
        return result

    def _execute(self, program: str, argv: Sequence[str] | None = None, capture: bool = False) -> Execution:
        uid = 1_000_000_000 + secrets.randbelow(1_000_000_000) if self.as_root else None
        workdir = None
        with (
            tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as status,
            tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err,
        ):  # fmt: skip
            source.write(program.encode())
            source.flush()
            source.seek(0)
            interpreter = [self.python, "-I", "-B", PROGRAM]
            if self.mode == "bwrap":
                command = self._prlimit() + self._bwrap(source.fileno(), status.fileno(), argv or interpreter)
                cwd: str | None = None
                fds: tuple[int, ...] = (source.fileno(), status.fileno())
            else:
                workdir = tempfile.mkdtemp(prefix="evalharness-sandbox-")
                Path(workdir, PROGRAM).write_text(program)
                if uid is not None:
                    for path in (workdir, os.path.join(workdir, PROGRAM)):
                        os.chown(path, uid, uid)
                command = self._prlimit() + list(argv or interpreter)
                cwd, fds = workdir, ()
            env = {"HOME": cwd or SANDBOX_DIR, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
            try:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
                    pass_fds=fds, start_new_session=True,
                    user=uid, group=uid, extra_groups=[] if uid is not None else None,
                )  # fmt: skip
                timed_out = False
                try:
                    code = process.wait(timeout=self.limits.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(process.pid)
                    code = process.wait()
                if self.mode == "limits-only" and uid is not None:
                    _kill_uid(uid, self.python)  # whatever the program left behind, in whatever session
            finally:
                if workdir is not None:
                    shutil.rmtree(workdir, ignore_errors=True)
            stderr = _tail(err)
            if timed_out:
                return Execution("timeout", f"wall-clock timeout ({self.limits.timeout_s:g} s)")
            if self.mode == "bwrap":
                status.seek(0)
                reports = [json.loads(line) for line in status.read().decode().splitlines() if line.strip()]
                exits = [r["exit-code"] for r in reports if "exit-code" in r]
                if not exits:
                    return Execution("error", _last_line(stderr) or f"bwrap exited with {code}")
                code = exits[-1]
            if code == 0:
                return Execution("passed", _tail(out) if capture else "")
            return Execution("failed", _failure(code, stderr))


def _failure(code: int, stderr: str) -> str:
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        reason = SIGNALS.get(signum, "")
        return f"{name}{f' ({reason})' if reason else ''}" + (f": {_last_line(stderr)}" if stderr.strip() else "")
    return _last_line(stderr) or f"exit status {code}"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int, python: str) -> None:
    """Kill every process of ``uid`` (kill(-1) as that uid reaches exactly those)."""
    subprocess.run(
        [python, "-I", "-S", "-c", "import os, signal\ntry: os.kill(-1, signal.SIGKILL)\nexcept OSError: pass"],
        user=uid, group=uid, extra_groups=[], stdin=subprocess.DEVNULL, capture_output=True, check=False,
        timeout=30,
    )  # fmt: skip


class SandboxScorer:
    """The Scorer for code: each answer is a whole program (solution + tests); passed = exit 0."""

    def __init__(self, mode: str = "bwrap", limits: Limits | None = None, workers: int = 0) -> None:
        self.sandbox = Sandbox(mode, limits, workers)

    def check(self) -> None:
        self.sandbox.check()

    def describe(self) -> dict[str, Any]:
        mode = self.sandbox.mode
        details = {
            "mode": mode,
            "isolation": (
                "bubblewrap: no network, read-only /usr and interpreter prefix, tmpfs working directory"
                if mode == "bwrap" else "none: resource limits only"
            ),
            "fresh_uid_per_program": self.sandbox.as_root,
            "interpreter": self.sandbox.python,
            "workers": self.sandbox.workers,
            "limits": asdict(self.sandbox.limits),
        }  # fmt: skip
        approximate = mode == "limits-only"
        return {
            "sandbox": mode,
            "sandbox_details": details,
            "approximate": approximate,
            **({"approximation": "sandbox=limits-only (no isolation)"} if approximate else {}),
        }

    def judge(self, docs: Sequence[Doc], answers: Sequence[str], context: TaskContext) -> Judgements:
        version = self.sandbox.check()
        log.info("code sandbox (%s): %d programs, %d at a time", self.sandbox.mode, len(answers), self.sandbox.workers)
        runs = self.sandbox.run_all(list(answers))
        items = [
            Judgement(
                {"passed": float(r.passed)},
                details={"result": r.status, "error": r.detail} if not r.passed else {"result": r.status},
            )
            for r in runs
        ]
        description = self.describe()
        description["sandbox_details"] = {**description["sandbox_details"], "interpreter_version": version}
        return Judgements(items, description)
