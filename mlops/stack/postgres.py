"""The production profile's own PostgreSQL server: Debian's `postgresql` binaries, a cluster the
project initialises in the state folder, bound to loopback, its password a generated secret.

    $MLOPS_HOME/postgres/data     the cluster (owned by the server's user, mode 700)
    $MLOPS_HOME/postgres_password the `mlops` role's password (mode 600, made on first use)

PostgreSQL refuses to run as root. Run by root (CI, a container), the cluster and the server belong
to a dedicated system user, `mlops-pg` (created once with `useradd --system`, no login shell, no
home); run by anyone else, they are that user's. The server listens on TCP only (no Unix socket, so
nothing collides with a system cluster in /var/run/postgresql) and takes password logins only
(scram-sha-256). It holds two databases, `prefect` and `mlflow`. Nothing here runs at import.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.core.settings import SERVER_FOLDER, TRAVERSE_ONLY
from mlops.stack.options import StackError, private_secret

PG_DIR = SERVER_FOLDER  # the state folder lets the server's user through to it (mlops.core.settings)
PASSWORD_FILE = "postgres_password"
ROLE = "mlops"
DATABASES = ("prefect", "mlflow")
SYSTEM_USER = "mlops-pg"
DEBIAN_BIN = Path("/usr/lib/postgresql")
INSTALL_HINT = "install it (Debian: apt-get install -y postgresql) or set MLOPS_PG_BIN to its bin folder"
# `postgres` settings for a small machine that several servers share; the user's own postgresql.conf
# (in the data folder) is read first, these win over it
SERVER_SETTINGS = {"max_connections": "200", "shared_buffers": "128MB", "logging_collector": "off",
                   "log_min_messages": "warning", "log_line_prefix": "%m [%p] "}


def find_bin_dir(environ: Mapping[str, str]) -> Path:
    """The folder with `initdb` and `postgres`: MLOPS_PG_BIN, else Debian's newest
    /usr/lib/postgresql/<version>/bin, else the PATH. Missing is one sentence naming the package."""
    given = environ.get("MLOPS_PG_BIN")
    candidates = [Path(given)] if given else []
    if not given and DEBIAN_BIN.is_dir():
        versions = sorted((p for p in DEBIAN_BIN.iterdir() if p.name.replace(".", "").isdigit()),
                          key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)], reverse=True)
        candidates += [v / "bin" for v in versions]
    if not given and (on_path := shutil.which("postgres")):
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    where = f"in MLOPS_PG_BIN={given}" if given else f"under {DEBIAN_BIN}/*/bin or on the PATH"
    raise StackError(f"PostgreSQL's server programs (initdb, postgres) were not found {where}; {INSTALL_HINT}")


def server_user() -> str | None:
    """The system user the server runs as when we are root (made once), None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        res = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                              "--shell", "/usr/sbin/nologin", SYSTEM_USER], capture_output=True, text=True)
        if res.returncode != 0 and "already exists" not in res.stderr:
            raise StackError(f"cannot create the system user {SYSTEM_USER} that runs PostgreSQL (postgres refuses "
                             f"to run as root): {res.stderr.strip() or res.returncode}") from None
    return SYSTEM_USER


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as `user` (nothing when None)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass(frozen=True)
class LocalPostgres:
    """The cluster in `state_dir`, served on `host:port`."""

    state_dir: Path
    port: int
    host: str = "127.0.0.1"
    environ: Mapping[str, str] | None = None

    @property
    def folder(self) -> Path:
        return self.state_dir / PG_DIR

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def password(self) -> str:
        return private_secret(self.state_dir / PASSWORD_FILE)

    def url(self, database: str, driver: str = "") -> str:
        """The connection URL of one database (`driver` e.g. `+asyncpg` for Prefect); holds the password."""
        return f"postgresql{driver}://{ROLE}:{self.password()}@{self.host}:{self.port}/{database}"

    def bin_dir(self) -> Path:
        return find_bin_dir(os.environ if self.environ is None else self.environ)

    def initialise(self) -> bool:
        """Create the cluster once (initdb as the server's user); False when it already exists."""
        user = server_user()
        if (self.data_dir / "PG_VERSION").is_file():
            self._own(user)
            self._let_through(user)
            return False
        initdb = self.bin_dir() / "initdb"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._own(user)
        self._let_through(user)
        self._reachable(user)
        pwfile = self.folder / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password() + "\n")
        if user is not None:
            shutil.chown(pwfile, user, user)
        try:
            res = subprocess.run([str(initdb), "-D", str(self.data_dir), "-U", ROLE, "--pwfile", str(pwfile),
                                  "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-instructions"],
                                 cwd=self.folder, capture_output=True, text=True, timeout=180, **as_user(user))
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise StackError(f"initdb failed (exit {res.returncode}) for {self.data_dir}: "
                             + " ".join((res.stderr or res.stdout).strip().splitlines()[-3:]))
        return True

    def _own(self, user: str | None) -> None:
        """The server's folder belongs to its user, mode 700 (postgres insists on it for the data folder)."""
        for path in (self.folder, self.data_dir):
            if path.exists():
                if user is not None:
                    shutil.chown(path, user, user)
                path.chmod(0o700)

    def _let_through(self, user: str | None) -> None:
        """The state folder lets others pass through (execute only, no listing) to the cluster's folder, which
        its user owns; `configure_environment` keeps that bit while the folder is there (mlops.core.settings)."""
        if user is not None and self.state_dir.stat().st_uid == os.getuid():
            self.state_dir.chmod(self.state_dir.stat().st_mode & 0o777 | TRAVERSE_ONLY)

    def _reachable(self, user: str | None) -> None:
        """Fail in one sentence when `user` cannot reach the data folder (a private folder above it)."""
        if user is None:
            return
        res = subprocess.run(["test", "-w", str(self.folder)], capture_output=True, **as_user(user))
        if res.returncode != 0:
            raise StackError(f"PostgreSQL runs as the system user {user} (it refuses to run as root), which cannot "
                             f"reach {self.folder}: a folder above it is private; give a state folder whose parents "
                             f"{user} may enter (chmod o+x on them) with --state-dir or MLOPS_HOME")

    def command(self) -> list[str]:
        settings = {**SERVER_SETTINGS, "listen_addresses": self.host, "unix_socket_directories": ""}
        cmd = [str(self.bin_dir() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def popen_kwargs(self) -> dict[str, Any]:
        return as_user(server_user())

    def connect(self, database: str = "postgres", timeout: float = 3.0) -> Any:
        import psycopg  # psycopg 3: SQLAlchemy 2.1's driver for postgresql:// URLs, which MLflow uses too

        return psycopg.connect(host=self.host, port=self.port, user=ROLE, password=self.password(),
                               dbname=database, connect_timeout=max(1, int(timeout)), autocommit=True)

    def answers(self) -> bool:
        """True when the server accepts a login (the health probe)."""
        try:
            self.connect(timeout=2.0).close()
        except Exception:  # noqa: BLE001 - not up yet, whatever the reason
            return False
        return True

    def ensure_databases(self, names: tuple[str, ...] = DATABASES) -> list[str]:
        """Create the databases that do not exist yet; returns those it created."""
        made = []
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for name in names:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{name}"')
                        made.append(name)
        finally:
            conn.close()
        return made
