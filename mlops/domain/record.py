"""The base of every typed result the loop passes between steps: an immutable pydantic model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """Frozen, so a result handed to the next step (or pickled by Prefect) cannot change on the way."""

    model_config = ConfigDict(frozen=True)
