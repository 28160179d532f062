"""Learning-rate schedule against the originals' formulas and their default-setting values."""
import math

import pytest

from utils.learning_rate import learning_rate_schedule

DEFAULTS = dict(mode="default", start=2e-4, end=2e-4, base=2e-4, warmup_epochs=10,
                steady_epochs=30, drop_factor=10, lower_bound=2e-6, epoch_num=200)


def schedule(epoch_index, **overrides):
    return learning_rate_schedule(epoch_index, **{**DEFAULTS, **overrides})


@pytest.mark.parametrize("epoch_index, expected", [
    (0, 2e-6), (1, 2.4e-5), (2, 4.6e-5), (5, 1.12e-4), (9, 2e-4),
    *[(e, 2e-4) for e in (10, 25, 39)], *[(e, 2e-5) for e in (40, 55, 69)],
    *[(e, 2e-6) for e in (70, 99, 100, 150, 199)]])
def test_default_mode_spec_values(epoch_index, expected):
    assert schedule(epoch_index) == pytest.approx(expected, rel=1e-9)


def test_default_mode_base_3e4():
    values = [schedule(e, base=3e-4, lower_bound=3e-6) for e in (0, 1, 10, 40, 70)]
    assert values == pytest.approx([3e-6, 3e-6 + 3.3e-5, 3e-4, 3e-5, 3e-6], rel=1e-9)


def test_default_mode_automatic_drop_factor():
    # drop = exp(steady / (epoch_num - 2 * warmup) * ln(base / lower)) = exp(30/180 * ln 100)
    drop = math.exp(30 / 180 * math.log(100))
    for epoch_index in (10, 39, 40, 70, 100, 199):
        expected = max(2e-4 / drop ** ((epoch_index - 10) // 30), 2e-6)
        assert schedule(epoch_index, drop_factor=0) == pytest.approx(expected, rel=1e-9)


def test_linear_cosine_warmup_constant_formulas():
    for e in (0, 7, 99):
        assert learning_rate_schedule(e, "linear", start=1e-3, end=1e-5, epoch_num=100,
                                      lower_bound=0) == pytest.approx(1e-3 + (1e-5 - 1e-3) * e / 99)
        assert learning_rate_schedule(e, "cosine", start=1e-3, end=1e-5, epoch_num=100,
                                      lower_bound=0) == pytest.approx(
            (1e-3 - 1e-5) / 2 * math.cos(math.pi * e / 99) + (1e-3 + 1e-5) / 2)
        assert learning_rate_schedule(e, "constant", start=3e-4, end=3e-4) == 3e-4
    for e, expected in ((0, 1e-5), (2, 1e-5 + 2 * (1e-3 - 1e-5) / 4), (4, 1e-3), (50, 1e-3)):
        assert learning_rate_schedule(e, "warmup", start=1e-5, end=1e-3, warmup_epochs=5,
                                      lower_bound=0) == pytest.approx(expected)


def test_lower_bound_clips_every_mode():
    assert learning_rate_schedule(99, "linear", start=1e-3, end=0.0, epoch_num=100,
                                  lower_bound=1e-4) == 1e-4
    assert learning_rate_schedule(0, "constant", start=1e-6, end=1e-6, lower_bound=1e-5) == 1e-5


@pytest.mark.parametrize("kwargs, flag", [
    (dict(mode="constant", start=1e-3, end=1e-4), "learning_rate_end"),
    (dict(mode="cosine", start=1e-4, end=1e-3), "learning_rate_start"),
    (dict(mode="bogus"), "learning_rate_mode"),
    (dict(mode="default", drop_factor=0, epoch_num=20), "learning_rate_drop_factor"),
])
def test_invalid_settings_raise_value_errors_naming_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        learning_rate_schedule(50, **{**DEFAULTS, **kwargs})


def test_warmup_cosine_hand_values():
    def lr(e):
        return learning_rate_schedule(e, "warmup_cosine", base=1e-3, lower_bound=1e-5,
                                      warmup_epochs=5, epoch_num=26)
    assert lr(0) == pytest.approx(1e-5)
    assert lr(2) == pytest.approx(1e-5 + 2 / 5 * (1e-3 - 1e-5))
    assert lr(5) == pytest.approx(1e-3)  # warm-up ends at the peak
    assert lr(15) == pytest.approx((1e-3 + 1e-5) / 2)  # half way down the cosine
    assert lr(25) == pytest.approx(1e-5) and lr(40) == pytest.approx(1e-5)
    values = [lr(e) for e in range(5, 26)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_warmup_multistep_hand_values():
    """The strong baseline's recipe: warm-up from base / 100 over 10 epochs, / 10 at 40 and 70."""
    def lr(e, **overrides):
        settings = dict(start=3.5e-6, base=3.5e-4, warmup_epochs=10, milestones=(40, 70),
                        gamma=0.1, lower_bound=1e-8)
        settings.update(overrides)
        return learning_rate_schedule(e, "warmup_multistep", **settings)
    assert lr(0) == pytest.approx(3.5e-6)
    assert lr(5) == pytest.approx(3.5e-6 + 0.5 * (3.5e-4 - 3.5e-6))
    assert lr(10) == pytest.approx(3.5e-4) and lr(39) == pytest.approx(3.5e-4)
    assert lr(40) == pytest.approx(3.5e-5) and lr(69) == pytest.approx(3.5e-5)
    assert lr(70) == pytest.approx(3.5e-6) and lr(119) == pytest.approx(3.5e-6)
    # deep-efficient-reid's milestones, given in any order; the lower bound still floors it
    assert lr(55, milestones=(55, 30)) == pytest.approx(3.5e-6)
    assert lr(80, lower_bound=1e-5) == pytest.approx(1e-5)
    assert lr(3, warmup_epochs=0) == pytest.approx(3.5e-4)
