import pytest

from src.common.config import validate_alpha_schedule
from src.train.schedule import DESIGN_ALPHA_TABLE, alpha_at, sbi_lr_lambda

TABLE_POINTS = [(1, 0.95), (5, 0.9), (10, 0.85), (15, 0.75), (20, 0.65), (21, 0.5), (100, 0.5)]


@pytest.mark.parametrize("epoch,alpha", TABLE_POINTS)
def test_design_table_points_exact(epoch, alpha):
    assert alpha_at(epoch) == alpha


@pytest.mark.parametrize("epoch,alpha", [(3, 0.925), (12, 0.81), (17, 0.71), (0, 0.95)])
def test_interpolation_and_clamping(epoch, alpha):
    assert alpha_at(epoch) == pytest.approx(alpha)


def test_rescaled_table_keeps_ends_and_shape():
    assert alpha_at(1, alpha_start=1.0, alpha_end=0.2) == pytest.approx(1.0)
    assert alpha_at(21, alpha_start=1.0, alpha_end=0.2) == pytest.approx(0.2)
    assert alpha_at(50, alpha_start=1.0, alpha_end=0.2) == pytest.approx(0.2)
    # epoch 10 is 0.10 / 0.45 of the way down the design table
    assert alpha_at(10, alpha_start=1.0, alpha_end=0.2) == pytest.approx(1.0 - 0.10 / 0.45 * 0.8)
    assert len(DESIGN_ALPHA_TABLE) == 6


def test_explicit_schedule_replaces_table():
    schedule = [[2, 1.0], [4, 0.0]]
    alphas = [alpha_at(e, alpha_start=0.3, alpha_end=0.3, schedule=schedule) for e in (1, 2, 3, 4, 9)]
    assert alphas == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert alpha_at(7, schedule=[[1, 0.8]]) == 0.8


@pytest.mark.parametrize("schedule,message", [
    ([], "non-empty"),
    ("1,0.9", "non-empty list"),
    ([[1, 0.9], 5], "entry 1"),
    ([[1, 0.9, 3]], "pair"),
    ([[0, 0.9]], "integer >= 1"),
    ([[1.5, 0.9]], "integer >= 1"),
    ([[1, 0.9], [1, 0.8]], "strictly increasing"),
    ([[5, 0.9], [3, 0.8]], "strictly increasing"),
    ([[1, 1.5]], r"\[0, 1\]"),
    ([[1, -0.1]], r"\[0, 1\]"),
    ([[1, "0.5"]], r"\[0, 1\]"),
])
def test_bad_schedules_raise(schedule, message):
    with pytest.raises(ValueError, match=message):
        validate_alpha_schedule(schedule)
    with pytest.raises(ValueError, match=message):
        alpha_at(1, schedule=schedule)


def test_sbi_lr_lambda_100_epochs():
    f = sbi_lr_lambda(100)
    assert [f(0), f(75)] == [1.0, 1.0]
    assert f(76) == pytest.approx(1 - 1 / 25)
    assert f(99) == pytest.approx(1 - 24 / 25)


def test_sbi_lr_lambda_no_decay():
    f = sbi_lr_lambda(100, decay_fraction=0.0)
    assert {f(e) for e in range(0, 102)} == {1.0}
