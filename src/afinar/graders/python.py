"""``python``: the user's ``grade(sample, item) -> float``, run in a separate process.

The process (``sandbox_child.py`` under ``python -I``, in a fresh temporary folder, with a bare
environment) has no network (a new network namespace, else an audit hook refusing sockets and new
processes), an address-space limit (``memory_bytes``, default 2 GiB as OpenAI's), a CPU-seconds
limit and a file-size limit set with ``resource.setrlimit``, and each call a wall-clock limit
(``time_s``, default 120 s as OpenAI's) after which the process is killed. ``grade_many`` runs
all its samples in one process (started again after a sample that killed it).

The source is checked when the grader is loaded: under 256 kB, Python that compiles, and a
top-level ``grade``. At grading time an exception, a value that is not a real number, a time or
memory limit scores 0 with ``python_grader_runtime_error`` (details in
``metadata["error_details"]``); a process that cannot be started is ``python_grader_server``.
``image_tag`` is accepted (OpenAI's field) and recorded; the code runs on this interpreter and its
installed packages.
"""

from __future__ import annotations

import ast
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from afinar.graders.base import GRADERS, GradeResult, Grader, GraderError, Spec, as_sample, flagged

MAX_SOURCE_BYTES = 256 * 1024
CHILD = Path(__file__).with_name("sandbox_child.py")
STARTUP_S = 30.0  # the interpreter's own start and the code's imports, on a busy machine


@dataclass(frozen=True)
class SandboxLimits:
    time_s: float = 120.0  # wall clock per sample
    memory_bytes: int = 2 << 30  # address space
    file_bytes: int = 1 << 30
    network: str = "auto"  # "auto": a network namespace where allowed; "audit_hook": force it


DEFAULT_LIMITS = SandboxLimits()


class PythonSpec(Spec):
    type: Literal["python"]
    source: str = Field(min_length=1)
    image_tag: str | None = Field(None, max_length=64)


def check_source(source: str) -> str | None:
    """Why ``source`` cannot be a grader, or None."""
    if len(source.encode("utf-8")) >= MAX_SOURCE_BYTES:
        return f"the source must be under {MAX_SOURCE_BYTES // 1024} kB"
    try:
        tree = ast.parse(source, "<grader>")
        compile(tree, "<grader>", "exec")
    except SyntaxError as e:
        return f"line {e.lineno}: {e.msg}"
    except ValueError as e:  # NUL bytes
        return str(e)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "grade":
            return None
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "grade" for t in targets):
                return None
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (a.asname or a.name) == "grade" for a in node.names):
            return None
    return "defines no top-level grade(sample, item) function"


class _Child:
    """One sandbox process; ``call`` sends a job and waits for its line until a deadline."""

    def __init__(self, source: str, limits: SandboxLimits, n_jobs: int):
        self.dir = tempfile.TemporaryDirectory(prefix="afinar-grader-")
        self.stderr = tempfile.TemporaryFile()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.dir.name,
               "TMPDIR": self.dir.name, "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(CHILD)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self.stderr, cwd=self.dir.name, env=env,
                start_new_session=True)
        except OSError as e:
            self.close()
            raise GraderError("python_grader_server", f"cannot start the sandbox: {e}") from None
        self.buf = b""
        cpu = int(limits.time_s * n_jobs + STARTUP_S) + 1
        self.hello = self._send_and_read(
            {"source": source, "memory_bytes": limits.memory_bytes, "cpu_seconds": cpu,
             "file_bytes": limits.file_bytes, "network": limits.network},
            STARTUP_S + limits.time_s)

    def _send_and_read(self, obj: dict[str, Any], timeout: float) -> dict[str, Any] | str:
        """The answer, or a string saying why none came (time limit, the process ended)."""
        try:
            self.proc.stdin.write((json.dumps(obj, default=str) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._ended()
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return f"time limit of {timeout:g} s exceeded"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return self._ended()
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, sample: dict[str, Any], item: dict[str, Any], timeout: float
             ) -> dict[str, Any] | str:
        return self._send_and_read({"sample": sample, "item": item}, timeout)

    def _ended(self) -> str:
        rc = self.proc.wait()
        why = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        if rc == -signal.SIGXCPU:
            why += " (CPU time limit)"
        tail = self.stderr_tail()
        return f"the grader process ended ({why})" + (f": {tail}" if tail else "")

    def stderr_tail(self, n: int = 400) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read().decode("utf-8", "replace").strip()[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.kill()
            proc.stdout.close()
        self.stderr.close()
        self.dir.cleanup()


@GRADERS.register("python")
class Python(Grader):
    type = "python"
    Spec = PythonSpec

    def __init__(self, spec, path, ctx):
        super().__init__(spec, path, ctx)
        if why := check_source(spec.source):
            raise self.bad("source", why)
        self.limits = DEFAULT_LIMITS

    def score(self, sample, item):
        return self._run([sample], [item])[0]

    def grade_many(self, samples, items):
        if len(samples) != len(items):
            return super().grade_many(samples, items)  # the one error for it
        samples = [as_sample(s) for s in samples]
        t0 = time.perf_counter()
        out = self._run(samples, [i or {} for i in items])
        each = (time.perf_counter() - t0) / max(1, len(out))
        return [self._finish(r, each) for r in out]

    def _run(self, samples: list[dict], items: list[dict]) -> list[GradeResult]:
        results: list[GradeResult] = []
        child: _Child | None = None
        try:
            for k, (sample, item) in enumerate(zip(samples, items)):
                if child is None:
                    try:
                        child = _Child(self.spec.source, self.limits, len(samples) - k)
                    except GraderError as e:
                        results += [flagged(e.kind, e.details) for _ in range(len(samples) - k)]
                        break
                    hello = child.hello
                    if not isinstance(hello, dict) or not hello.get("ready"):
                        # the code itself does not run: the same answer for every sample
                        why = hello.get("error") if isinstance(hello, dict) else hello
                        results += [flagged("python_grader_runtime", str(why))
                                    for _ in range(len(samples) - k)]
                        break
                answer = child.call(sample, item, self.limits.time_s)
                if isinstance(answer, str):  # killed or ended: a new process for the next
                    results.append(flagged("python_grader_runtime", answer))
                    child.close()
                    child = None
                elif "error" in answer:
                    results.append(flagged("python_grader_runtime", answer["error"]))
                else:
                    results.append(GradeResult(
                        float(answer["score"]),
                        metadata={"network_isolation": child.hello.get("isolation")}))
        finally:
            if child is not None:
                child.close()
        return results

