"""Fits stage B's epoch count to a wall-clock deadline (``--time_budget_minutes``)."""
import statistics
import time

from utils.tf_env import keras


class TimeBudget(keras.callbacks.Callback):
    """After every epoch, re-plans how many epochs fit before ``deadline`` (a ``time.time()``)
    and stops training at the last one.

    An epoch costs the median time between epoch ends; until a second epoch exists, the first
    one's steps after its first (which traces the graph) are extrapolated instead. Before the
    deadline it keeps a reserve for the final evaluation: ``fixed_reserve_seconds`` (loading
    the test images, ranking, saving) plus ``evaluation_images`` forward passes at
    ``inference_speedup`` times the measured training images/s (measured on MobileNetV3Small:
    a feature-extraction pass runs 4.4-4.8x faster than a training step). ``evaluation_images``
    counts images as the training step does: with the flip inside the model, one training image
    is two passes. Each new plan is passed to every ``listener(epoch_num)`` before the callbacks
    after this one run, so an evaluator told the new count evaluates at the last epoch.
    """

    def __init__(self, deadline, max_epochs, images_per_epoch, evaluation_images,
                 listeners=(), fixed_reserve_seconds=45.0, inference_speedup=4.0, clock=None):
        super().__init__()
        self.deadline, self.max_epochs = deadline, max_epochs
        self.images_per_epoch, self.evaluation_images = images_per_epoch, evaluation_images
        self.listeners = list(listeners)
        self.fixed_reserve_seconds, self.inference_speedup = fixed_reserve_seconds, inference_speedup
        self.clock = clock or time.time
        self.epoch_num = max_epochs
        self._cycles = []
        self._mark = None

    def on_train_begin(self, logs=None):
        self._mark = self.clock()

    def on_epoch_begin(self, epoch, logs=None):
        self._batch_ends = []

    def on_train_batch_end(self, batch, logs=None):
        self._batch_ends.append(self.clock())

    def _traced_epoch_seconds(self):
        ends = self._batch_ends
        if len(ends) < 2:
            return self._cycles[0]
        return (ends[-1] - ends[0]) / (len(ends) - 1) * len(ends)

    def reserve_seconds(self, epoch_seconds):
        images_per_second = self.images_per_epoch / epoch_seconds
        return self.fixed_reserve_seconds + self.evaluation_images / (
            self.inference_speedup * images_per_second)

    def plan(self, completed_epochs, now):
        """Epoch count that fits: the completed ones plus whole epochs before the reserve."""
        epoch_seconds = (statistics.median(self._cycles[1:]) if len(self._cycles) > 1
                         else self._traced_epoch_seconds())
        remaining = self.deadline - now - self.reserve_seconds(epoch_seconds)
        return min(self.max_epochs, completed_epochs + max(0, int(remaining // epoch_seconds)))

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self._cycles.append(now - self._mark)
        self._mark = now
        epoch_num = max(self.plan(epoch + 1, now), epoch + 1)
        if epoch_num != self.epoch_num:
            print("Time budget: {} epochs fit ({:.1f} min left).".format(
                epoch_num, (self.deadline - now) / 60))
            self.epoch_num = epoch_num
            for listener in self.listeners:
                listener(epoch_num)
        if logs is not None:
            logs["time_budget_epoch_num"] = epoch_num
        if epoch + 1 >= epoch_num:
            self.model.stop_training = True
