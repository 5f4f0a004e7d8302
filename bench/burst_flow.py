"""A light flow for bench/scaling.py's burst: a few task runs, each a state write or two on the API."""

from __future__ import annotations

from prefect import flow, task


@task
def step(i: int, j: int) -> int:
    return i * j


@flow(name="bench-burst")
def burst(i: int = 0) -> int:
    return sum(step.map(i, list(range(5))).result())
