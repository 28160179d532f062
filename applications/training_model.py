"""The training model: a functional Keras model whose training step can also train center losses
on some of its outputs, with an optimizer of their own, as the bag-of-tricks baselines do."""
from utils.tf_env import keras, tf


class ReIDTrainingModel(keras.Model):
    """Built like a functional model, ``ReIDTrainingModel(inputs, outputs, name=...)``.

    Without center losses its training step is Keras' own. With `set_center_losses`, each step
    adds ``weight * sum of the center losses`` (each on the output it names) to the compiled
    loss; the model's optimizer minimises that sum over the model's variables, and the centers'
    optimizer steps on the gradient of the UNWEIGHTED center loss (the baselines multiply the
    center gradients by 1 / weight for the same effect). The centers are not variables of the
    model, so the model's optimizer and its weight decay never touch them. ``center_loss`` (the
    unweighted sum, epoch mean) joins the logs.
    """

    def set_center_losses(self, center_losses, weight, optimizer):
        """``center_losses``: ``{output name: losses.center.CenterLoss}``; ``optimizer``: the
        centers' own (e.g. ``CenterLoss.make_optimizer()``)."""
        unknown = sorted(set(center_losses) - set(self.output_names))
        if unknown:
            raise ValueError("Center losses on unknown outputs {}; outputs: {}.".format(
                unknown, self.output_names))
        # Kept out of Keras' attribute tracking: tracked, the centers would become model
        # variables, trained and decayed by the model's optimizer too.
        self.__dict__["_center_losses"] = dict(center_losses)
        self.__dict__["_center_setup"] = (float(weight), optimizer,
                                          keras.metrics.Mean(name="center_loss"))
        # The traced training step holds the old setup (the weight is a Python constant in it).
        self.train_function = None

    @property
    def center_losses(self):
        return self.__dict__.get("_center_losses", {})

    @property
    def metrics(self):
        setup = self.__dict__.get("_center_setup")
        return super().metrics + ([setup[2]] if setup else [])

    def train_step(self, data):
        if not self.center_losses:
            return super().train_step(data)
        weight, center_optimizer, tracker = self.__dict__["_center_setup"]
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        centers = [term.centers for term in self.center_losses.values()]
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
            outputs = dict(zip(self.output_names, tf.nest.flatten(y_pred)))
            center_loss = tf.add_n([term(y, outputs[name])
                                    for name, term in self.center_losses.items()])
            # Each replica's share of the global mean (its gradients are summed over
            # replicas), as Keras scales the compiled loss.
            replica_share = center_loss / tf.distribute.get_strategy().num_replicas_in_sync
            total = loss + weight * replica_share
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        center_optimizer.apply_gradients(zip(tape.gradient(replica_share, centers), centers))
        del tape
        tracker.update_state(center_loss)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        logs["center_loss"] = tracker.result()
        return logs
