"""The `scale` profile's PostgreSQL: one cluster under `<state>/postgres`, on 127.0.0.1 only, holding Prefect's and MLflow's stores.

The server is Debian's (package `postgresql`): `mlops up` installs it when it is missing and this
process may (root, with apt-get), else stops naming what to install. PostgreSQL refuses to run as
root, so as root the cluster's files belong to the `postgres` user Debian's package creates and the
server runs as that user (util-linux's `setpriv`, which execs: the pid file names the server itself).
Clients authenticate with scram-sha-256 as `mlops`, whose generated password lives in
`<state>/secrets/postgres-password` (0600) and reaches the servers through their environment (or the
0600 MLflow auth config) only, never a command line.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from mlops.config.stack import HOST, POSTGRES_USER, StackSettings, private_secret, write_private

SUPERUSER = POSTGRES_USER
OS_USER = "postgres"  # who runs the server when `up` runs as root (Debian's package makes this user)
DATABASES = ("prefect", "mlflow", "mlflow_auth")  # Prefect's store, MLflow's tracking/registry store, MLflow's users
PACKAGE = "postgresql"
INSTALL_TIMEOUT = 900.0


class PostgresError(RuntimeError):
    """PostgreSQL is missing, cannot be installed or initialised here; the message says what to do."""


def data_dir(s: StackSettings) -> Path:
    return s.state_dir / "postgres" / "data"


def socket_dir(s: StackSettings) -> Path:
    return s.state_dir / "postgres" / "run"  # the server's unix socket and lock file, not in /var/run


def shown_url(s: StackSettings, database: str = "") -> str:
    """A database's URL without the password, for logs and `mlops status`."""
    return f"postgresql://{SUPERUSER}@{HOST}:{s.postgres_port}/{database}"


def bin_dir() -> Path | None:
    """The newest server binaries on this machine (Debian keeps them in /usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


def ensure_installed() -> tuple[Path, str]:
    """The server's bin dir, installing Debian's package when missing; (dir, what happened)."""
    if (found := bin_dir()) is not None:
        return found, "installed"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresError(
            f"the scale profile needs a PostgreSQL server and none is installed; as root: "
            f"`apt-get update && apt-get install -y {PACKAGE}` (Debian/Ubuntu), or put `postgres` and `initdb` on PATH"
        )
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]):
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )
        if done.returncode != 0:
            raise PostgresError(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    if (found := bin_dir()) is None:
        raise PostgresError(f"`apt-get install {PACKAGE}` succeeded but no postgres binary was found")
    return found, f"installed now (apt-get install {PACKAGE})"


def _as_owner() -> list[str]:
    """The prefix that runs a command as the cluster's owner: setpriv to `postgres` as root, nothing otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, the server needs the `{OS_USER}` user (Debian's {PACKAGE} package makes it)"
        ) from None
    return ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups", "--"]


def _give_to_owner(path: Path) -> None:
    """As root: `path` (a file or directory of ours) belongs to the server's user, and every parent lets it through."""
    if os.geteuid() != 0:
        return
    owner = pwd.getpwnam(OS_USER)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    for parent in path.parents:
        if parent.stat().st_uid != owner.pw_uid and not parent.stat().st_mode & 0o001:
            raise PostgresError(
                f"the server runs as `{OS_USER}`, which cannot reach {path}: {parent} is not searchable by others "
                f"(`chmod o+x {parent}`, or put the state dir (MLOPS_STATE_DIR) elsewhere)"
            )


def ensure_cluster(s: StackSettings, bins: Path) -> str:
    """`initdb` the stack's cluster once (superuser `mlops`, scram-sha-256 only); returns what happened."""
    data = data_dir(s)
    if (data / "PG_VERSION").exists():
        return f"cluster {data} exists"
    password = private_secret(s.postgres_password_file)
    for directory in (data, socket_dir(s)):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        _give_to_owner(directory)
    # initdb reads the password from a file; the owner's copy (0600, beside the data dir) lives for this call only.
    handed = data.parent / ".initdb-password"
    write_private(handed, password + "\n")
    try:
        _give_to_owner(handed)
        command = [
            *_as_owner(),
            str(bins / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            f"--pwfile={handed}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        handed.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)  # half a cluster would read as "exists" next time
        raise PostgresError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return f"cluster {data} initialised"


def server_command(s: StackSettings, bins: Path) -> list[str]:
    """The server on 127.0.0.1 only, its socket in the state dir."""
    return [
        *_as_owner(),
        str(bins / "postgres"),
        "-D",
        str(data_dir(s)),
        "-p",
        str(s.postgres_port),
        "-c",
        f"listen_addresses={HOST}",
        "-c",
        f"unix_socket_directories={socket_dir(s)}",
        "-c",
        "max_connections=200",
    ]  # Prefect's pool (5 + 10 overflow) per API process, MLflow's, 50 runs' tasks


def healthy(s: StackSettings) -> bool:
    """The server accepts the stack's credentials (a TCP connect alone answers while it is still starting)."""
    import psycopg

    if not s.postgres_password_file.exists():
        return False
    try:
        psycopg.connect(s.postgres_url("postgres"), connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def ensure_databases(s: StackSettings) -> list[str]:
    """Create the stack's databases that are missing; returns the ones created."""
    import psycopg

    created = []
    # autocommit: CREATE DATABASE cannot run in a transaction
    with (
        psycopg.connect(s.postgres_url("postgres"), connect_timeout=10, autocommit=True) as connection,
        connection.cursor() as cursor,
    ):
        for name in DATABASES:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
    return created
