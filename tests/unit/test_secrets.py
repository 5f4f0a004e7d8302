"""No credential in the repository, and the stack's credentials made private and handed out by environment only."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from mlops.config import PROJECT_ROOT
from mlops.config import stack as settings
from mlops.config.stack import StackSettings

pytestmark = pytest.mark.unit

MAX_BYTES = 5_000_000  # larger files are data, not code or config
THIS_FILE = "tests/unit/test_secrets.py"  # its patterns look like secret literals; its samples are split

# What a credential looks like. A value is what the caller would have to keep secret.
PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_?secret_?access_?key\s*[=:]\s*[\"']?([A-Za-z0-9/+=]{40})\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "credentials in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"'{}<>]+:([^/\s:@\"'{}<>$]+)@[^\s/\"']+"),
    # A quoted literal assigned to a name that says it is secret: `password = "hunter22"`, `"secret": "abc..."`.
    "secret literal": re.compile(
        r"(?i)\b[\w.-]*(?:password|passwd|secret|token|api_?key|auth_string)[\w.-]*[\"']?\s*[=:]\s*[rbf]?[\"']([^\"'\s]{6,})[\"']"
    ),
    # The same in a config file, unquoted: `admin_password = hunter22` (ini, env, tfvars, yaml).
    "secret setting": re.compile(
        r"(?im)^\s*(?:export\s+)?[\w.-]*(?:password|passwd|secret|token|api_?key|auth_string)[\w.-]*\s*[=:]\s*([^\s\"'#]{6,})\s*$"
    ),
}
CONFIG_SUFFIXES = {".ini", ".cfg", ".conf", ".env", ".tfvars", ".yaml", ".yml", ".toml", ".properties", ""}

# Values that are not secrets: references to one, placeholders, and the test fixtures named below.
NOT_A_VALUE = re.compile(
    r"^(?:[${<%(]|\*+$|x+$|changeme$|example|dummy|your[-_]|user(?:name)?:pass(?:word)?$)", re.IGNORECASE
)
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # `PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"` names a variable
KNOWN_FIXTURES = {
    ("tests/unit/test_webhooks.py", "s3cret"),  # the unit receiver's HMAC secret
    ("tests/unit/test_webhooks.py", "forged"),  # a forger's wrong HMAC secret
    ("tests/e2e/test_stack.py", "e2e-secret"),  # a throwaway webhook's HMAC secret
    ("tests/e2e/test_security.py", "not-the-password-at-all"),  # the stranger's wrong password
}


def _repo_files() -> list[str]:
    """The tracked files, and new ones not ignored (so a credential is caught before its first commit)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name})


def _text(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):  # listed by git but deleted in the work tree
        return None
    if len(raw) > MAX_BYTES or b"\0" in raw[:8192]:
        return None
    return raw.decode("utf-8", errors="replace")


def find_credentials(name: str, text: str) -> list[str]:
    """What in `text` (the file `name`) looks like a credential, as `name:line: kind`."""
    found = []
    for kind, pattern in PATTERNS.items():
        if kind == "secret setting" and Path(name).suffix not in CONFIG_SUFFIXES:
            continue
        for match in pattern.finditer(text):
            value = match.group(1) if pattern.groups else match.group(0)
            if pattern.groups and (
                NOT_A_VALUE.match(value) or ENV_NAME.match(value) or (name, value) in KNOWN_FIXTURES
            ):
                continue
            found.append(f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {kind}")
    return found


# Sample credentials are split so that this file does not hold them whole.
@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n",
        "-----BEGIN RSA " + "PRIVATE KEY-----",
        "aws_access_key_id = " + "AKIA" + "IOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY=" + "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY",
        'password = "' + 'hunter2hunter2"',
        '{"client_secret": "' + 'f00dcafe1234"}',
        "postgresql://mlops:" + "s3cretpw@db.example.com/mlflow",
        "token = " + "ghp_" + "a" * 36,
    ],
)
def test_the_scan_finds_what_looks_like_a_credential(text: str) -> None:
    assert find_credentials("some/file.py", text)


@pytest.mark.parametrize(
    "text",
    [
        'password = os.environ["MLFLOW_TRACKING_PASSWORD"]',
        'f"admin_password = {password}"',
        "secret = read_or_create_secret(args.secret_file)",
        'token = "${{ secrets.GITHUB_TOKEN }}"',
        '"--secret-file", str(s.webhook_secret_file)',
        "PREFECT_API_AUTH_STRING: <user:password>",
        'auth_string: "user:password" when the server has API auth',
        "sqlite:///mlflow.db and http://127.0.0.1:5000/api/2.0",
    ],
)
def test_the_scan_leaves_references_and_placeholders_alone(text: str) -> None:
    assert find_credentials("some/file.py", text) == []


def test_no_credential_in_the_repository() -> None:
    files = _repo_files()
    assert "mlops/platform/stack.py" in files, "not the repository's file list"
    scanned = [name for name in files if name != THIS_FILE]
    leaks = [
        hit
        for name in scanned
        if (text := _text(PROJECT_ROOT / name)) is not None
        for hit in find_credentials(name, text)
    ]
    assert not leaks, "credentials in the repository (allow a test fixture in KNOWN_FIXTURES):\n" + "\n".join(leaks)


def test_known_fixtures_are_still_there() -> None:
    """An allowance outlives its reason unnoticed; each must still be needed."""
    for name, value in KNOWN_FIXTURES:
        assert value in (PROJECT_ROOT / name).read_text(), (
            f"{name} no longer holds {value!r}: drop it from KNOWN_FIXTURES"
        )


def _stack(tmp_path: Path) -> StackSettings:
    return StackSettings(state_dir=tmp_path / "state", prefect_port=4201, mlflow_port=5001, worker_port=8081)


def test_stack_credentials_are_generated_private_and_kept(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    assert stack.credential_env() == {}
    stack.ensure_credentials()
    first = stack.credential_env()
    assert stat.S_IMODE(stack.secrets_dir.stat().st_mode) == 0o700
    for path in stack.secrets_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    user, _, password = first[settings.PREFECT_AUTH_ENV].partition(":")
    assert user == settings.PREFECT_USER and len(password) >= 32
    assert (
        first[settings.MLFLOW_USERNAME_ENV] == settings.MLFLOW_ADMIN and len(first[settings.MLFLOW_PASSWORD_ENV]) >= 32
    )
    stack.ensure_credentials()
    assert stack.credential_env() == first, "made once, then reused"
    assert _stack(tmp_path / "other").credential_env() == {}


def test_mlflow_auth_config_denies_users_without_grants(tmp_path: Path) -> None:
    import configparser

    stack = _stack(tmp_path)
    stack.ensure_credentials()
    parsed = configparser.ConfigParser()
    parsed.read(stack.mlflow_auth_config)
    assert parsed["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert parsed["mlflow"]["admin_password"] == stack.credential_env()[settings.MLFLOW_PASSWORD_ENV]
    assert parsed["mlflow"]["database_uri"].startswith(f"sqlite:///{stack.mlflow_dir}")
    # A request's scrypt check is verified once per TTL, not per request (MLflow's own cache, off by default).
    assert parsed["mlflow"].getint("auth_cache_ttl_seconds") == settings.MLFLOW_AUTH_CACHE_TTL_S > 0


def test_client_env_carries_the_credentials_and_a_private_file_stays_private(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    stack.ensure_credentials()
    assert set(stack.credential_env()) <= set(stack.client_env()) <= set(settings.FOREIGN_ENV)
    loose = tmp_path / "env"
    loose.write_text("old")
    loose.chmod(0o644)
    settings.write_private(loose, "export X=1\n")
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600 and loose.read_text() == "export X=1\n"
