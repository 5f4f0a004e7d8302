"""The `mlops` command line: the local stack, the demo, the model service, the tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlops.config import DRIFT_SWEEP, POLICY_KINDS
from mlops.platform import on_stack


def _stack(args: argparse.Namespace) -> int:
    from mlops.platform import stack

    if args.command == "status":
        return stack.status(as_json=args.json)
    return {"up": stack.up, "down": stack.down}[args.command]()


def _serve(args: argparse.Namespace) -> int:
    from mlops.adapters import registry
    from mlops.config import ConfigError, config_named, load_config
    from mlops.serving.server import serve

    try:  # before uvicorn starts workers that would each fail to load the model
        config = config_named(args.use_case) if args.use_case else load_config()
        registry.require_server(registry.tracking_uri(config))
    except (registry.RegistryUnavailable, ConfigError) as exc:
        print(f"mlops serve: {exc}", file=sys.stderr)
        return 2
    serve(
        model_uri=args.model_uri,
        host=args.host,
        port=args.port,
        workers=args.workers,
        use_case=args.use_case,
        environment=args.environment,
        capture_dir=args.capture_dir,
        shadow_model_uri=args.shadow_model_uri,
    )
    return 0


def _test(args: argparse.Namespace) -> int:
    from mlops.platform import suite

    return suite.run(args.pytest_args or ())


def _contract(args: argparse.Namespace) -> int:
    from mlops.adapters import sources
    from mlops.config import load_config
    from mlops.domain import validation
    from mlops.domain.window import Window

    config = load_config()
    loaded = sources.load_window(
        config, None if args.months else Window.everything(), as_of=args.as_of, months=args.months, declared_only=False
    )
    df, bounds = loaded.frame, loaded.window
    contract = validation.infer_contract(df, config, inferred_from=f"{config.dataset.name} {bounds.label()}")
    path = args.output or config.dataset.contract_path
    contract.save(path)
    print(f"wrote {path} from {len(df)} rows ({bounds.label()}): review it, then commit it")
    return 0


def _new(args: argparse.Namespace) -> int:
    from mlops.config import ConfigError
    from mlops.domain.validation import DataValidationError
    from mlops.platform import scaffold

    try:
        config = scaffold.new_use_case(args.name, args.data, args.target, args.time_column, args.into)
    except (scaffold.ScaffoldError, ConfigError, DataValidationError) as exc:
        print(f"mlops new: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {config.parent}: review mlops.yaml and contract.json, edit model.py, then\n"
        f'  MLOPS_CONFIG={config} .venv/bin/python -c "from flows.continuous_training import continuous_training; '
        'print(continuous_training())"'
    )
    return 0


def _hooks(args: argparse.Namespace) -> int:
    from mlops.platform import hooks

    try:
        print(hooks.install().message)
    except hooks.HookError as exc:
        print(f"mlops hooks: {exc}", file=sys.stderr)
        return 1
    return 0


def _history(args: argparse.Namespace) -> int:
    import os

    from mlops import render
    from mlops.adapters import listings, registry
    from mlops.config import load_config, stack_settings

    config = load_config()
    for key, value in stack_settings(config).credential_env().items():  # as a shell that sourced .mlops/env
        os.environ.setdefault(key, value)
    name = args.model or load_config(use_case=args.use_case).tracking.model_name
    try:
        changes = listings.history(registry.connect(config), name)
    except registry.RegistryUnavailable as exc:
        print(f"mlops history: {exc}", file=sys.stderr)
        return 2
    print(f"{name}: production history, newest first\n{render.history_table(changes)}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    """The policy-replay flow's work in this process: no server, files under .mlops/replay/."""
    from datetime import datetime

    from mlops.adapters import replay_report
    from mlops.config import load_config
    from mlops.domain.replay import ReplayError, make_policies

    config = load_config()
    name = args.name or f"{datetime.now():%Y%m%d-%H%M%S}"
    try:
        policies = make_policies(config, args.policies, args.drift_shares, args.metric_floor, args.label_delay_months)
        result, files = replay_report.replay(
            config,
            policies,
            replay_report.output_directory(config, name),
            args.start,
            args.end,
            args.tolerance,
            log=lambda line: print(line, flush=True),
        )
    except ReplayError as exc:
        print(f"mlops replay: {exc}", file=sys.stderr)
        return 2
    print(f"\n{replay_report.summary_markdown(result)}\ntable {files.table}\nplot  {files.plot}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mlops.platform.demo import run_demo

    return run_demo()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in [("up", "start the local stack"), ("down", "stop it")]:
        sub.add_parser(name, help=text).set_defaults(func=_stack)
    status = sub.add_parser("status", help="show it: its parts, and each environment's version, URL and health")
    status.add_argument("--json", action="store_true", help="the same as JSON, per use case")
    status.set_defaults(func=_stack)
    sub.add_parser("demo", help="bring the stack up and run the loop once").set_defaults(func=_demo)
    contract = sub.add_parser("contract", help="infer the schema contract from reference data, for review")
    contract.add_argument("--as-of", default=None, help="reference window end (default: all the data)")
    contract.add_argument("--months", type=int, default=None, help="reference window length; default: all rows")
    contract.add_argument("--output", type=Path, default=None, help="default: the config's contract path")
    contract.set_defaults(func=_contract)
    new = sub.add_parser("new", help="scaffold a use case folder from a data file (config, contract, model.py, test)")
    new.add_argument("name", help="the use case, a Python name: usecases/<name>/")
    new.add_argument("--data", type=Path, required=True, help="a CSV or Parquet file")
    new.add_argument("--target", required=True, help="the column to predict")
    new.add_argument("--time-column", default=None, help="training and monitoring windows by this column")
    new.add_argument("--into", type=Path, default=None, help="default: usecases/ of this project")
    new.set_defaults(func=_new)
    serve = sub.add_parser("serve", help="serve one model version over the MLflow scoring protocol")
    serve.add_argument("--model-uri", required=True, help="e.g. models:/flights-delay@champion")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--workers", type=int, default=None, help="default: serving.workers in the config")
    serve.add_argument("--use-case", default=None, help="whose config (default: the default config's use case)")
    serve.add_argument("--environment", default=None, help="the environment served, as captured traffic says")
    serve.add_argument("--capture-dir", default=None, help="keep answered requests here (serving.capture)")
    serve.add_argument("--shadow-model-uri", default=None, help="also score every request with this version, unseen")
    serve.set_defaults(func=_serve)
    approve = sub.add_parser("approve", help="answer a CD run that waits for approval (delivery.approval: manual)")
    approve.add_argument("name", help="the registered model, e.g. flights-delay")
    approve.add_argument("version", help="the version its CD run delivers")
    approve.add_argument(
        "--reject", action="store_true", help="reject instead: staging rolls back, production is untouched"
    )
    approve.add_argument("--by", default=None, help="who decides (default: your user name)")
    approve.add_argument("--comment", default="", help="why, for the version's record")
    approve.set_defaults(func=on_stack.approve)
    rollback = sub.add_parser("rollback", help="put production back on the previous champion now (no staging gates)")
    rollback.add_argument(
        "--reason", required=True, help="why, for the versions' record, the history and the notification"
    )
    rollback.add_argument("--to", default=None, help="the version to serve again (default: previous_champion)")
    rollback.add_argument("--by", default=None, help="who decides (default: your user name)")
    rollback.add_argument("--model", default=None, help="default: the use case's tracking.model_name")
    rollback.add_argument("--use-case", default=None, help="whose production (usecases/<name>/; default: the stack's)")
    rollback.set_defaults(func=on_stack.rollback)
    labels = sub.add_parser("labels", help="ingest late labels: join them to captured traffic, measure, alert")
    labels.add_argument("path", nargs="?", default=None, help="a CSV or Parquet file of labels")
    labels.add_argument("--sql", default=None, help="or a SQL query returning them")
    labels.add_argument("--sql-url", default=None, help="the query's database (default: the use case's SQL source)")
    labels.add_argument("--use-case", default=None, help="whose traffic (usecases/<name>/; default: the stack's)")
    labels.set_defaults(func=on_stack.labels)
    history = sub.add_parser("history", help="which version served production from when to when, and why it changed")
    history.add_argument("--model", default=None, help="default: the use case's tracking.model_name")
    history.add_argument("--use-case", default=None, help="whose model (usecases/<name>/; default: the stack's)")
    history.set_defaults(func=_history)
    replay = sub.add_parser("replay", help="replay retraining policies month by month on the data (no server)")
    replay.add_argument(
        "--start", default=None, help="first month served, YYYY-MM-DD (default: after a whole training window)"
    )
    replay.add_argument(
        "--end", default=None, help="end of the last month served, exclusive (default: the newest complete month's end)"
    )
    replay.add_argument("--policies", nargs="+", choices=POLICY_KINDS, default=list(POLICY_KINDS))
    replay.add_argument(
        "--drift-shares",
        nargs="*",
        type=float,
        default=list(DRIFT_SWEEP),
        help="more drift thresholds to sweep, a drift policy each (default: %(default)s)",
    )
    replay.add_argument(
        "--metric-floor", type=float, default=None, help="the metric policy's floor (default: the gate's floor)"
    )
    replay.add_argument(
        "--label-delay-months", type=int, default=0, help="also a metric policy that sees labels this many months late"
    )
    replay.add_argument(
        "--tolerance", type=float, default=0.005, help="how far from the best mean metric is good enough"
    )
    replay.add_argument("--name", default=None, help="the output folder under .mlops/replay/ (default: the time)")
    replay.set_defaults(func=_replay)
    sub.add_parser("hooks", help="install the git post-commit hook that starts CI for each commit").set_defaults(
        func=_hooks
    )
    test = sub.add_parser("test", help="run the test suite (arguments go to pytest)")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    test.set_defaults(func=_test)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
