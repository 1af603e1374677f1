"""A private PostgreSQL server for tests: Debian's ``postgresql`` binaries, a fresh
cluster in a temporary directory (``initdb``, trust authentication, a Unix
socket in that directory and a free TCP port on 127.0.0.1), run as the
``postgres`` user and stopped at the end."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def cannot_run() -> str | None:
    if _bindir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e .[test])"
    if os.geteuid() != 0:
        return "starting a private PostgreSQL server here needs root (to run it as the postgres user)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, root: Path | None = None, user: str = "postgres"):
        # the server runs as `user`, who must reach its directory: not under pytest's root-only tmp
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="rai-postgres-"))
        self.user = user
        self.data = self.root / "data"
        self.port = _free_port()
        self.bin = _bindir()

    def _as_user(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", self.user, "--", *cmd], capture_output=True, text=True,
                              check=check, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._as_user(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), name)
        return self.url(name)

    def start(self) -> "PostgresServer":
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, self.user, self.user)
        self._as_user(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
                      "--no-sync", "-E", "UTF8")
        self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                      "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._as_user(str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                             check=False).returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not start; see {self.root / 'server.log'}")

    def stop(self) -> None:
        self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
