"""The compiled prediction path reproduces the registered model on real rows, or is not used."""

from __future__ import annotations

import gc
import json
import stat

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops.adapters import model_files, registry
from mlops.domain import modeling
from mlops.serving import compiled as compiled_path
from mlops.serving import forest_cache
from mlops.serving.model import load_served_model, split_predictions, verification_rows
from mlops.serving.schema import parse_request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def flights(flights_month, flights_config):
    """Features and target of January 2013: the first 20 days to train, the rest as holdout."""
    X, y = modeling.features_and_target(flights_month, flights_config)
    cut = int(len(X) * 0.65)
    return X.iloc[:cut], y.iloc[:cut], X.iloc[cut:].reset_index(drop=True)


def fit(config, X, y, **params):
    preprocessor = modeling.build_preprocessor(config).fit(X)
    estimator = modeling.fit_estimator(config, {"max_iter": 40, **params}, preprocessor.transform(X), y.to_numpy())
    return modeling.assemble_model(preprocessor, estimator)


@pytest.fixture(scope="module")
def booster(flights, flights_config):
    X, y, _ = flights
    return fit(flights_config, X, y)


def served_columns(model, X):
    """The service's columns for `model`, as it derives them from the logged signature."""
    from mlflow.models import infer_signature

    from mlops.serving.model import columns_from_signature, probe_nullable

    # numeric inputs as model_files.log_model declares them
    example = X.head(100).astype(dict.fromkeys(X.select_dtypes("number").columns, "float64"))
    schema = infer_signature(example, model.predict_proba(example)).inputs
    return probe_nullable(columns_from_signature(schema), model.predict_proba)


def test_the_default_pipeline_compiles_and_equals_predict_proba_on_the_holdout(booster, flights):
    _, _, holdout = flights
    columns = served_columns(booster, holdout)
    predictor, note = compiled_path.compile_for_serving(
        booster, "predict_proba", columns, booster.predict_proba, holdout, "holdout"
    )
    assert predictor is not None, note
    # This machine has gcc (CI's image too): the trees run as a C library, or the note says why not.
    assert predictor.engine == "tl2cgen", note
    assert note.startswith(f"verified on {len(holdout)} holdout rows") and "tl2cgen C library (" in note
    interpreted, gtil_note = compiled_path.compile_for_serving(
        booster, "predict_proba", columns, booster.predict_proba, holdout, "holdout", native=False
    )
    assert interpreted is not None and interpreted.engine == "gtil", gtil_note
    assert "native off" in gtil_note
    expected = booster.predict_proba(holdout)
    # Unknown and missing categories and missing numbers take the booster's missing-value branch.
    odd = holdout.head(3).copy()
    odd.loc[0, "carrier"], odd.loc[1, "origin"], odd.loc[2, "temp"] = "ZZ", None, np.nan
    for engine in (predictor, interpreted):
        got = engine.predict([compiled_path.rows_of(holdout, columns)])
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= compiled_path.TOLERANCE, engine.engine
        got = engine.predict([compiled_path.rows_of(odd, columns)])
        assert np.abs(got - booster.predict_proba(odd)).max() <= compiled_path.TOLERANCE, engine.engine


def test_a_c_library_that_differs_from_the_model_is_not_used_and_gtil_serves(
    booster, flights, flights_config, monkeypatch
):
    """The C library is checked like the rest: one built from another model is refused, GTIL serves."""
    X, y, holdout = flights
    columns = served_columns(booster, holdout)
    other = compiled_path.compile_pipeline(fit(flights_config, X, y, max_iter=41), "predict_proba", columns)
    wrong, _ = compiled_path.native_library(other.forest)
    assert wrong is not None
    monkeypatch.setattr(compiled_path, "native_library", lambda forest: (wrong, "built from another model"))
    predictor, note = compiled_path.compile_for_serving(
        booster, "predict_proba", columns, booster.predict_proba, holdout, "holdout"
    )
    assert predictor is not None and predictor.engine == "gtil", note
    assert "not tl2cgen: its C library differs: max |difference|" in note
    got = predictor.predict([compiled_path.rows_of(holdout, columns)])
    assert np.abs(got - booster.predict_proba(holdout)).max() <= compiled_path.TOLERANCE


def test_a_forest_is_built_once_per_machine_and_a_cached_library_is_verified_like_a_new_one(
    booster, flights, flights_config, tmp_path, monkeypatch
):
    """The per-user cache: a hit loads without a build; a truncated entry and one of another model are built again."""
    _, _, holdout = flights
    columns = served_columns(booster, holdout)
    monkeypatch.setenv(forest_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))

    def serve() -> str:
        predictor, note = compiled_path.compile_for_serving(
            booster, "predict_proba", columns, booster.predict_proba, holdout, "holdout"
        )
        assert predictor is not None and predictor.engine == "tl2cgen", note
        got = predictor.predict([compiled_path.rows_of(holdout, columns)])
        assert np.abs(got - booster.predict_proba(holdout)).max() <= compiled_path.TOLERANCE
        # Unloaded before the next: a process that still holds a library gets that one from dlopen by its path.
        del predictor
        gc.collect()
        return note

    built = serve()
    assert "built by" in built and "cached in" in built, built
    directory = forest_cache.cache_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    [entry] = directory.glob("*.so")
    assert not [p for p in directory.iterdir() if p.is_dir()], "the build's temp dir is left behind"
    hit = serve()
    assert compiled_path.CACHED in hit, hit
    assert float(hit.split(" in ")[1].split(" s")[0]) < 1.0, hit  # the load, not a build

    # A short file would crash the process that loads it (SIGBUS): its digest stops it before dlopen.
    truncated = tmp_path / "truncated.so"
    truncated.write_bytes(entry.read_bytes()[:4096])
    truncated.replace(entry)
    assert "built by" in serve()

    # An intact entry of another model under this forest's key (a stale compiler, a collision): it loads, and differs.
    X, y, _ = flights
    other = compiled_path.compile_pipeline(fit(flights_config, X, y, max_iter=41), "predict_proba", columns)
    assert compiled_path.native_library(other.forest)[0] is not None
    gc.collect()
    [other_entry] = set(directory.glob("*.so")) - {entry}
    for suffix in (".sha256", ".so"):
        other_entry.with_suffix(suffix).replace(entry.with_suffix(suffix))
    assert "built by" in serve()
    assert len(list(directory.glob("*.so"))) == 1


def test_a_cache_directory_others_can_write_is_not_used(booster, flights, tmp_path, monkeypatch):
    _, _, holdout = flights
    monkeypatch.setenv(forest_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    forest_cache.cache_dir().mkdir(parents=True)
    forest_cache.cache_dir().chmod(0o777)
    columns = served_columns(booster, holdout)
    predictor, note = compiled_path.compile_for_serving(
        booster, "predict_proba", columns, booster.predict_proba, holdout, "holdout"
    )
    assert predictor is not None and predictor.engine == "tl2cgen", note
    assert "not a 0700 directory of this user" in note, note
    assert list(forest_cache.cache_dir().iterdir()) == []  # nothing written where others could swap it


def test_requests_parsed_from_json_score_as_the_model_does(booster, flights):
    _, _, holdout = flights
    columns = served_columns(booster, holdout)
    predictor = compiled_path.compile_pipeline(booster, "predict_proba", columns)
    sample = holdout.sample(40, random_state=1)
    rows = sample.astype(object).where(sample.notna(), None).values.tolist()
    bodies = [
        json.dumps({"dataframe_split": {"columns": list(sample.columns), "data": rows[i : i + 4]}})
        for i in range(0, 40, 4)
    ]
    batch = [parse_request(body, columns) for body in bodies]
    answers = [json.loads(b)["predictions"] for b in split_predictions(predictor.predict(batch), [4] * 10)]
    expected = booster.predict_proba(sample)
    assert np.abs(np.array([p for answer in answers for p in answer]) - expected).max() <= compiled_path.TOLERANCE


def test_a_pipeline_it_cannot_compile_is_served_by_sklearn(flights, flights_config):
    X, y, holdout = flights
    linear = flights_config.model_copy(
        update={
            "training": flights_config.training.model_copy(update={"estimator": "linear", "params": {"max_iter": 200}})
        }
    )
    model = fit(linear, X, y, max_iter=200)
    columns = served_columns(model, holdout)
    predictor, note = compiled_path.compile_for_serving(
        model, "predict_proba", columns, model.predict_proba, holdout, "holdout"
    )
    assert predictor is None
    assert note.startswith("not compiled:") and "LogisticRegression" in note


def test_a_compiled_predictor_that_differs_from_the_model_is_not_used(booster, flights, flights_config):
    """The check is real: against another model's predictions the compiled predictor is refused."""
    X, y, holdout = flights
    other = fit(flights_config, X, y, max_iter=41)
    columns = served_columns(booster, holdout)
    predictor, note = compiled_path.compile_for_serving(
        booster, "predict_proba", columns, other.predict_proba, holdout, "holdout"
    )
    assert predictor is None
    assert note.startswith(f"compiled but not used: on {len(holdout)} holdout rows, max |difference|")


def test_the_service_serves_the_compiled_path_of_a_version_ct_logged(booster, flights, flights_config, isolated):
    """model_files.log_model stores the verification rows; the service checks on them and says which path."""
    _, _, holdout = flights
    sample = holdout.sample(500, random_state=0)
    client = registry.connect(flights_config)
    with mlflow.start_run() as run:
        uri = model_files.log_model(booster, sample, booster.predict_proba(sample), flights_config)
    version = registry.register(client, uri, run.info.run_id, flights_config, {"trigger_reason": "test"})

    served = load_served_model(f"models:/flights-delay/{version}")
    assert served.path == "compiled", served.path_note
    assert served.describe()["prediction_path_note"].startswith("verified on 500 holdout rows")
    assert served.describe()["prediction_engine"] == "tl2cgen", served.path_note
    rows = compiled_path.rows_of(holdout.head(50), served.columns)
    answer = np.array(json.loads(served.predict([rows])[0])["predictions"])
    assert np.abs(answer - booster.predict_proba(holdout.head(50))).max() <= compiled_path.TOLERANCE

    off = load_served_model(f"models:/flights-delay/{version}", compiled=False)
    assert (off.path, off.compiled) == ("sklearn", None)
    assert np.abs(np.array(json.loads(off.predict([rows])[0])["predictions"]) - answer).max() <= compiled_path.TOLERANCE


def test_verification_rows_fall_back_to_the_input_example(booster, flights, flights_config, isolated):
    """A model logged outside CT (no verification rows) is checked on its input example."""
    import mlflow.sklearn

    _, _, holdout = flights
    registry.connect(flights_config)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            booster,
            name="model",
            serialization_format="skops",
            skops_trusted_types=model_files.TRUSTED_TYPES,
            input_example=holdout.head(20).astype(dict.fromkeys(holdout.select_dtypes("number").columns, "float64")),
        )
    source, rows = verification_rows(mlflow.pyfunc.load_model(info.model_uri))
    assert source == "input-example" and len(rows) == 20
    assert isinstance(rows, pd.DataFrame)


def splits_on_categories(booster) -> bool:
    """Whether any tree of a LightGBM or XGBoost booster splits on category sets (not on code order)."""
    if hasattr(booster, "booster_"):
        return '"decision_type": "=="' in json.dumps(booster.booster_.dump_model())
    trees = json.loads(booster.get_booster().save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    return any(tree["categories_nodes"] for tree in trees)


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("lightgbm.LGBMClassifier", {"n_estimators": 40, "random_state": 1}),
        ("xgboost.XGBClassifier", {"n_estimators": 40, "max_depth": 4}),
    ],
)
def test_lightgbm_and_xgboost_split_on_categories_and_serve_compiled(estimator, params, flights, flights_config):
    config = flights_config.model_copy(
        update={"training": flights_config.training.model_copy(update={"estimator": estimator, "params": {}})}
    )
    X, y, holdout = flights
    preprocessor = modeling.build_preprocessor(config).fit(X)
    booster = modeling.fit_estimator(config, params, preprocessor.transform(X), y.to_numpy())
    model = modeling.assemble_model(preprocessor, booster)
    assert splits_on_categories(booster)  # told which columns hold category codes, not one-hot columns

    columns = served_columns(model, holdout)
    predictor, note = compiled_path.compile_for_serving(
        model, "predict_proba", columns, model.predict_proba, holdout, "holdout"
    )
    assert predictor is not None and predictor.engine == "tl2cgen", note
    expected = model.predict_proba(holdout)
    got = predictor.predict([compiled_path.rows_of(holdout, columns)])
    # LightGBM computes in float64: the 1e-9 bound; XGBoost in float32: within a few of its ulps, as the note says.
    if expected.dtype == np.float32:
        assert "float32 model: 8 ulps" in note
        np.testing.assert_allclose(got, expected, rtol=0, atol=8 * np.finfo(np.float32).eps)
    else:
        assert "bound 1e-09" in note
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
