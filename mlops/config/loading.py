"""Finding and loading configs: the default use case, `usecases/<name>/mlops.yaml`, MLOPS_CONFIG; errors name the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from mlops.config.model import Config
from mlops.config.sections import ConfigError, FileSource
from mlops.config.stack import StackSettings, stack_settings_of
from mlops.usercode import PROJECT_ROOT, USECASES, UserCodeError, import_root, use_case_of

DEFAULT_CONFIG = PROJECT_ROOT / "usecases" / "flights" / "mlops.yaml"  # the default use case


def config_path() -> Path:
    return Path(os.environ.get("MLOPS_CONFIG") or DEFAULT_CONFIG)


def use_cases(root: Path = PROJECT_ROOT) -> list[str]:
    """This project's use cases: each folder `usecases/<name>/` that holds an mlops.yaml, by name."""
    return sorted(p.parent.name for p in (root / USECASES).glob("*/mlops.yaml"))


def use_case_parameter() -> Any:
    """The type of a flow's `use_case` parameter: the discovered names, so Prefect's form offers them."""
    found = use_cases()
    return Literal[tuple(found)] if found else str  # type: ignore[valid-type]


def stack_use_cases() -> list[str]:
    """The use cases this stack runs: every folder of usecases/, or only the file MLOPS_CONFIG names when that file
    lives elsewhere (it points the whole system at one file)."""
    if use_case_of(config_path()) is None:
        return [load_config().name]
    return use_cases()


def config_named(name: str) -> Config:
    """The config of the use case the stack calls `name` (Config.name): its folder's, or the default config's."""
    if name in use_cases():
        return load_config(use_case=name)
    default = load_config()
    if default.name != name:
        raise ConfigError(f"no use case named {name!r}: not a folder usecases/<name>/ nor the default config's name")
    return default


def config_for_model(model_name: str | None) -> Config | None:
    """The config of the use case that registers `model_name` (tracking.model_name): the default config's first,
    then each folder's; the default config when no name is given, None when no use case registers it."""
    default = load_config()
    if model_name is None or default.tracking.model_name == model_name:
        return default
    for name in use_cases():
        config = load_config(use_case=name)
        if config.tracking.model_name == model_name:
            return config
    return None


def load_config(path: str | Path | None = None, *, use_case: str | None = None) -> Config:
    """Load and validate a config: `usecases/<use_case>/mlops.yaml`, else `path`, else MLOPS_CONFIG, else the
    default use case's (usecases/flights/mlops.yaml)."""
    if use_case:
        if use_case not in use_cases():
            raise ConfigError(f"use case {use_case!r} is not one of {use_cases()} (folders usecases/<name>/mlops.yaml)")
        path = PROJECT_ROOT / USECASES / use_case / "mlops.yaml"
    path = Path(path) if path else config_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid config\n{problems}") from None
    config = _anchor_paths(config, path.resolve().parent)
    config._import_root, config._use_case = import_root(path), use_case_of(path)
    check_user_code(config, path)
    return config


def check_user_code(config: Config, path: Path | str = "config") -> None:
    """Import every path the config names; a ConfigError lists each key and path that fails."""
    problems = []
    for key in config.import_paths():
        try:
            config.resolve(key)
        except UserCodeError as exc:
            problems.append(f"  - {exc}")
    if problems:
        raise ConfigError(f"{path}: user code that cannot be used\n" + "\n".join(problems))


def _anchor_paths(config: Config, base: Path) -> Config:
    """Relative data and contract paths in a config are relative to the config file."""
    ds = config.dataset
    update: dict[str, Any] = {}
    if isinstance(ds.source, FileSource) and not ds.source.path.is_absolute():
        update["source"] = ds.source.model_copy(update={"path": base / ds.source.path})
    if ds.contract is not None and not ds.contract.is_absolute():
        update["contract"] = base / ds.contract
    if not update:
        return config
    return config.model_copy(update={"dataset": ds.model_copy(update=update)})


def stack_settings(config: Config | None = None, **explicit: Any) -> StackSettings:
    """The stack's settings with `config`'s `stack:` section (default: the stack's config, MLOPS_CONFIG or the default
    use case's); see mlops/config/stack.py for the order they are read in."""
    return stack_settings_of((config or load_config()).stack, **explicit)
