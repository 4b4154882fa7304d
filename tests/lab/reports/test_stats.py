import math

import pytest
from scipy import stats

from reglab.lab.reports.stats import mean_ci, paired_test, summarize


def test_mean_ci_closed_form():
    est = mean_ci([1.0, 2.0, 3.0])
    assert est.mean == 2.0 and est.n == 3
    assert est.half_width == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, 2)
    assert est.format() == "2.000 ± 2.484"


def test_mean_ci_single_and_empty():
    assert mean_ci([0.5]).format() == "0.500"
    assert mean_ci([]).format() == "-"
    assert mean_ci([float("nan"), 1.0]).n == 1


def test_paired_test_equals_scipy_ttest_rel():
    a = {0: 0.81, 1: 0.79, 2: 0.84, 3: 0.80}
    b = {0: 0.75, 1: 0.77, 2: 0.78, 3: 0.76}
    result = paired_test(a, b)
    expected = stats.ttest_rel(list(a.values()), list(b.values()))
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.diff.mean == pytest.approx(0.045)
    assert result.significant


def test_paired_test_uses_only_common_finite_seeds():
    result = paired_test({0: 1.0, 1: 2.0, 2: float("nan")}, {0: 0.0, 1: 0.5, 3: 9.0})
    assert result.diff.n == 2 and result.diff.mean == pytest.approx(1.25)
    assert math.isnan(paired_test({0: 1.0}, {0: 0.0}).p_value)
    assert paired_test({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0}).p_value == 1.0


def test_summarize_leaves_failed_trials_out_and_compares_to_baseline():
    trials = [
        {"recipe": "baseline", "seed": 0, "ok": True, "acc": 0.70},
        {"recipe": "baseline", "seed": 1, "ok": True, "acc": 0.72},
        {"recipe": "l2", "seed": 0, "ok": True, "acc": 0.75},
        {"recipe": "l2", "seed": 1, "ok": False, "acc": float("nan")},
    ]
    rows = summarize(trials, ["acc"], ["acc"])
    assert [r.recipe for r in rows] == ["baseline", "l2"]
    assert rows[1].n_ok == 1 and rows[1].n_trials == 2
    assert rows[1].versus_baseline["acc"].diff.mean == pytest.approx(0.05)
    assert rows[0].versus_baseline == {}
