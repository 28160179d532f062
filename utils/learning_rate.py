"""Epoch-wise learning-rate schedule, as FlipReID and AdaptiveL2 both define it; TF-free."""
import bisect
import math

LEARNING_RATE_MODES = ("constant", "linear", "cosine", "warmup", "default", "warmup_cosine",
                       "warmup_multistep")


def learning_rate_schedule(epoch_index, mode="default", start=2e-4, end=2e-4, base=2e-4,
                           warmup_epochs=10, steady_epochs=30, drop_factor=10.0,
                           lower_bound=2e-6, epoch_num=200, milestones=(40, 70), gamma=0.1):
    """Learning rate of 0-based ``epoch_index``; the result is always ``max(lr, lower_bound)``.

    constant: start (needs start == end); linear: start -> end over ``epoch_num`` epochs;
    cosine: half cosine from start to end (needs start > end); warmup: linear from start, capped
    at end after ``warmup_epochs``; default: linear warmup lower_bound -> base over
    ``warmup_epochs``, then ``base / drop_factor ** int((e - warmup) / steady_epochs)``, where
    ``drop_factor == 0`` means ``exp(steady / (epoch_num - 2*warmup) * ln(base / lower_bound))``;
    warmup_cosine (not in the originals): linear warmup lower_bound -> base over
    ``warmup_epochs``, then a half cosine from base to lower_bound at epoch ``epoch_num - 1``;
    warmup_multistep (the PyTorch baselines' WarmupMultiStepLR, stepped per epoch): linear
    warm-up start -> base over ``warmup_epochs``, times ``gamma ** k`` where k counts the
    ``milestones`` <= ``epoch_index`` (so with milestones 40, 70 the 41st epoch is the first at
    base x gamma).
    """
    if mode == "constant":
        if start != end:
            raise ValueError(f"learning_rate_mode=constant needs learning_rate_start == "
                             f"learning_rate_end, got {start} and {end}.")
        learning_rate = start
    elif mode == "linear":
        _require(epoch_num > 1, f"learning_rate_mode=linear needs epoch_num > 1, got {epoch_num}.")
        learning_rate = (end - start) / (epoch_num - 1) * epoch_index + start
    elif mode == "cosine":
        if not start > end:
            raise ValueError(f"learning_rate_mode=cosine needs learning_rate_start > "
                             f"learning_rate_end, got {start} and {end}.")
        _require(epoch_num > 1, f"learning_rate_mode=cosine needs epoch_num > 1, got {epoch_num}.")
        learning_rate = ((start - end) / 2 * math.cos(math.pi * epoch_index / (epoch_num - 1))
                         + (start + end) / 2)
    elif mode == "warmup":
        _require(warmup_epochs > 1, "learning_rate_mode=warmup needs "
                 f"learning_rate_warmup_epochs > 1, got {warmup_epochs}.")
        learning_rate = min((end - start) / (warmup_epochs - 1) * epoch_index + start, end)
    elif mode == "default":
        if epoch_index < warmup_epochs:
            _require(warmup_epochs > 1, "learning_rate_mode=default with warmup needs "
                     f"learning_rate_warmup_epochs > 1 (or 0), got {warmup_epochs}.")
            learning_rate = (base - lower_bound) / (warmup_epochs - 1) * epoch_index + lower_bound
        else:
            _require(steady_epochs > 0, "learning_rate_mode=default needs "
                     f"learning_rate_steady_epochs > 0, got {steady_epochs}.")
            if drop_factor == 0:
                _require(epoch_num - 2 * warmup_epochs > 0 and base > 0 and lower_bound > 0,
                         "learning_rate_drop_factor=0 (automatic) needs epoch_num > "
                         "2 * learning_rate_warmup_epochs and positive learning_rate_base and "
                         "learning_rate_lower_bound.")
                drop_factor = math.exp(steady_epochs / (epoch_num - 2 * warmup_epochs)
                                       * math.log(base / lower_bound))
            learning_rate = base / drop_factor ** int((epoch_index - warmup_epochs) / steady_epochs)
    elif mode == "warmup_cosine":
        if epoch_index < warmup_epochs:
            learning_rate = lower_bound + (base - lower_bound) * epoch_index / warmup_epochs
        else:
            span = max(epoch_num - 1 - warmup_epochs, 1)
            progress = min((epoch_index - warmup_epochs) / span, 1.0)
            learning_rate = lower_bound + (base - lower_bound) / 2 * (1 + math.cos(math.pi * progress))
    elif mode == "warmup_multistep":
        learning_rate = base if epoch_index >= warmup_epochs else \
            start + (base - start) * epoch_index / warmup_epochs
        learning_rate *= gamma ** bisect.bisect_right(sorted(milestones), epoch_index)
    else:
        raise ValueError(f"Unknown learning_rate_mode {mode!r}; use one of {LEARNING_RATE_MODES}.")
    return max(learning_rate, lower_bound)


def _require(condition, message):
    if not condition:
        raise ValueError(message)


class EpochSchedule:
    """`learning_rate_schedule` with the solver's settings bound; ``epoch_num`` is its horizon,
    which a time budget re-plans while training (so it is state of this object, not of the
    configuration)."""

    def __init__(self, mode="default", start=2e-4, end=2e-4, base=2e-4, warmup_epochs=10,
                 steady_epochs=30, drop_factor=10.0, lower_bound=2e-6, epoch_num=200,
                 milestones=(40, 70), gamma=0.1):
        self.mode, self.start, self.end, self.base = mode, start, end, base
        self.warmup_epochs, self.steady_epochs = warmup_epochs, steady_epochs
        self.drop_factor, self.lower_bound, self.epoch_num = drop_factor, lower_bound, epoch_num
        self.milestones, self.gamma = tuple(milestones), gamma

    @classmethod
    def from_solver(cls, solver):
        """From the ``solver`` group of a `training.config.RunConfig` (its learning_rate_*)."""
        return cls(solver.learning_rate_mode, solver.learning_rate_start,
                   solver.learning_rate_end, solver.learning_rate_base,
                   solver.learning_rate_warmup_epochs, solver.learning_rate_steady_epochs,
                   solver.learning_rate_drop_factor, solver.learning_rate_lower_bound,
                   solver.epoch_num, solver.learning_rate_milestones, solver.learning_rate_gamma)

    def __call__(self, epoch_index, current_learning_rate=None):
        return learning_rate_schedule(epoch_index, self.mode, self.start, self.end, self.base,
                                      self.warmup_epochs, self.steady_epochs, self.drop_factor,
                                      self.lower_bound, self.epoch_num, self.milestones,
                                      self.gamma)
