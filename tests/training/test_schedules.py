import math

import pytest

from taa.config import TrainConfig
from taa.training.schedules import constant, cosine, noam, schedule_from_config


def test_noam_is_the_paper_formula():
    d_model, warmup = 512, 4000
    rate = noam(d_model, warmup)
    for paper_step in (1, 10, 3999, 4000, 4001, 100_000):
        expected = d_model**-0.5 * min(paper_step**-0.5, paper_step * warmup**-1.5)
        assert rate(paper_step - 1) == pytest.approx(expected, rel=1e-12)
    # peak exactly at the end of warm-up
    peak = max(range(8000), key=rate)
    assert peak + 1 == warmup


def test_cosine_warms_up_then_decays_to_the_floor():
    rate = cosine(total_steps=100, warmup_steps=10, min_ratio=0.1)
    assert rate(0) == pytest.approx(0.1)
    assert rate(9) == pytest.approx(1.0)
    assert rate(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert rate(100) == pytest.approx(0.1)
    values = [rate(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_constant_and_dispatch():
    assert constant()(0) == 1.0
    assert constant(4)(1) == pytest.approx(0.5)
    assert schedule_from_config(TrainConfig(schedule="noam", warmup_steps=10), 64)(9) == pytest.approx(
        64**-0.5 * 10**-0.5
    )
    assert schedule_from_config(TrainConfig(schedule="cosine", warmup_steps=0, steps=10), 64)(10) == pytest.approx(0.0)
