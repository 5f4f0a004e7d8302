import math

import numpy as np
import pandas as pd
import pytest

from mlops.domain.evaluation import compute_metrics, evaluate

pytestmark = pytest.mark.unit


def test_binary_metrics_on_a_perfect_and_a_useless_model():
    y = np.array([0, 0, 1, 1])
    perfect = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    useless = np.full((4, 2), 0.5)
    classes = np.array([0, 1])
    good, bad = compute_metrics("binary", y, perfect, classes), compute_metrics("binary", y, useless, classes)
    assert good["roc_auc"] == 1.0 and good["f1"] == 1.0
    assert bad["roc_auc"] == 0.5
    assert good["log_loss"] < bad["log_loss"]


def test_metric_is_nan_when_a_segment_has_one_class():
    result = compute_metrics("binary", np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]), np.array([0, 1]))
    assert math.isnan(result["roc_auc"])


def test_regression_and_multiclass_metrics():
    reg = compute_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), None)
    assert reg["mae"] == pytest.approx(1 / 3) and reg["rmse"] == pytest.approx(math.sqrt(1 / 3))
    multi = compute_metrics("multiclass", np.array(["a", "b", "c"]), np.eye(3), np.array(["a", "b", "c"]))
    assert multi["accuracy"] == 1.0 and multi["macro_f1"] == 1.0


def test_evaluate_breaks_metrics_down_by_segment(flights_config):
    df = pd.DataFrame({"arr_delayed": [0, 1, 0, 1], "carrier": ["AA", "AA", "UA", "UA"], "origin": ["JFK"] * 4})
    outputs = np.array([[0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.8, 0.2]])
    result = evaluate(df, outputs, np.array([0, 1]), flights_config)
    assert result.segment("carrier", "AA").metrics["roc_auc"] == 1.0
    assert result.segment("carrier", "UA").metrics["roc_auc"] == 0.0
    assert result.segment("origin", "JFK").rows == 4
