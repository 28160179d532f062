"""TimeBudget against a simulated clock: the plan is the brute-force count of epochs that end
before the deadline minus the evaluation reserve."""
from types import SimpleNamespace

import pytest

from callbacks.time_budget import TimeBudget


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def simulate(budget, clock, epoch_seconds=10.0, trace_seconds=10.0, steps=10, max_epochs=1000):
    """Runs fit-like callback calls until stop_training; returns the epoch-end times."""
    model = SimpleNamespace(stop_training=False)
    budget.set_model(model)
    budget.on_train_begin()
    ends = []
    for epoch in range(max_epochs):
        budget.on_epoch_begin(epoch)
        if epoch == 0:
            clock.now += trace_seconds
        for _ in range(steps):
            clock.now += epoch_seconds / steps
            budget.on_train_batch_end(0)
        logs = {}
        budget.on_epoch_end(epoch, logs)
        ends.append(clock.now)
        assert logs["time_budget_epoch_num"] == budget.epoch_num
        if model.stop_training:
            break
    return ends


def brute_force_last_epoch(deadline, reserve, first_end, epoch_seconds):
    count, end = 1, first_end
    while end + epoch_seconds <= deadline - reserve:
        count, end = count + 1, end + epoch_seconds
    return count


@pytest.mark.parametrize("fixed, evaluation_images", [(0.0, 0), (25.0, 0), (25.0, 250)])
def test_stops_at_the_last_epoch_that_fits(fixed, evaluation_images):
    clock, planned = FakeClock(), []
    # 100 images per 10 s epoch = 10 images/s; a forward pass is 2.5x faster, so 250
    # evaluation images reserve 10 s.
    budget = TimeBudget(deadline=200.0, max_epochs=1000, images_per_epoch=100,
                        evaluation_images=evaluation_images, listeners=[planned.append],
                        fixed_reserve_seconds=fixed, inference_speedup=2.5, clock=clock)
    ends = simulate(budget, clock)
    reserve = fixed + evaluation_images / 25.0
    expected = brute_force_last_epoch(200.0, reserve, first_end=20.0, epoch_seconds=10.0)
    assert len(ends) == expected
    assert ends[-1] <= 200.0 - reserve
    assert planned[-1] == expected  # the evaluators / schedule were told the final count


def test_first_plan_ignores_graph_tracing():
    clock, planned = FakeClock(), []
    budget = TimeBudget(deadline=1000.0, max_epochs=1000, images_per_epoch=100,
                        evaluation_images=0, listeners=[planned.append],
                        fixed_reserve_seconds=0.0, clock=clock)
    budget.set_model(SimpleNamespace(stop_training=False))
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    clock.now += 500.0  # tracing the graph
    for _ in range(10):
        clock.now += 1.0
        budget.on_train_batch_end(0)
    budget.on_epoch_end(0, {})
    # 490 s left at 10 s per epoch (not 510 s per epoch) -> 49 more.
    assert planned == [50]


def test_max_epochs_caps_the_plan_and_a_late_start_still_trains_one_epoch():
    clock = FakeClock()
    budget = TimeBudget(deadline=10_000.0, max_epochs=3, images_per_epoch=100,
                        evaluation_images=0, fixed_reserve_seconds=0.0, clock=clock)
    assert len(simulate(budget, clock)) == 3
    clock = FakeClock()
    budget = TimeBudget(deadline=5.0, max_epochs=100, images_per_epoch=100,
                        evaluation_images=0, clock=clock)
    assert len(simulate(budget, clock)) == 1
