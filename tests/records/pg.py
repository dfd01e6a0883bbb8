"""A throwaway PostgreSQL cluster for the tests: initdb and pg_ctl from the
Debian package, in a temp dir, listening only on a Unix socket there.

PostgreSQL refuses to run as root: as root the cluster runs as the
``voxline-test`` system user (created here if missing, ``nobody`` if it cannot
be), through ``runuser``."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PgCluster", "find_bindir"]

USER = "voxline-test"
SUPERUSER = "voxline"


def find_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _run_as() -> tuple[list[str], str | None]:
    """The command prefix to run PostgreSQL's programs unprivileged, and that user."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam(USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/usr/sbin/nologin", USER], capture_output=True, text=True)
        if made.returncode not in (0, 9):  # 9: exists (made by a test running beside us)
            return ["runuser", "-u", "nobody", "--"], "nobody"
    return ["runuser", "-u", USER, "--"], USER


class PgCluster:
    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (part of scripts/test)")
        self.bin = bindir
        self.prefix, user = _run_as()
        # Short and under /tmp: a socket path is at most 107 bytes, and the
        # unprivileged user must be able to reach it (pytest's tmp is root's, 0700).
        self.dir = Path(tempfile.mkdtemp(prefix="vxpg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.log = self.dir / "log"
        if user is not None:
            shutil.chown(self.dir, user)
        os.chmod(self.dir, 0o755)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8",
                  "--locale=C", "--no-sync")
        self.running = False

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [*self.prefix, str(self.bin / tool), *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stdout}{out.stderr}\n{log[-3000:]}")
        return out

    def start(self) -> None:
        opts = f"-k {self.dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
            self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.dir}"

    def create_database(self, name: str) -> str:
        self._run("psql", "-h", str(self.dir), "-U", SUPERUSER, "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                  "-c", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
