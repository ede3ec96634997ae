import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixdiff.recipe import TrainConfig
from pixdiff.train.schedule import lr_at

LR, MIN_LR = 1e-3, 1e-5


def config(schedule: str, warmup: int, max_steps: int) -> TrainConfig:
    return TrainConfig(lr=LR, min_lr=MIN_LR, lr_schedule=schedule, warmup_steps=warmup, max_steps=max_steps)


@settings(deadline=None, max_examples=200)
@given(max_steps=st.integers(2, 10_000), warmup_share=st.floats(0, 0.5), data=st.data())
def test_cosine_and_linear_follow_their_closed_forms(max_steps, warmup_share, data):
    warmup = int(warmup_share * max_steps)
    step = data.draw(st.integers(0, max_steps - 1))
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    p = max(0.0, (step - warmup) / (max_steps - warmup))
    cosine = MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * p)) / 2
    linear = LR - (LR - MIN_LR) * p
    assert lr_at(step, config("cosine", warmup, max_steps)) == pytest.approx(ramp * cosine, rel=1e-12)
    assert lr_at(step, config("linear", warmup, max_steps)) == pytest.approx(ramp * linear, rel=1e-12)
    assert lr_at(step, config("constant", warmup, max_steps)) == pytest.approx(ramp * LR, rel=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_starts_at_lr_after_warmup_and_ends_at_min_lr(schedule):
    tc = config(schedule, 10, 110)
    assert [lr_at(s, tc) for s in (0, 4, 9)] == pytest.approx([LR / 10, LR / 2, LR])
    assert lr_at(10, tc) == pytest.approx(LR)
    assert lr_at(60, tc) == pytest.approx((LR + MIN_LR) / 2)  # both are half-way at half-way
    assert lr_at(110, tc) == pytest.approx(MIN_LR)
    rates = [lr_at(s, tc) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never rises after warm-up


def test_schedule_fields_are_checked():
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
