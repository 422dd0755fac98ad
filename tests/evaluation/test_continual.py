"""Continual-learning summaries by hand, including the study's own figures."""
import pytest

from codecl.evaluation.continual import bwt, final_average, forgetting, fwt

TASKS = ["python", "javascript"]


def test_study_lora_forgetting():
    # the design study, LoRA-only: Python 0.2166 after its stage, 0.2150 at the end.
    R = [[0.0038, 0.0196], [0.2166, 0.05], [0.2150, 0.2489]]
    assert forgetting(R, TASKS) == {"python": pytest.approx(0.0016 / 0.2166)}
    assert forgetting(R, TASKS)["python"] == pytest.approx(0.0074, abs=5e-5)  # study prints 0.78% from unrounded scores


def test_study_full_layer_negative_forgetting():
    # Full layer: 0.1927 -> 0.2046, the study's "-6.20%" (negative = improved); the rounded
    # scores give -0.0618.
    R = [[0.0038, 0.0196], [0.1927, 0.03], [0.2046, 0.2147]]
    value = forgetting(R, TASKS)["python"]
    assert value == pytest.approx((0.1927 - 0.2046) / 0.1927)
    assert value == pytest.approx(-0.0618, abs=5e-5)


def test_two_task_bwt_fwt_final_average():
    R = [[0.0038, 0.0196], [0.2166, 0.05], [0.2150, 0.2489]]
    assert bwt(R) == pytest.approx(0.2150 - 0.2166)
    assert fwt(R) == pytest.approx(0.05 - 0.0196)  # JS just before its stage minus base
    assert final_average(R) == pytest.approx((0.2150 + 0.2489) / 2)


def test_three_tasks_by_hand():
    R = [
        [0.1, 0.2, 0.3],  # base
        [0.5, 0.25, 0.35],  # after task 0
        [0.4, 0.6, 0.32],  # after task 1
        [0.45, 0.3, 0.7],  # after task 2
    ]
    tasks = ["python", "javascript", "java"]
    assert forgetting(R, tasks) == {"python": pytest.approx((0.5 - 0.45) / 0.5), "javascript": pytest.approx((0.6 - 0.3) / 0.6)}
    assert bwt(R) == pytest.approx(((0.45 - 0.5) + (0.3 - 0.6)) / 2)
    assert fwt(R) == pytest.approx(((0.25 - 0.2) + (0.32 - 0.3)) / 2)
    assert final_average(R) == pytest.approx((0.45 + 0.3 + 0.7) / 3)


def test_incomplete_runs_use_their_last_stage():
    only_base = [[0.1, 0.2, 0.3]]
    assert forgetting(only_base, ["a", "b", "c"]) == {}
    assert bwt(only_base) is None and fwt(only_base) is None
    assert final_average(only_base) == pytest.approx(0.2)
    one_stage = [[0.1, 0.2, 0.3], [0.5, 0.25, 0.35]]
    assert forgetting(one_stage, ["a", "b", "c"]) == {}
    assert bwt(one_stage) is None and fwt(one_stage) is None
    two_stages = [[0.1, 0.2, 0.3], [0.5, 0.25, 0.35], [0.4, 0.6, 0.32]]
    assert forgetting(two_stages, ["a", "b", "c"]) == {"a": pytest.approx(0.2)}
    assert bwt(two_stages) == pytest.approx(-0.1)
    assert fwt(two_stages) == pytest.approx(0.05)


def test_zero_score_and_missing_cells_are_undefined():
    assert forgetting([[0.0, 0.0], [0.0, 0.1], [0.2, 0.3]], TASKS) == {"python": None}
    R = [[None, 0.1], [None, 0.2], [None, 0.3]]  # e.g. pass_at_1 with no Python benchmark
    assert forgetting(R, TASKS) == {"python": None}
    assert bwt(R) is None
    assert fwt(R) == pytest.approx(0.1)
    assert final_average(R) == pytest.approx(0.3)


def test_empty_matrix_is_rejected():
    with pytest.raises(ValueError, match="no stages"):
        final_average([])
