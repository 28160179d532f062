"""Random ranking and colour-histogram baselines on a dataset (default: the synthetic one).

    python benchmarks/synthetic_baselines.py --root_folder_path data [--dataset_name Synthetic]

Prints one JSON line per baseline (mAP, rank-1, rank-5, mINP): the levels a trained model must
clearly beat.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets import load_accumulated_info_of_dataset  # noqa: E402
from metrics.baselines import evaluate_colour_histogram_baseline, random_ranking_baseline  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root_folder_path", default="data")
    parser.add_argument("--dataset_name", default="Synthetic")
    arguments = parser.parse_args()
    _, query_df, gallery_df, _ = load_accumulated_info_of_dataset(arguments.root_folder_path,
                                                                  arguments.dataset_name)
    for name, function in (("random ranking", random_ranking_baseline),
                           ("colour histogram", evaluate_colour_histogram_baseline)):
        result = function(query_df, gallery_df)
        print(json.dumps({"baseline": name, "dataset": arguments.dataset_name,
                          "mAP": round(float(result["mAP"]), 4),
                          "rank-1": round(float(result["cmc"][0]), 4),
                          "rank-5": round(float(result["cmc"][4]), 4),
                          "mINP": round(float(result["mINP"]), 4)}))


if __name__ == "__main__":
    main()
