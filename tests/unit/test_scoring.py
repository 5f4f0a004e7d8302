from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlops.adapters import batch_io
from mlops.config import Config
from mlops.domain import scoring
from mlops.domain.validation import ColumnContract, Contract

pytestmark = pytest.mark.unit


def _config(task: str = "binary", keys: list[str] | None = None) -> Config:
    metric = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}[task]
    return Config.model_validate(
        {
            "dataset": {
                "name": "tiny",
                "source": {"kind": "csv", "path": "tiny.csv"},
                "target": "y",
                "numeric": ["a", "b"],
                "categorical": ["c"],
                "key_columns": ["id"] if keys is None else keys,
            },
            "task": task,
            "gates": {"metric": metric},
            "tracking": {"experiment": "tiny", "model_name": "tiny"},
        }
    )


def _contract(nullable: dict[str, bool]) -> Contract:
    columns = [
        ColumnContract(name=n, kind="numeric" if n != "c" else "categorical", nullable=v, max_missing_share=0.0)
        for n, v in nullable.items()
    ]
    return Contract(dataset="tiny", inferred_from="test", rows=3, columns=columns)


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [10, 11, 12], "a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "c": ["x", "y", "x"], "y": [0, 1, 0]}
    )


@pytest.mark.parametrize(
    ("name", "kind"), [("s.csv", "csv"), ("s.CSV.gz", "csv"), ("s.parquet", "parquet"), ("s.pq", "parquet")]
)
def test_input_format_from_the_suffix(name, kind):
    assert scoring.input_format(name) == kind


def test_an_unknown_suffix_is_refused_with_the_supported_ones():
    with pytest.raises(ValueError, match=r"\.parquet"):
        scoring.input_format("scores.xlsx")


def test_schema_needs_the_model_inputs_but_not_the_target(frame):
    assert scoring.check_input_schema(frame.drop(columns=["y", "id"]), _config()) == []
    found = scoring.check_input_schema(frame.drop(columns=["a", "c"]), _config())
    assert {(v.column, v.rule) for v in found} == {("a", "missing_column"), ("c", "missing_column")}


def test_schema_accepts_a_numeric_column_read_as_text_but_not_dates(frame):
    as_text = frame.assign(b=["4", "five", "6"])
    assert scoring.check_input_schema(as_text, _config()) == []
    as_dates = frame.assign(b=pd.to_datetime(["2013-01-01"] * 3))
    assert [(v.column, v.rule) for v in scoring.check_input_schema(as_dates, _config())] == [("b", "wrong_type")]


def test_schema_refuses_an_input_with_no_rows(frame):
    assert [v.rule for v in scoring.check_input_schema(frame.iloc[:0], _config())] == ["no_rows"]


def test_screen_keeps_clean_rows_and_casts_numeric_inputs(frame):
    screened = scoring.screen_chunk(frame, _config())
    assert screened.keep.all() and screened.reasons.empty and screened.counts == {}
    assert list(screened.features.columns) == ["a", "b", "c"]
    assert screened.features["b"].dtype == "float64"
    assert frame["b"].dtype == "int64"  # the input is not changed


def test_screen_rejects_unparsable_infinite_and_forbidden_null_values_with_reasons():
    chunk = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5],
            "a": ["1.5", "oops", "inf", None, " 2 "],
            "b": [1.0, 2.0, 3.0, None, np.nan],
            "c": ["x", None, "y", "x", "y"],
        },
        index=pd.RangeIndex(100, 105),
    )
    screened = scoring.screen_chunk(
        chunk, _config(), scoring.non_nullable_columns(_config(), _contract({"a": True, "b": False, "c": False}))
    )
    assert screened.keep.tolist() == [True, False, False, False, False]
    assert screened.reasons.to_dict() == {
        101: "non_numeric: a; not_nullable: c",
        102: "non_finite: a",
        103: "not_nullable: b",
        104: "not_nullable: b",
    }
    assert screened.counts == {"non_numeric: a": 1, "non_finite: a": 1, "not_nullable: b": 2, "not_nullable: c": 1}
    assert screened.features["a"].tolist() == [1.5] and screened.features.index.tolist() == [100]


def test_nulls_are_scorable_without_a_contract():
    chunk = pd.DataFrame({"a": [None, 1.0], "b": [1, 2], "c": [None, "x"]})
    assert scoring.screen_chunk(chunk, _config(), scoring.non_nullable_columns(_config(), None)).keep.all()


def test_the_model_is_probed_for_the_columns_it_cannot_take_a_null_in():
    config = _config()
    assert scoring.null_intolerant_columns(_model(config), config) == {"a", "b"}  # one-hot ignores a null category

    class Tolerant:
        classes_ = np.array([0, 1])

        def predict_proba(self, X):
            return np.full((len(X), 2), 0.5)

    assert scoring.null_intolerant_columns(Tolerant(), config) == frozenset()


def test_tally_adds_chunks_and_reasons():
    first = scoring.Screened(
        pd.DataFrame(), np.array([True, False]), pd.Series(["r"], index=[1]), {"non_numeric: a": 1}
    )
    second = scoring.Screened(
        pd.DataFrame(),
        np.array([False, False, True]),
        pd.Series(["r", "r"], index=[0, 1]),
        {"non_numeric: a": 1, "not_nullable: b": 2},
    )
    tally = scoring.Tally().plus(first).plus(second)
    assert (tally.rows_read, tally.rows_scored, tally.rows_rejected) == (5, 2, 3)
    assert tally.rejected_by_reason == {"non_numeric: a": 2, "not_nullable: b": 2}


def test_output_keys_fall_back_to_the_row_number():
    assert scoring.output_keys(["id", "a"], _config()) == ["id"]
    assert scoring.output_keys(["a"], _config()) == ["row_number"]
    assert scoring.output_keys(["id", "a"], _config(keys=["id", "t"])) == ["id", "row_number"]
    assert scoring.output_keys(["a"], _config(keys=[])) == ["row_number"]


def test_key_frame_takes_the_row_number_from_the_position_in_the_input(frame):
    chunk = frame.set_axis(pd.RangeIndex(50, 53))
    assert scoring.key_frame(chunk, ["id", "row_number"]).to_dict("list") == {
        "id": [10, 11, 12],
        "row_number": [50, 51, 52],
    }


def test_binary_predictions_carry_the_positive_probability_and_the_label():
    keys = pd.DataFrame({"id": [7, 8]}, index=[3, 9])
    out = scoring.prediction_frame(keys, np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 1]), "binary", "4")
    assert list(out.columns) == ["id", "model_version", "prediction", "probability"]
    assert out.to_dict("list") == {
        "id": [7, 8],
        "model_version": ["4", "4"],
        "prediction": [0, 1],
        "probability": [0.2, 0.7],
    }
    assert keys.index.tolist() == [3, 9] and list(keys.columns) == ["id"]


def test_multiclass_and_regression_predictions():
    keys = pd.DataFrame({"id": [1, 2]})
    multi = scoring.prediction_frame(
        keys, np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]), np.array(["a", "b", "c"]), "multiclass", "2"
    )
    assert multi["prediction"].tolist() == ["b", "a"] and multi["probability"].tolist() == [0.6, 0.5]
    reg = scoring.prediction_frame(keys, np.array([1.5, 2.5]), None, "regression", "2")
    assert list(reg.columns) == ["id", "model_version", "prediction"] and reg["prediction"].tolist() == [1.5, 2.5]


def test_an_empty_chunk_gives_an_empty_frame_with_the_same_columns():
    out = scoring.prediction_frame(
        pd.DataFrame({"id": pd.Series([], dtype="int64")}), np.empty((0, 2)), np.array([0, 1]), "binary", "1"
    )
    assert list(out.columns) == ["id", "model_version", "prediction", "probability"] and out.empty


def test_reject_frame_keeps_the_row_number_and_the_values_as_read():
    chunk = pd.DataFrame({"id": [1, 2], "a": ["oops", "1"], "b": [1.0, None], "c": ["x", "y"]}, index=[40, 41])
    out = scoring.reject_frame(chunk.loc[[40]], pd.Series(["non_numeric: a"], index=[40]), ["id"], _config())
    assert out.to_dict("list") == {
        "id": [1],
        "row_number": [40],
        "reason": ["non_numeric: a"],
        "a": ["oops"],
        "b": ["1.0"],
        "c": ["x"],
    }


def test_default_output_path_names_model_version_and_time(tmp_path):
    when = datetime(2013, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    path = scoring.default_output_path(tmp_path, "flights-delay", "3", when)
    assert path == tmp_path / "scores" / "flights-delay-v3-20130203T040506.789Z.parquet"
    assert scoring.rejects_path_for(path).name == "flights-delay-v3-20130203T040506.789Z.rejects.parquet"


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_chunks_cover_the_file_in_order_with_their_positions(tmp_path, frame, suffix):
    path = tmp_path / f"in.{suffix}"
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path, index=False)
    chunks = list(batch_io.iter_chunks(path, 2, ["id", "a"]))
    assert [len(c) for c in chunks] == [2, 1]
    assert [c.index.tolist() for c in chunks] == [[0, 1], [2]]
    assert sorted(chunks[0].columns) == ["a", "id"]
    assert batch_io.read_columns(path) == list(frame.columns)
    assert len(batch_io.read_sample(path, rows=2)) == 2


# A tiny fitted model on the tiny frame: the file-level behaviour without MLflow.


def _model(config: Config) -> Pipeline:
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60), "c": rng.choice(["x", "y"], 60)})
    y = (train["a"] + rng.normal(scale=0.5, size=60) > 0).astype(int)
    features = ColumnTransformer(
        [("n", "passthrough", ["a", "b"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["c"])]
    )
    return Pipeline([("features", features), ("estimator", LogisticRegression())]).fit(train, y)


def _input(n: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "id": np.arange(100, 100 + n),
            "a": rng.normal(size=n).round(3),
            "b": rng.normal(size=n).round(3),
            "c": rng.choice(["x", "y"], n),
        }
    )


def test_score_file_scores_in_chunks_and_writes_rejects_beside_the_output(tmp_path):
    config = _config()
    model = _model(config)
    df = _input().astype({"a": object})
    df.loc[2, "a"] = "abc"
    df.loc[5, "b"] = None  # a linear model without an imputer cannot take a null: probed, rejected
    df.to_csv(tmp_path / "in.csv", index=False)
    reports = []
    result = batch_io.score_file(
        tmp_path / "in.csv",
        model,
        config,
        version="5",
        output=tmp_path / "out" / "p.parquet",
        chunk_rows=3,
        progress=reports.append,
    )
    out, rejects = pd.read_parquet(result.output_path), pd.read_parquet(result.rejects_path)
    assert [r.rows for r in reports] == [3, 3, 1] and reports[-1].total == result.tally
    assert (result.tally.rows_read, result.tally.rows_scored, result.tally.rows_rejected) == (7, 5, 2)
    assert result.tally.rejected_by_reason == {"non_numeric: a": 1, "not_nullable: b": 1}
    assert pq.ParquetFile(result.output_path).metadata.num_row_groups == 3
    assert out["id"].tolist() == [100, 101, 103, 104, 106] and set(out["model_version"]) == {"5"}
    good = _input().drop(index=[2, 5])
    np.testing.assert_allclose(out["probability"], model.predict_proba(good[["a", "b", "c"]])[:, 1])
    assert out["prediction"].tolist() == model.predict(good[["a", "b", "c"]]).tolist()
    assert rejects[["id", "row_number", "reason", "a"]].to_dict("list") == {
        "id": [102, 105],
        "row_number": [2, 5],
        "reason": ["non_numeric: a", "not_nullable: b"],
        "a": ["abc", str(df.loc[5, "a"])],
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p.parquet", "p.rejects.parquet"]


def test_score_file_writes_empty_files_when_every_row_is_rejected(tmp_path):
    config = _config()
    _input(3).assign(a="bad").to_parquet(tmp_path / "in.parquet")
    result = batch_io.score_file(
        tmp_path / "in.parquet", _model(config), config, version="1", output=tmp_path / "p.parquet"
    )
    assert result.tally.rows_scored == 0 and result.tally.rows_rejected == 3
    assert pd.read_parquet(result.output_path).empty
    assert list(pd.read_parquet(result.output_path).columns) == ["id", "model_version", "prediction", "probability"]


def test_score_file_refuses_a_missing_input_column_and_writes_nothing(tmp_path):
    config = _config()
    _input().drop(columns=["b"]).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(scoring.ScoringInputError, match=r"missing column\(s\) \['b'\]"):
        batch_io.score_file(tmp_path / "in.csv", _model(config), config, version="1", output=tmp_path / "p.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_failure_mid_file_leaves_no_output(tmp_path):
    config = _config()
    _input().to_csv(tmp_path / "in.csv", index=False)

    class Flaky:
        classes_ = np.array([0, 1])

        def predict_proba(self, X):
            if X.index[0] >= 3:  # the second chunk, once the first is written
                raise RuntimeError("out of memory")
            return np.full((len(X), 2), 0.5)

    with pytest.raises(RuntimeError):
        batch_io.score_file(
            tmp_path / "in.csv", Flaky(), config, version="1", output=tmp_path / "p.parquet", chunk_rows=3
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_the_input_error_survives_pickling_with_its_violations():
    import pickle

    error = scoring.ScoringInputError("f.csv", [scoring.Violation(column="a", rule="missing_column", detail="x")])
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.violations == error.violations


def test_native_threads_are_capped_while_scoring_and_restored_after(tmp_path):
    from threadpoolctl import threadpool_info

    def openmp_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"}

    config = _config()
    _input().to_csv(tmp_path / "in.csv", index=False)
    seen: list[set[int]] = []

    class Recording:
        classes_ = np.array([0, 1])

        def predict_proba(self, X):
            seen.append(openmp_threads())
            return np.full((len(X), 2), 0.5)

    before = openmp_threads()
    assert before, "scikit-learn's OpenMP runtime should be loaded: HistGradientBoosting needs it"
    batch_io.score_file(
        tmp_path / "in.csv", Recording(), config, version="1", output=tmp_path / "p.parquet", native_threads=1
    )
    assert seen[-1] == {1} and openmp_threads() == before
