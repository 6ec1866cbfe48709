"""A throwaway PostgreSQL server for the test session (Debian's ``postgresql`` package).

``initdb`` into a temporary folder and ``pg_ctl`` on a free local port, trust auth, run as the
``postgres`` user when the tests run as root (PostgreSQL refuses root). Each test that asks for
it gets a fresh, empty database. Where no server can be started, ``PgServer.start`` raises
``PgUnavailable`` with the reason, and the fixtures skip with it.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PgUnavailable(Exception):
    pass


def _bindir() -> Path | None:
    env = os.environ.get("AFINAR_TEST_PG_BINDIR")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self) -> None:
        self.folder: Path | None = None
        self.port = 0
        self._as: list[str] = []
        self._bindir: Path | None = None
        self._n = itertools.count(1)

    def _run(self, *argv: str, timeout: float = 60) -> None:
        cmd = [*self._as, *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise PgUnavailable(f"{' '.join(argv[:1])} failed: "
                                f"{(r.stderr or r.stdout).strip()[-300:]}")

    def start(self) -> PgServer:
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise PgUnavailable("psycopg is not installed (pip install 'psycopg[binary]')") from e
        self._bindir = _bindir()
        if self._bindir is None:
            raise PgUnavailable("no PostgreSQL binaries (initdb, pg_ctl); "
                                "apt-get install postgresql")
        self.folder = Path(tempfile.mkdtemp(prefix="afinar-pg-"))
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PgUnavailable("running as root and no runuser to drop to 'postgres'")
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError as e:
                raise PgUnavailable("running as root and there is no 'postgres' user") from e
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
            self._as = [runuser, "-u", "postgres", "--"]
        data, log = self.folder / "data", self.folder / "log"
        try:
            self._run(str(self._bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                      "postgres", "-E", "UTF8", "--no-locale", "--no-sync")
            self.port = _free_port()
            opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                    f"-c unix_socket_directories={self.folder} -c fsync=off "
                    f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            self._run(str(self._bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                      "-t", "30", "-o", opts, "start")
        except (PgUnavailable, OSError, subprocess.TimeoutExpired) as e:
            tail = log.read_text()[-300:] if log.is_file() else ""
            self.stop()
            raise PgUnavailable(f"{e} {tail}".strip()) from e
        return self

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._n)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        if self.folder is None:
            return
        if (self.folder / "data" / "postmaster.pid").exists() and self._bindir is not None:
            subprocess.run([*self._as, str(self._bindir / "pg_ctl"), "-D",
                            str(self.folder / "data"), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
