"""The process a ``python`` grader's code runs in (``python -I sandbox_child.py``): standard
library only, so nothing of afinar (nor torch) is loaded beside the user's code.

Protocol, one JSON object a line: the parent sends the set-up (``source``, limits, how to cut
the network), the child answers ``{"ready": true, "isolation": ...}`` (or ``{"ready": false,
"error": ...}`` when the code does not run), then for each ``{"sample", "item"}`` line one
``{"score": float}`` or ``{"error": "TypeError: ..."}``. Results go to a copy of the original
stdout; the user's ``print`` goes to stderr.

Order of the set-up: the network first (a new, empty network namespace: ``unshare
(CLONE_NEWNET)``, as root, or inside a new user namespace; where neither is allowed, an audit
hook that refuses socket connects, binds, sends, name look-ups and new processes), then the
resource limits (address space, CPU seconds, file size, no core files), then the user's code.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import resource
import sys
import traceback

_BLOCKED = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
            "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
            "socket.getnameinfo", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
            "os.spawn", "os.fork", "os.forkpty", "pty.spawn")


def _audit(event: str, _args) -> None:
    if event in _BLOCKED:
        raise PermissionError(f"the grader sandbox has no network ({event} refused)")


CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000  # <sched.h>


def _unshare(flags: int) -> None:
    """``os.unshare`` (Python 3.12+), else libc's ``unshare`` through ctypes."""
    if hasattr(os, "unshare"):
        os.unshare(flags)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def cut_network(mode: str) -> str:
    if mode != "audit_hook":
        for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
            try:
                _unshare(flags)
                return "namespace"
            except (AttributeError, OSError):
                continue
    sys.addaudithook(_audit)
    return "audit_hook"


def set_limits(memory_bytes: int, cpu_seconds: int, file_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _error(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = next((f" (line {f.lineno})" for f in reversed(tb) if f.filename == "<grader>"), "")
    return f"{type(e).__name__}: {e}{where}"[:2000]


def main() -> None:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the user's prints go to stderr
    sys.stdout = sys.stderr

    def send(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    setup = json.loads(sys.stdin.readline())
    isolation = cut_network(setup["network"])
    set_limits(setup["memory_bytes"], setup["cpu_seconds"], setup["file_bytes"])
    env: dict = {"__name__": "grader", "__builtins__": __builtins__}
    try:
        exec(compile(setup["source"], "<grader>", "exec"), env)
        grade = env["grade"]
        if not callable(grade):
            raise TypeError("grade is not a function")
    except BaseException as e:  # noqa: BLE001  the user's code: anything may come
        send({"ready": False, "error": _error(e), "isolation": isolation})
        return
    send({"ready": True, "isolation": isolation})
    for line in sys.stdin:
        job = json.loads(line)
        try:
            value = grade(job["sample"], job["item"])
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"grade returned {type(value).__name__}, not a float")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"grade returned {value}")
            send({"score": value})
        except BaseException as e:  # noqa: BLE001
            send({"error": _error(e)})


if __name__ == "__main__":
    main()
