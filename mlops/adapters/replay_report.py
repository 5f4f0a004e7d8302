"""A policy replay's files: the month × policy table (CSV), the summary (JSON, markdown) and the plot (PNG)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlops.adapters import sources
from mlops.config import Config
from mlops.domain.replay import Policy, ReplayRow
from mlops.domain.replay_results import ReplayResult, run
from mlops.domain.validation import load_contract

COLUMNS = list(ReplayRow.model_fields)


@dataclass(frozen=True)
class ReplayFiles:
    directory: Path
    table: Path  # replay.csv
    summary: Path  # summary.json
    plot: Path  # metric.png


def write(result: ReplayResult, directory: Path) -> ReplayFiles:
    """Write the table, the summary and the plot into `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = ReplayFiles(directory, directory / "replay.csv", directory / "summary.json", directory / "metric.png")
    with files.table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(row.model_dump() for row in result.rows)
    summary = result.model_dump(exclude={"rows"})
    files.summary.write_text(json.dumps(summary, indent=2, default=str))
    plot(result, files.plot)
    return files


def read_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read(directory: Path) -> ReplayResult:
    """A replay back from its files (`write`'s inverse): the summary's fields and the table's rows, typed again."""

    def number(text: str) -> float | None:
        return None if text == "" else float(text)

    rows = [
        ReplayRow(
            month=row["month"],
            policy=row["policy"],
            metric=number(row["metric"]),
            version=None if row["version"] == "" else int(row["version"]),
            trained_before=row["trained_before"] or None,
            drift_share=number(row["drift_share"]),
            retrained=row["retrained"] == "True",
            gate=row["gate"],
            deployed=row["deployed"] == "True",
            cpu_s=float(row["cpu_s"]),
        )
        for row in read_table(directory / "replay.csv")
    ]
    return ReplayResult.model_validate({**json.loads((directory / "summary.json").read_text()), "rows": rows})


def plot(result: ReplayResult, path: Path) -> None:
    """Left: the gate metric of the model in service per month, one line per distinct history (policies that
    served the same models share a line), a dot where a retrained model took over. Right: each policy's
    mean metric against its CPU seconds, with the tolerance band under the best."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    from matplotlib import pyplot as plt

    figure, (history, cost) = plt.subplots(1, 2, figsize=(14, 5.5), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    lines: dict[tuple, list[str]] = {}  # the months' models and metrics → the policies that had them
    for summary in result.summary:
        rows = [r for r in result.rows if r.policy == summary.policy]
        lines.setdefault(tuple((r.trained_before, r.metric) for r in rows), []).append(summary.policy)
    months = result.months
    for served, names in lines.items():
        values = [math.nan if metric is None else metric for _, metric in served]
        (line,) = history.plot(months, values, linewidth=1.8, label=" = ".join(names))
        took_over = [i for i in range(1, len(served)) if served[i][0] != served[i - 1][0]]
        history.plot(
            [months[i] for i in took_over], [values[i] for i in took_over], "o", color=line.get_color(), markersize=6
        )
    history.set_title(f"{result.metric} of the model in service (dot: a retrained model takes over)")
    history.set_xlabel("month served")
    history.set_ylabel(f"{result.metric} ({'higher' if result.higher_is_better else 'lower'} is better)")
    history.grid(alpha=0.3)
    history.legend(fontsize=8, loc="best")
    history.tick_params(axis="x", labelrotation=30)

    best = next(s for s in result.summary if s.policy == result.best)
    edge = best.mean - result.tolerance if result.higher_is_better else best.mean + result.tolerance
    cost.axhspan(
        min(edge, best.mean),
        max(edge, best.mean),
        color="tab:green",
        alpha=0.12,
        label=f"within {result.tolerance:g} of the best",
    )
    points: dict[tuple[float, float], list[str]] = {}  # policies on the same point share one label
    for s in result.summary:
        points.setdefault((s.cpu_s, s.mean), []).append(f"{s.policy} ({s.retrains})")
        cost.scatter(
            s.cpu_s,
            s.mean,
            s=60 if s.policy == result.cheapest else 30,
            color="tab:green" if s.policy == result.cheapest else "tab:blue",
            zorder=3,
        )
    for index, ((cpu, mean), names) in enumerate(
        sorted(points.items())
    ):  # alternate above and below: near points stay legible
        cost.annotate(
            ", ".join(names), (cpu, mean), textcoords="offset points", xytext=(5, 5 if index % 2 else -11), fontsize=8
        )
    cost.set_title(f"mean {result.metric} vs compute (retrains)")
    cost.set_xlabel("CPU seconds the policy spent")
    cost.set_ylabel(f"mean monthly {result.metric}")
    cost.grid(alpha=0.3)
    cost.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def summary_markdown(result: ReplayResult, links: dict[str, str] | None = None) -> str:
    """The per-policy summary and the recommendation, as a Prefect artifact or the CLI prints it."""
    lines = [
        f"# Policy replay: {result.months[0]} to {result.months[-1]} ({len(result.months)} months)",
        "",
        f"Gate metric `{result.metric}` of the model in service on each month it served "
        f"({'higher' if result.higher_is_better else 'lower'} is better).",
        "",
        "| policy | months | mean | 95% interval | worst | retrains | deployed | CPU s |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.policy} | {s.months} | {s.mean:.4f} | {s.mean_low:.4f}–{s.mean_high:.4f} | {s.worst:.4f} "
        f"| {s.retrains} | {s.deployed} | {s.cpu_s:.1f} |"
        for s in result.summary
    ]
    support = (
        f"the data supports it: month by month it trails the best by {-result.gap_high:.4f} to {-result.gap_low:.4f} "
        "(95% bootstrap interval)"
        if result.supported
        else f"the data does not show it is within {result.tolerance:g}: the 95% interval of its gap to the best is "
        f"{-result.gap_high:.4f} to {-result.gap_low:.4f}; replay more months or widen the tolerance"
    )
    lines += [
        "",
        f"**Best mean:** {result.best}. **Cheapest within {result.tolerance:g} of it:** {result.cheapest}; {support}.",
        "",
        f"The replay itself spent {result.cpu_s:.0f} CPU s (work shared by policies done once).",
    ]
    for text, url in (links or {}).items():
        lines.append(f"- [{text}]({url})")
    return "\n".join(lines) + "\n"


def replay(
    config: Config,
    policies: list[Policy],
    directory: Path,
    start: str | None = None,
    end: str | None = None,
    tolerance: float = 0.005,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[ReplayResult, ReplayFiles]:
    """Replay `policies` on the whole configured source and write the files into `directory`."""
    result = run(config, sources.load_source(config), load_contract(config), policies, start, end, tolerance, log)
    return result, write(result, directory)


def output_directory(config: Config, name: str) -> Path:
    """Where a replay's files go: `<state dir>/replay/<name>`."""
    return config.state_dir / "replay" / name
