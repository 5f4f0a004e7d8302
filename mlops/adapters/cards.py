"""Model cards in MLflow: each version's card is its description and its training run's `model_card.md`.

The text is made by `mlops.render.model_card` (CT) and `render.with_delivery` (CD's decision); this
module only stores and reads it. No Prefect here.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from mlops.adapters.model_files import read_run_artifact
from mlops.adapters.registry import VersionRef

MODEL_CARD = "model_card.md"  # in the version's run; its description holds the card too (shortened past the limit)
DESCRIPTION_LIMIT = 5000  # characters MLflow's SQL store keeps in a model version's description


def set_model_card(client: MlflowClient, name: str, version: str, run_id: str, card: str) -> None:
    """Store the card as the run's `MODEL_CARD` artifact and as the version's description."""
    client.log_text(run_id, card, MODEL_CARD)
    description = card
    if len(card) > DESCRIPTION_LIMIT:
        note = f"\n\n(Shortened: the whole card is the training run's artifact `{MODEL_CARD}`.)\n"
        description = card[: DESCRIPTION_LIMIT - len(note)].rsplit("\n", 1)[0] + note
    client.update_model_version(name, version, description=description)


def model_card(client: MlflowClient, ref: VersionRef) -> str | None:
    """The version's whole card (its run's `MODEL_CARD`), or None for a version registered without one."""
    found = read_run_artifact(client, ref.run_id, MODEL_CARD) if ref.run_id else None
    return None if found is None else found.decode()
