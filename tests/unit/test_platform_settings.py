"""The stack's settings, read in their stated order (arguments, MLOPS_* environment, the state dir's files, the config's
`stack:` section, defaults), and what a stack process inherits."""

from pathlib import Path

import pytest

from mlops.config import DEFAULT_CONFIG, PROJECT_ROOT, ConfigError, load_config, stack_settings
from mlops.config import stack as settings
from mlops.config.stack import StackSettings, env_name
from tests.conftest import write_config

pytestmark = pytest.mark.unit

OVERRIDES = tuple(env_name(field) for field in StackSettings.model_fields)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No stack variables from the developer's shell (a sourced `.mlops/env` sets them all)."""
    for name in (*OVERRIDES, "MLOPS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_come_from_the_config(clean_env: pytest.MonkeyPatch) -> None:
    s = stack_settings()
    assert (s.prefect_port, s.mlflow_port, s.worker_port, s.receiver_port) == (4200, 5000, 4201, 4202)
    assert s.state_dir == PROJECT_ROOT / ".mlops"
    assert s.prefect_api_url == "http://127.0.0.1:4200/api" and s.mlflow_uri == "http://127.0.0.1:5000"


def test_the_config_sets_every_port_and_the_environment_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ports = {
        "stack.prefect_port": 6200,
        "stack.mlflow_port": 6300,
        "stack.worker_port": 6201,
        "stack.receiver_port": 6202,
    }
    config = load_config(write_config(DEFAULT_CONFIG, tmp_path, ports))
    assert (stack_settings(config).worker_port, stack_settings(config).receiver_port) == (6201, 6202)

    clean_env.setenv(env_name("worker_port"), "7201")
    clean_env.setenv(env_name("state_dir"), str(tmp_path / "state"))
    s = stack_settings(config)
    assert (s.prefect_port, s.mlflow_port, s.worker_port, s.receiver_port) == (6200, 6300, 7201, 6202)
    assert s.state_dir == tmp_path / "state"


def test_a_shell_with_the_client_env_finds_the_same_stack(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stack = StackSettings(
        state_dir=tmp_path / "state", prefect_port=6200, mlflow_port=6300, worker_port=6201, receiver_port=6202
    )
    for name, value in stack.client_env().items():
        clean_env.setenv(name, value)
    assert stack_settings() == stack


def test_a_stack_process_inherits_nothing_that_points_at_another_stack() -> None:
    stack = StackSettings(state_dir=Path("/s"), prefect_port=1, mlflow_port=2, worker_port=3, receiver_port=4)
    assert set(stack.client_env()) <= set(settings.FOREIGN_ENV)
    assert "MLOPS_CONFIG" not in settings.FOREIGN_ENV  # the e2e and bench stacks run another config on purpose


def test_arguments_win_over_the_environment_which_wins_over_the_state_dir_and_the_section(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / settings.PROFILE_FILE).write_text("scale\n")
    section = settings.Stack(prefect_port=6200, mlflow_port=6300, state_dir=tmp_path)
    clean_env.setenv(env_name("mlflow_port"), "7300")
    s = settings.stack_settings_of(section, prefect_port=8200)
    assert (s.prefect_port, s.mlflow_port, s.worker_port, s.profile) == (8200, 7300, 4201, "scale")
    clean_env.setenv(env_name("profile"), "embedded")
    assert settings.stack_settings_of(section).profile == "embedded"
    assert settings.stack_settings_of(section, profile="scale").profile == "scale"


def test_ports_must_differ(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must differ"):
        StackSettings(state_dir=tmp_path, prefect_port=4200, mlflow_port=5000, worker_port=4200)


def test_an_invalid_stack_port_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stack\.receiver_port"):
        load_config(write_config(DEFAULT_CONFIG, tmp_path, {"stack.receiver_port": 70000}))


def test_the_profile_comes_from_the_environment_else_from_what_the_state_dir_was_made_with(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv(env_name("state_dir"), str(tmp_path))
    assert stack_settings().profile == "embedded"  # a new state dir
    (tmp_path / settings.PROFILE_FILE).write_text("scale\n")
    assert stack_settings().profile == "scale"  # `mlops down` and `status` find the PostgreSQL of a scale stack
    clean_env.setenv(env_name("profile"), "embedded")
    assert stack_settings().profile == "embedded"  # asked for: `up` refuses it on this dir (stack._keep_profile)
    clean_env.setenv(env_name("profile"), "cluster")
    with pytest.raises(ValueError, match="profile"):
        stack_settings()


def test_a_scale_stack_hands_its_profile_and_database_port_to_every_process_but_never_the_database_password(
    tmp_path: Path,
) -> None:
    s = StackSettings(
        state_dir=tmp_path,
        prefect_port=1,
        mlflow_port=2,
        worker_port=3,
        receiver_port=4,
        postgres_port=5,
        profile="scale",
    )
    env = s.client_env()
    assert env[env_name("profile")] == "scale" and env[env_name("postgres_port")] == "5"
    assert s.postgres_url("prefect").startswith("postgresql://mlops:@")  # a reader before `up`: no password, none made
    assert not s.postgres_password_file.exists()
    s.ensure_credentials()
    url = s.postgres_url("prefect", "postgresql+asyncpg")
    password = s.postgres_password_file.read_text().strip()
    assert url.startswith("postgresql+asyncpg://mlops:") and url.endswith("@127.0.0.1:5/prefect")
    assert oct(s.postgres_password_file.stat().st_mode & 0o777) == "0o600"
    assert password not in " ".join(env.values())
    with pytest.raises(ValueError, match="must differ"):
        StackSettings(
            state_dir=tmp_path,
            prefect_port=1,
            mlflow_port=2,
            worker_port=3,
            receiver_port=4,
            postgres_port=1,
            profile="scale",
        )


def test_up_refuses_a_state_dir_made_with_the_other_profile(tmp_path: Path) -> None:
    from mlops.platform.parts import StackError
    from mlops.platform.stack import _keep_profile

    scale = StackSettings(
        state_dir=tmp_path, prefect_port=1, mlflow_port=2, worker_port=3, receiver_port=4, profile="scale"
    )
    _keep_profile(scale)
    assert (tmp_path / settings.PROFILE_FILE).read_text() == "scale\n"
    with pytest.raises(StackError, match="holds a stack of the 'scale' profile"):
        _keep_profile(scale.model_copy(update={"profile": "embedded"}))
    _keep_profile(scale)  # the same profile again: fine


def test_the_warm_socket_stays_in_the_run_dir_unless_its_path_is_too_long_for_a_socket(tmp_path: Path) -> None:
    short = StackSettings(state_dir=tmp_path / "s", prefect_port=1, mlflow_port=2, worker_port=3, receiver_port=4)
    assert short.warm_socket == short.run_dir / "warmstart.sock"
    deep = StackSettings(
        state_dir=tmp_path / ("d" * 120), prefect_port=1, mlflow_port=2, worker_port=3, receiver_port=4
    )
    assert len(str(deep.warm_socket).encode()) < 100 and deep.warm_socket.parent != deep.run_dir
    assert oct(deep.warm_socket.parent.stat().st_mode & 0o777) == "0o700"
    again = StackSettings(
        state_dir=tmp_path / ("d" * 120), prefect_port=1, mlflow_port=2, worker_port=3, receiver_port=4
    )
    assert again.warm_socket == deep.warm_socket  # named after the state dir: `up` and the worker agree
    deep.warm_socket.parent.rmdir()
