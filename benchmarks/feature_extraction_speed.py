"""Feature extraction images/s of the re-ID inference model (issue 5, item 4).

    python benchmarks/feature_extraction_speed.py [--root_folder_path ../shared/datasets]
        [--backbones MobileNetV3Small resnet50] [--sizes 128x64 256x128] [--images 2048]

Builds the inference model of solution.py (random weights, FlipReID head with two stripes,
last stride 1) and runs `pipeline.feature_extraction.extract_features` (JPEG decoding in worker
threads, batches of 64 prefetched) over the first ``--images`` gallery images of Market-1501
(or random JPEGs written to a temporary folder when the dataset is absent), with and without
the flip in evaluation. ``model only`` times the compiled model on an in-memory batch: when the two are
close, the input pipeline is not what limits extraction. One markdown row per case.
"""
import argparse
import glob
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from utils.tf_env import keras, tf  # noqa: E402,F401


def image_paths(root_folder_path, count):
    gallery = os.path.join(root_folder_path or "", "Market-1501-v15.09.15", "bounding_box_test")
    paths = sorted(glob.glob(os.path.join(gallery, "*.jpg")))[:count]
    if len(paths) == count:
        return paths, "Market-1501 gallery"
    folder = tempfile.mkdtemp(prefix="feature_extraction_speed_")
    generator = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = os.path.join(folder, "{:05d}.jpg".format(index))
        cv2.imwrite(path, generator.integers(0, 256, (128, 64, 3), dtype=np.uint8))
        paths.append(path)
    return paths, "random 128x64 JPEGs"


def inference_model(name, height, width):
    from applications import get_backbone
    from applications.reid_model import build_reid_models
    backbone = get_backbone(name, input_shape=(height, width, 3), weights=None)
    return build_reid_models(backbone, 751, region_num=2, pooling_mode="GeM",
                             input_shape=(height, width, 3), verbose=False).inference_model


def model_only_speed(model, height, width, batch_size, flip, repeats=5):
    images = tf.random.uniform((batch_size, height, width, 3), 0, 255)

    @tf.function
    def predict(batch):
        features = model(batch, training=False)
        if flip:
            features = (features + model(tf.reverse(batch, axis=[2]), training=False)) / 2
        return features

    predict(images)
    start = time.perf_counter()
    for _ in range(repeats):
        predict(images).numpy()
    return repeats * batch_size / (time.perf_counter() - start)


def main():
    from pipeline.feature_extraction import extract_features
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root_folder_path", default=os.path.join(REPO_ROOT, "..", "shared",
                                                                   "datasets"))
    parser.add_argument("--backbones", nargs="+", default=["MobileNetV3Small", "resnet50"])
    parser.add_argument("--sizes", nargs="+", default=["128x64", "256x128"])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    arguments = parser.parse_args()
    paths, source = image_paths(arguments.root_folder_path, arguments.images)
    print("{} images from the {}; cpus={}".format(len(paths), source, os.cpu_count()))
    print("| backbone | input | flip in evaluation | extract_features images/s | "
          "model only images/s |")
    print("|---|---|---|---|---|")
    for name in arguments.backbones:
        for size in arguments.sizes:
            height, width = (int(value) for value in size.split("x"))
            model = inference_model(name, height, width)
            for flip in (False, True):
                count = len(paths) if name.lower().startswith("mobilenet") else len(paths) // 4
                extract_features(model, paths[:arguments.batch_size], height, width,
                                 arguments.batch_size, use_horizontal_flipping=flip,
                                 progress=False, workers=arguments.workers)  # trace once
                _, speed = extract_features(model, paths[:count], height, width,
                                            arguments.batch_size, use_horizontal_flipping=flip,
                                            progress=False, workers=arguments.workers,
                                            return_speed=True)
                alone = model_only_speed(model, height, width, arguments.batch_size, flip)
                print("| {} | {} | {} | {:.0f} | {:.0f} |".format(
                    name, size, "on" if flip else "off", speed, alone), flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
