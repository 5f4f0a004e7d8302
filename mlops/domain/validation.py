"""Data validation: the schema contract (inferred once, kept in the repo), quality checks, split checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlops.config import Config
from mlops.domain.record import Record

MAX_CONTRACT_CATEGORIES = 50  # above this a categorical column keeps no allowed-values list


class Violation(Record):
    column: str
    rule: str
    detail: str


class DataValidationError(ValueError):
    """A batch that broke the contract or the quality rules; carries every violation."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        lines = "\n".join(f"  - {v.column}: {v.rule} ({v.detail})" for v in violations)
        super().__init__(f"data validation failed with {len(violations)} violation(s):\n{lines}")

    def __reduce__(self) -> tuple[object, ...]:  # keeps the violations when Prefect pickles the failure
        return self.__class__, (self.violations,)


ColumnKind = Literal["numeric", "categorical", "datetime"]


class ColumnContract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: ColumnKind
    nullable: bool
    max_missing_share: float
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None


class Contract(BaseModel):
    """What the data must look like, tightening the config's column declarations."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    inferred_from: str
    rows: int
    range_tolerance: float = 0.1  # values may exceed the observed range by this share of its span
    max_unknown_category_share: float = 0.001
    missing_share_slack: float = 0.1  # allowed rise of a column's missing share over the reference (monthly swings)
    columns: list[ColumnContract]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Contract:
        return cls.model_validate_json(path.read_text())


def column_kinds(config: Config) -> dict[str, ColumnKind]:
    """Each declared column and the kind the config gives it."""
    ds = config.dataset
    kinds: dict[str, ColumnKind] = dict.fromkeys(ds.numeric, "numeric")
    kinds.update(dict.fromkeys(ds.categorical, "categorical"))
    kinds[ds.target] = "numeric" if config.task == "regression" else "categorical"
    if ds.time_column:
        kinds[ds.time_column] = "datetime"
    return kinds


def infer_contract(df: pd.DataFrame, config: Config, inferred_from: str) -> Contract:
    """Infer a contract from reference data, for a human to review and commit (like TFX SchemaGen)."""
    columns = []
    for name, kind in column_kinds(config).items():
        col = df[name]
        missing = float(col.isna().mean())
        spec = ColumnContract(name=name, kind=kind, nullable=missing > 0, max_missing_share=round(missing, 4))
        if kind == "numeric" and col.notna().any():
            spec = spec.model_copy(update={"min": float(col.min()), "max": float(col.max())})
        if kind == "categorical":
            values = sorted(col.dropna().astype(str).unique())
            if len(values) <= MAX_CONTRACT_CATEGORIES:
                spec = spec.model_copy(update={"categories": values})
        columns.append(spec)
    return Contract(dataset=config.dataset.name, inferred_from=inferred_from, rows=len(df), columns=columns)


def check_schema(df: pd.DataFrame, config: Config) -> list[Violation]:
    """The columns and types the config declares."""
    found = []
    for name, kind in column_kinds(config).items():
        if name not in df.columns:
            found.append(Violation(column=name, rule="missing_column", detail=f"declared as {kind}"))
        elif kind == "numeric" and not (pd.api.types.is_numeric_dtype(df[name]) or df[name].isna().all()):
            found.append(Violation(column=name, rule="wrong_type", detail=f"expected numeric, got {df[name].dtype}"))
        elif kind == "datetime" and not pd.api.types.is_datetime64_any_dtype(df[name]):
            found.append(Violation(column=name, rule="wrong_type", detail=f"expected datetime, got {df[name].dtype}"))
    return found


def check_contract(df: pd.DataFrame, contract: Contract) -> list[Violation]:
    """Nullability, ranges and allowed categories from the contract file."""
    found = []
    for spec in contract.columns:
        if spec.name not in df.columns:
            continue  # reported by check_schema
        col = df[spec.name]
        missing = float(col.isna().mean())
        if not spec.nullable and missing > 0:
            found.append(Violation(column=spec.name, rule="not_nullable", detail=f"{col.isna().sum()} null value(s)"))
        elif missing > spec.max_missing_share + contract.missing_share_slack:
            found.append(
                Violation(
                    column=spec.name,
                    rule="missing_share",
                    detail=f"{missing:.1%} missing, contract allows {spec.max_missing_share + contract.missing_share_slack:.1%}",
                )
            )
        if spec.kind == "numeric" and spec.min is not None and pd.api.types.is_numeric_dtype(col):
            if spec.max is None:
                raise ValueError(f"contract column {spec.name!r} has a min but no max: give both or neither")
            slack = contract.range_tolerance * max(spec.max - spec.min, abs(spec.max), 1e-9)
            low, high = spec.min - slack, spec.max + slack
            outside = col[(col < low) | (col > high)]
            if len(outside):
                found.append(
                    Violation(
                        column=spec.name,
                        rule="out_of_range",
                        detail=f"{len(outside)} value(s) outside [{low:.4g}, {high:.4g}], e.g. {outside.iloc[0]!r}",
                    )
                )
        if spec.kind == "categorical" and spec.categories is not None:
            values = col.dropna().astype(str)
            unknown = values[~values.isin(spec.categories)]
            if len(values) and len(unknown) / len(values) > contract.max_unknown_category_share:
                examples = sorted(unknown.unique())[:5]
                found.append(
                    Violation(
                        column=spec.name,
                        rule="unknown_category",
                        detail=f"{len(unknown)} row(s) with values outside the contract, e.g. {examples}",
                    )
                )
    return found


def check_quality(df: pd.DataFrame, config: Config) -> list[Violation]:
    """Missing share, duplicates, constant columns, target balance, row count."""
    q, ds = config.quality, config.dataset
    found = []
    if len(df) < q.min_rows:
        found.append(Violation(column="*", rule="min_rows", detail=f"{len(df)} rows, need {q.min_rows}"))
        if df.empty:
            return found
    present = [c for c in ds.features if c in df.columns]
    for name in present:
        missing = float(df[name].isna().mean())
        if missing > q.max_missing_share:
            found.append(
                Violation(column=name, rule="max_missing_share", detail=f"{missing:.1%} > {q.max_missing_share:.1%}")
            )
        if df[name].nunique(dropna=True) <= 1:
            found.append(Violation(column=name, rule="constant_column", detail="one distinct value or none"))
    duplicate_share = float(df.duplicated().mean())
    if duplicate_share > q.max_duplicate_share:
        found.append(
            Violation(
                column="*",
                rule="duplicates",
                detail=f"{duplicate_share:.2%} duplicate rows > {q.max_duplicate_share:.2%}",
            )
        )
    if ds.target in df.columns:
        target = df[ds.target]
        if target.isna().any():
            found.append(
                Violation(column=ds.target, rule="target_missing", detail=f"{target.isna().sum()} null label(s)")
            )
        if config.task == "regression":
            if target.nunique() <= 1:
                found.append(Violation(column=ds.target, rule="constant_target", detail="one distinct value"))
        else:
            shares = target.value_counts(normalize=True)
            if len(shares) < 2:
                found.append(Violation(column=ds.target, rule="target_balance", detail="a single class"))
            elif shares.min() < q.min_class_share:
                found.append(
                    Violation(
                        column=ds.target,
                        rule="target_balance",
                        detail=f"class {shares.idxmin()!r} is {shares.min():.1%} < {q.min_class_share:.1%}",
                    )
                )
    return found


def validate_frame(df: pd.DataFrame, config: Config, contract: Contract | None) -> list[Violation]:
    """Every violation of the config's schema, the contract (when there is one) and the quality rules."""
    violations = check_schema(df, config)
    if contract is not None:
        violations += check_contract(df, contract)
    return violations + check_quality(df, config)


def load_contract(config: Config) -> Contract | None:
    """The dataset's committed contract, or None when it has none (the config alone then applies)."""
    path = config.dataset.contract_path
    return Contract.load(path) if path.exists() else None
