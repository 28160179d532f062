"""Training input pipeline throughput (images/s) on the real Market-1501 train split.

Measures ``pipeline.training_input.make_training_dataset`` end to end (sampler -> decode/resize ->
augmentation -> tf.data float32 batches) for each combination of image size, augmentation on/off
and image cache on/off. With the cache on, one warm-up pass fills it first, so the number is the
steady state of every epoch after the first; with the cache off every image is decoded each time.

    python benchmarks/input_pipeline_speed.py [--dataset_root ../shared/datasets] [--batches 60]
"""
import argparse
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from utils.tf_env import tf  # noqa: E402,F401  (sets up TF before the pipeline imports it)
import datasets  # noqa: E402
from pipeline.augmentation import FlipReIDAugmentor  # noqa: E402
from pipeline.training_input import make_training_dataset  # noqa: E402
from pipeline.sampler import PKSampler  # noqa: E402


def measure(train_df, image_height, image_width, augment, cache, batches, workers, warmup_batches):
    labels = train_df["identity_ID"].to_numpy()
    sampler = PKSampler(labels, 16, 4, steps_per_epoch=200, seed=0)
    augmentor = FlipReIDAugmentor(image_height, image_width) if augment else None
    dataset = make_training_dataset(train_df["image_file_path"].tolist(), labels, sampler,
                                    image_height, image_width, augmentor=augmentor,
                                    workers=workers, cache_images=cache, seed=0)
    iterator = iter(dataset)
    for _ in range(warmup_batches if cache else 3):
        next(iterator)
    start = time.perf_counter()
    images = 0
    for _ in range(batches):
        images += int(next(iterator)[0].shape[0])
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_root", default=os.path.join(REPO_ROOT, "..", "shared", "datasets"))
    parser.add_argument("--batches", type=int, default=60, help="timed batches of 64 per row")
    parser.add_argument("--warmup_batches", type=int, default=210,
                        help="batches read before timing when the cache is on (fills it)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sizes", default="128x64,256x128", help="comma-separated HxW")
    args = parser.parse_args()

    train_df, _, _, _ = datasets.load_accumulated_info_of_dataset(args.dataset_root, "Market1501")
    print(f"Market-1501 train: {len(train_df)} images; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}; workers={args.workers}; batch 16x4; {args.batches} timed "
          f"batches per row.")
    rows = []
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.lower().split("x"))
        for cache in (False, True):
            for augment in (False, True):
                speed = measure(train_df, height, width, augment, cache, args.batches, args.workers,
                                args.warmup_batches)
                rows.append((f"{height}x{width}", "FlipReID" if augment else "none",
                             "on" if cache else "off", speed))
                print(f"  {rows[-1][0]} augmentation={rows[-1][1]} cache={rows[-1][2]}: "
                      f"{speed:.0f} images/s", flush=True)
    print()
    print("| image size | augmentation | cache | images/s |")
    print("|---|---|---|---|")
    for size, augment, cache, speed in rows:
        print(f"| {size} | {augment} | {cache} | {speed:.0f} |")


if __name__ == "__main__":
    main()
