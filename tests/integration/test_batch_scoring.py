"""The batch-scoring flow in-process: a small registered champion scores a window and files, in chunks."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from flows.batch_scoring import batch_scoring
from mlops.adapters import batch_io, model_files, registry, sources
from mlops.adapters.batch_io import ModelNotFoundError
from mlops.config import DEFAULT_CONFIG
from mlops.domain import data, modeling
from mlops.domain.scoring import ScoringInputError
from mlops.domain.window import Window
from tests.integration.conftest import read_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]

KEYS = ["time_hour", "carrier", "flight", "origin"]
OUTPUTS = ["model_version", "prediction", "probability"]


@pytest.fixture(scope="module")
def months(flights_config) -> dict[str, pd.DataFrame]:
    """January and February 2013, cut from one load of the default dataset."""
    full = sources.load_source(flights_config)
    cut = {}
    for name, as_of in [("january", "2013-02-01"), ("february", "2013-03-01")]:
        cut[name] = data.select_columns(Window.ending(as_of, 1).cut(full, "time_hour"), flights_config)
    return cut


@pytest.fixture(scope="module")
def february(months) -> pd.DataFrame:
    return months["february"]


@pytest.fixture
def champion(isolated, monkeypatch, flights_config, months):
    """A small booster trained on January, logged and registered as version 1 with the `champion` alias."""
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    X, y = modeling.features_and_target(months["january"], flights_config)
    preprocessor = modeling.build_preprocessor(flights_config).fit(X)
    estimator = modeling.fit_estimator(flights_config, {"max_iter": 30}, preprocessor.transform(X), y.to_numpy())
    model = modeling.assemble_model(preprocessor, estimator)
    client = registry.connect(flights_config)
    with mlflow.start_run() as run:
        uri = model_files.log_model(model, X.head(200), model.predict_proba(X.head(200)), flights_config)
    version = registry.register(client, uri, run.info.run_id, flights_config, {"trigger_reason": "test"})
    client.set_registered_model_alias("flights-delay", registry.CHAMPION, version)
    return mlflow.sklearn.load_model(f"models:/flights-delay/{version}")


def test_scores_a_window_of_the_source_with_the_champion(champion, february, isolated):
    state = batch_scoring(as_of=date(2013, 3, 1), window_months=1, chunk_rows=10_000, return_state=True)
    result = state.result()
    assert (result["version"], result["input"]) == ("1", "window 2013-02-01..2013-03-01")
    assert result["rows_read"] == result["rows_scored"] == len(february) and result["rows_rejected"] == 0
    assert result["chunks"] == -(-len(february) // 10_000)

    [output] = (isolated / "state" / "scores").glob("flights-delay-v1-*Z.parquet")
    assert result["output_path"] == str(output)
    scores = pd.read_parquet(output)
    assert list(scores.columns) == KEYS + OUTPUTS
    assert set(scores["model_version"]) == {"1"}
    pd.testing.assert_frame_equal(scores[KEYS], february[KEYS].reset_index(drop=True))
    offline = champion.predict_proba(february[champion.feature_names_in_])
    np.testing.assert_allclose(scores["probability"], offline[:, 1], rtol=1e-12)
    assert (scores["prediction"] == champion.classes_[offline.argmax(axis=1)]).all()
    assert pd.read_parquet(result["rejects_path"]).empty
    assert not any((isolated / "state" / "runs").iterdir())  # the window and the downloaded model are cleaned up

    report = read_artifacts(state.state_details.flow_run_id)["batch-scoring"]
    assert f"| rows scored | {len(february):,} |" in report and "version **1**" in report and "| rows/s |" in report


def test_the_champion_moving_mid_run_changes_nothing_for_the_run(
    champion, february, isolated, flights_config, months, monkeypatch
):
    # CD promotes v2 while the run scores: every row is still scored by the version the run pinned, once.
    X, y = modeling.features_and_target(months["january"], flights_config)
    preprocessor = modeling.build_preprocessor(flights_config).fit(X)
    other = modeling.assemble_model(
        preprocessor, modeling.fit_estimator(flights_config, {"max_iter": 3}, preprocessor.transform(X), y.to_numpy())
    )
    client = registry.connect(flights_config)
    with mlflow.start_run() as run:
        uri = model_files.log_model(other, X.head(200), other.predict_proba(X.head(200)), flights_config)
    v2 = registry.register(client, uri, run.info.run_id, flights_config, {"trigger_reason": "test"})
    real_score_file = batch_io.score_file
    moved: list[int] = []

    def promote_during_the_first_chunk(*args, progress=None, **kwargs):
        def then_promote(chunk):
            if not moved:
                client.set_registered_model_alias("flights-delay", registry.CHAMPION, v2)  # as CD's promote does
                moved.append(chunk.number)
            progress(chunk)

        return real_score_file(*args, progress=then_promote, **kwargs)

    monkeypatch.setattr(batch_io, "score_file", promote_during_the_first_chunk)
    result = batch_scoring(as_of=date(2013, 3, 1), window_months=1, chunk_rows=5_000)

    assert moved == [1] and result["chunks"] > 1, (moved, result["chunks"])
    assert str(client.get_model_version_by_alias("flights-delay", registry.CHAMPION).version) == v2
    scores = pd.read_parquet(result["output_path"])
    assert result["version"] == "1" and "-v1-" in Path(result["output_path"]).name
    assert len(scores) == len(february) and set(scores["model_version"]) == {"1"}
    np.testing.assert_allclose(
        scores["probability"], champion.predict_proba(february[champion.feature_names_in_])[:, 1], rtol=1e-12
    )


def test_scores_a_csv_rejecting_the_rows_it_cannot_score(champion, february, isolated):
    clean = february.head(2_000).drop(columns=["arr_delayed"]).reset_index(drop=True)
    broken = clean.astype({"distance": object, "hour": object, "temp": object})
    broken.loc[[10, 40], "distance"] = "abc"
    broken.loc[11, "distance"] = "12 miles"
    broken.loc[20, "hour"] = None  # the contract says hour is never null
    broken.loc[30, "temp"] = np.inf
    broken.loc[40, "carrier"] = None  # nor carrier: row 40 breaks two rules
    broken.loc[1_600, "hour"] = "x"
    broken.to_csv(isolated / "flights.csv", index=False)
    output = isolated / "out" / "february.parquet"

    state = batch_scoring(
        input_path=str(isolated / "flights.csv"),
        version="1",
        output_path=str(output),
        chunk_rows=500,
        return_state=True,
    )
    result = state.result()
    assert (result["rows_read"], result["rows_scored"], result["rows_rejected"], result["chunks"]) == (
        2_000,
        1_994,
        6,
        4,
    )
    assert result["rejected_by_reason"] == {
        "non_finite: temp": 1,
        "non_numeric: distance": 3,
        "non_numeric: hour": 1,
        "not_nullable: carrier": 1,
        "not_nullable: hour": 1,
    }
    rejects = pd.read_parquet(output.with_name("february.rejects.parquet"))
    assert rejects["row_number"].tolist() == [10, 11, 20, 30, 40, 1_600]
    assert rejects.set_index("row_number")["reason"].to_dict() == {
        10: "non_numeric: distance",
        11: "non_numeric: distance",
        20: "not_nullable: hour",
        30: "non_finite: temp",
        40: "non_numeric: distance; not_nullable: carrier",
        1_600: "non_numeric: hour",
    }
    assert rejects.loc[1, "distance"] == "12 miles"

    scores = pd.read_parquet(output)
    assert list(scores.columns) == KEYS + OUTPUTS
    scored = clean.drop(index=rejects["row_number"])
    assert scores["flight"].tolist() == scored["flight"].tolist()
    assert scores["carrier"].tolist() == scored["carrier"].tolist()
    offline = champion.predict_proba(scored[champion.feature_names_in_])
    np.testing.assert_allclose(scores["probability"], offline[:, 1], rtol=1e-12)
    assert scores["prediction"].tolist() == champion.predict(scored[champion.feature_names_in_]).tolist()

    report = read_artifacts(state.state_details.flow_run_id)["batch-scoring"]
    assert "| rows rejected | 6 |" in report and "| `non_numeric: distance` | 3 |" in report

    # The same rows as Parquet without the `flight` key: the row number identifies each prediction.
    clean.drop(columns=["flight"]).to_parquet(isolated / "flights.parquet")
    again = batch_scoring(
        input_path=str(isolated / "flights.parquet"), chunk_rows=300, output_path=str(isolated / "p.parquet")
    )
    by_row = pd.read_parquet(again["output_path"])
    assert list(by_row.columns) == ["time_hour", "carrier", "origin", "row_number", *OUTPUTS]
    assert again["rows_rejected"] == 0 and by_row["row_number"].tolist() == list(range(2_000))
    np.testing.assert_allclose(by_row["probability"].iloc[scored.index], scores["probability"], rtol=1e-12)


def test_an_input_missing_a_model_column_fails_up_front_and_writes_nothing(champion, february, isolated):
    february.drop(columns=["distance", "seats"]).head(100).to_csv(isolated / "partial.csv", index=False)
    output = isolated / "out" / "never.parquet"
    state = batch_scoring(input_path=str(isolated / "partial.csv"), output_path=str(output), return_state=True)
    assert state.is_failed()
    with pytest.raises(ScoringInputError, match=r"missing column\(s\) \['distance', 'seats'\]"):
        state.result()
    assert not (isolated / "out").exists() and not (isolated / "state" / "scores").exists()
    assert "`distance` | missing_column" in read_artifacts(state.state_details.flow_run_id)["scoring-input"]


def test_without_a_champion_the_run_fails_at_once_naming_the_alias(isolated, monkeypatch, february):
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    february.head(50).to_parquet(isolated / "few.parquet")
    state = batch_scoring(input_path=str(isolated / "few.parquet"), return_state=True)
    with pytest.raises(ModelNotFoundError, match="@champion"):
        state.result()


def test_a_file_and_a_window_at_once_is_refused(isolated):
    with pytest.raises(ValueError, match="not both"):
        batch_scoring(input_path="x.csv", as_of=date(2013, 3, 1))


@pytest.mark.parametrize("kind", ["empty_file", "truncated_file", "unreadable_file"])
def test_a_damaged_input_file_is_refused_up_front_and_nothing_is_written(kind, champion, february, isolated):
    name = "damaged.parquet" if kind == "unreadable_file" else "damaged.csv"
    path = isolated / name
    if kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "truncated_file":
        text = february.head(200).to_csv(index=False)
        path.write_text(text[: len(text) // 2])
    else:
        february.head(200).to_parquet(path)
        path.write_bytes(path.read_bytes()[:-100])  # the footer is gone: a copy cut short
    output = isolated / "out" / "never.parquet"
    state = batch_scoring(input_path=str(path), output_path=str(output), return_state=True)
    assert state.is_failed()
    with pytest.raises(ScoringInputError) as err:
        state.result()
    assert kind in {v.rule for v in err.value.violations}
    assert not (isolated / "out").exists() and not (isolated / "state" / "scores").exists()
    assert kind in read_artifacts(state.state_details.flow_run_id)["scoring-input"]


@pytest.fixture
def small_disk(tmp_path):
    """A 128 KiB tmpfs (this suite runs as root, as CI does); unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs to fill a disk (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_disk_that_fills_up_fails_cleanly_and_leaves_no_output_that_looks_complete(
    champion, february, isolated, small_disk
):
    february.to_parquet(isolated / "february.parquet")  # its predictions need more than the 128 KiB disk holds
    output = small_disk / "scores.parquet"
    state = batch_scoring(
        input_path=str(isolated / "february.parquet"), output_path=str(output), chunk_rows=2_000, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(OSError, match="No space left"):
        state.result()
    assert list(small_disk.iterdir()) == []  # neither the output, its rejects, nor a partial file
