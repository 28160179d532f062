"""Backbone throughput (images/s) on this machine: one training step and inference.

Each backbone (random weights, last stride 1 unless ``--last_stride 2``) gets a proxy head
(global average pooling -> Dense(num_classes) -> softmax cross-entropy) and an Adam optimizer; a
compiled ``tf.function`` training step and an inference call are timed after warm-up on random
raw-RGB batches. The first line printed names the CPU and the settings.

    python benchmarks/backbone_speed.py [--names MobileNetV3Small MobileNetV3Large resnet50]
        [--image_height 128 --image_width 64 --train_batch 32 --infer_batch 64 --steps 5]
        [--last_stride 1]
"""
import argparse
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from utils.tf_env import keras, tf  # noqa: E402
from applications import get_backbone  # noqa: E402
from utils.machine import cpu_description  # noqa: E402


def build_model(name, input_shape, num_classes, last_stride):
    backbone = get_backbone(name, input_shape, weights=None, last_stride=last_stride)
    inputs = keras.Input(input_shape)
    x = inputs
    for block in backbone.blocks:
        x = block(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs)


def images_per_second(function, batch, steps, warmup):
    for _ in range(warmup):
        function()
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return batch * steps / (time.perf_counter() - start)


def measure(name, args):
    input_shape = (args.image_height, args.image_width, 3)
    model = build_model(name, input_shape, args.num_classes, args.last_stride)
    optimizer = keras.optimizers.Adam(2e-4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    train_x = tf.constant(rng.uniform(0, 255, (args.train_batch,) + input_shape), tf.float32)
    train_y = tf.constant(rng.integers(0, args.num_classes, args.train_batch), tf.int32)
    infer_x = tf.constant(rng.uniform(0, 255, (args.infer_batch,) + input_shape), tf.float32)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn(train_y, model(train_x, training=True))
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(gradients, model.trainable_weights))
        return loss

    @tf.function
    def infer():
        return model(infer_x, training=False)

    train = images_per_second(lambda: train_step().numpy(), args.train_batch, args.steps, 2)
    inference = images_per_second(lambda: infer().numpy(), args.infer_batch, args.steps, 2)
    return model.count_params(), train, inference


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--names", nargs="+",
                        default=["MobileNetV3Small", "MobileNetV3Large", "resnet50"])
    parser.add_argument("--image_height", type=int, default=128)
    parser.add_argument("--image_width", type=int, default=64)
    parser.add_argument("--train_batch", type=int, default=32)
    parser.add_argument("--infer_batch", type=int, default=64)
    parser.add_argument("--num_classes", type=int, default=751)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--last_stride", type=int, choices=(1, 2), default=1)
    args = parser.parse_args()
    print("{}; {}x{}, last stride {}, train batch {}, inference batch {}, {} timed steps".format(
        cpu_description(), args.image_height, args.image_width, args.last_stride,
        args.train_batch, args.infer_batch, args.steps))
    print("{:<18} {:>10} {:>14} {:>14}".format("backbone", "params", "train img/s",
                                              "infer img/s"))
    for name in args.names:
        params, train, inference = measure(name, args)
        print("{:<18} {:>10,d} {:>14.1f} {:>14.1f}".format(name, params, train, inference),
              flush=True)


if __name__ == "__main__":
    main()
