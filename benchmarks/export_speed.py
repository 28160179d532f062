"""Inference images/s of each export format against the Keras model (issue 20, item 3).

    python benchmarks/export_speed.py [--backbones ResNet50 resnet50] [--sizes 256x128 128x64]
        [--batch_size 32] [--runs 5] [--flip]

Builds the inference model of solution.py (random weights, FlipReID head with two stripes and
GeM, last stride 1), exports it with `inference.export.export_formats` (every file checked
against the Keras model) and times one in-memory uint8 batch, the formats taking turns (best of
``--rounds``), through:
``keras`` (`FeatureExtractor.extract`, the evaluator's traced function), ``saved_model``
(tf.saved_model.load), ``tflite`` / ``tflite_float16`` (LiteRT's interpreter when installed,
else tf.lite; the input resized to the batch) and ``onnx`` (onnxruntime, CPU). Every runtime
gets the machine's cores. One markdown row per case, with the conversion time and file size.
"""
import argparse
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from utils.tf_env import keras  # noqa: E402  (tf-keras before TensorFlow loads)


def inference_model(name, height, width):
    from applications import get_backbone
    from applications.reid_model import build_reid_models
    backbone = get_backbone(name, input_shape=(height, width, 3), weights=None)
    return build_reid_models(backbone, 751, region_num=2, pooling_mode="GeM",
                             input_shape=(height, width, 3), verbose=False).inference_model


def images_per_second(runners, images, runs, rounds):
    """``{name: images/s}``: the formats take turns, ``rounds`` times ``runs`` batches each,
    and each keeps its best round, so a burst from another job on the machine hits one round
    of every format rather than all of one format."""
    for run in runners.values():
        for _ in range(2):  # warm-up: first-call allocation, tracing, thread pools
            run(images)
    best = dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            for _ in range(runs):
                run(images)
            best[name] = max(best[name], runs * len(images) / (time.perf_counter() - start))
    return best


def timed_exports(extractor, folder, formats):
    """``{format: (seconds to export and check, summary entry)}``, one format at a time so each
    gets its own conversion time."""
    from inference import export
    module = export.make_serving_module(extractor)
    module.serve.get_concrete_function()  # traced once, not charged to the first format
    results = {}
    for name in formats:
        start = time.perf_counter()
        summary = export.export_formats(module, os.path.join(folder, name), [name],
                                        reference=lambda images: extractor.extract(images))
        results[name] = (time.perf_counter() - start, summary["formats"][name])
    return results


def main():
    from inference import export
    from inference.feature_extractor import FeatureExtractor
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["ResNet50", "resnet50"])
    parser.add_argument("--sizes", nargs="+", default=["256x128", "128x64"])
    parser.add_argument("--formats", default=",".join(export.FORMATS))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best one counts")
    parser.add_argument("--flip", action="store_true", help="flip-averaged embeddings")
    arguments = parser.parse_args()
    formats = export.parse_formats(arguments.formats)
    print("batch {}, best of {} rounds of {} batches after 2 warm-up runs, flip averaging {}; "
          "cpus={}, TFLite runtime: {}".format(
              arguments.batch_size, arguments.rounds, arguments.runs,
              "on" if arguments.flip else "off", os.cpu_count(),
              export.tflite_interpreter_class().__module__.split(".")[0]))
    print("| backbone | input | format | images/s | vs Keras | file MB | export + check s | "
          "max abs difference |")
    print("|---|---|---|---|---|---|---|---|")
    generator = np.random.default_rng(0)
    for name in arguments.backbones:
        for size in arguments.sizes:
            height, width = (int(value) for value in size.split("x"))
            extractor = FeatureExtractor(inference_model(name, height, width), height, width,
                                         use_horizontal_flipping=arguments.flip,
                                         batch_size=arguments.batch_size)
            images = generator.integers(0, 256, (arguments.batch_size, height, width, 3),
                                        dtype=np.uint8)
            with tempfile.TemporaryDirectory(prefix="export_speed_") as folder:
                exported = timed_exports(extractor, folder, formats)
                runners = {"keras": extractor.extract}
                for format_name, (_, entry) in exported.items():
                    runners[format_name] = export.load_exported(
                        os.path.join(folder, format_name, entry["path"]))
                speeds = images_per_second(runners, images, arguments.runs, arguments.rounds)
            print("| {} | {} | keras | {:.1f} | 1.00 | | | |".format(name, size,
                                                                   speeds["keras"]))
            for format_name, (seconds, entry) in exported.items():
                print("| {} | {} | {} | {:.1f} | {:.2f} | {:.0f} | {:.0f} | {:.1e} |".format(
                    name, size, format_name, speeds[format_name],
                    speeds[format_name] / speeds["keras"], entry["bytes"] / 1e6, seconds,
                    entry["max_abs_difference"]), flush=True)
            del runners
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
