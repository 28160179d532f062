"""Metrics (and re-ranking) straight from a run's saved features, without TensorFlow.

    python -m tools.evaluate_features --features_path output/Market1501_resnet50/test.npz \
        [--use_re_ranking --re_ranking_k1 20 --re_ranking_k2 6 --re_ranking_lambda 0.3] \
        [--distance_metric euclidean] [--use_centroids] [--query_expansion_k 10] \
        [--output_path metrics.json]

``test.npz`` / ``valid.npz`` are written by a run with ``--save_data_to_disk``. The evaluation
flags mean what they mean for ``solution.py``, and the numbers equal the trainer's for the same
features and options.
"""
import json
import os
import sys
import time

from metrics.evaluation import check_options, evaluate_features
from metrics.saved_features import evaluation_arguments, load_saved_features
from utils.files import atomic_write

RANKS = (1, 5, 10, 20)


def evaluate_saved_features(features_path, metric="cosine", use_re_ranking=False, k1=20, k2=6,
                            lambda_value=0.3, use_centroids=False, query_expansion_k=0,
                            query_expansion_alpha=3.0):
    """Evaluates ``features_path`` (a saved ``<split>.npz``); returns the summary dict
    (``mAP``, ``rank-k`` for k in ``RANKS`` (None past the gallery), ``mINP``, counts and the
    options, shaped like the trainer's ``<split>_metrics.json``)."""
    options = dict(use_centroids=use_centroids, query_expansion_k=query_expansion_k,
                   query_expansion_alpha=query_expansion_alpha, k1=k1, k2=k2,
                   lambda_value=lambda_value)
    check_options(metric=metric, **options)  # fail before a large file is read
    data = load_saved_features(features_path)
    arguments = evaluation_arguments(data)
    start = time.time()
    result = evaluate_features(*arguments, metric=metric, max_rank=max(RANKS),
                               use_re_ranking=use_re_ranking, **options)
    cmc = result["cmc"]
    summary = {"split": os.path.splitext(os.path.basename(features_path))[0],
               "features_path": os.path.abspath(features_path),
               "mAP": float(result["mAP"])}
    summary.update({f"rank-{k}": float(cmc[k - 1]) if k <= len(cmc) else None for k in RANKS})
    summary.update({"mINP": float(result["mINP"]),
                    "num_queries": len(arguments[0]), "num_gallery": len(arguments[1]),
                    "num_valid_queries": int(result["num_valid_queries"]),
                    "seconds": round(time.time() - start, 3),
                    "use_re_ranking": bool(use_re_ranking), "distance_metric": metric,
                    "evaluation_options": options})
    return summary


def format_report(summary):
    """The trainer's report line, then every rank-k accuracy."""
    options = summary["evaluation_options"]
    setting = [summary["distance_metric"] + " distance"]
    if summary["use_re_ranking"]:
        setting.append("re-ranking k1={k1} k2={k2} lambda={lambda_value:g}".format(**options))
    if options["use_centroids"]:
        setting.append("gallery centroids")
    if options["query_expansion_k"]:
        setting.append("query expansion k={query_expansion_k} alpha={query_expansion_alpha:g}"
                       .format(**options))
    ranks = " ".join(f"rank-{k} {summary[f'rank-{k}']:.4f}" for k in RANKS
                     if summary[f"rank-{k}"] is not None)
    return "\n".join([
        "{}: {} queries ({} with a true match), {} gallery images; {} ({:.1f} s).".format(
            summary["features_path"], summary["num_queries"], summary["num_valid_queries"],
            summary["num_gallery"], ", ".join(setting), summary["seconds"]),
        "{split}: mAP {mAP:.4f} rank-1 {rank-1:.4f} mINP {mINP:.4f}".format(**summary),
        ranks])


def write_summary(summary, output_path):
    """Writes the summary as JSON, atomically."""
    with atomic_write(output_path, "w") as file:
        json.dump(summary, file, indent=2)


def _define_flags():
    # Defined only when run as a program: importing this module (tests, other tools) must not
    # add flags, which would clash with solution.py's of the same names.
    from absl import flags

    from metrics.distances import METRICS

    flags.DEFINE_string("features_path", None, "A run's saved test.npz / valid.npz.")
    flags.DEFINE_enum("distance_metric", "cosine", METRICS, "Distance between features.")
    flags.DEFINE_bool("use_re_ranking", False, "k-reciprocal re-ranking.")
    flags.DEFINE_integer("re_ranking_k1", 20, "k1 of the k-reciprocal re-ranking.")
    flags.DEFINE_integer("re_ranking_k2", 6, "k2 (local query expansion) of the re-ranking.")
    flags.DEFINE_float("re_ranking_lambda", 0.3,
                       "Weight of the original distance in the re-ranked one.")
    flags.DEFINE_bool("use_centroids", False,
                      "Rank each query against per-(identity, camera) gallery centroids.")
    flags.DEFINE_integer("query_expansion_k", 0,
                         "Average query expansion over this many neighbours (0: off).")
    flags.DEFINE_float("query_expansion_alpha", 3.0,
                       "Exponent of the similarity weights of the query expansion.")
    flags.DEFINE_string("output_path", None, "Also write the metrics to this JSON file.")
    flags.mark_flag_as_required("features_path")


def main(argv):
    from absl import flags

    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; every option is a --flag")
    values = flags.FLAGS
    try:
        summary = evaluate_saved_features(
            values.features_path, metric=values.distance_metric,
            use_re_ranking=values.use_re_ranking, k1=values.re_ranking_k1,
            k2=values.re_ranking_k2, lambda_value=values.re_ranking_lambda,
            use_centroids=values.use_centroids, query_expansion_k=values.query_expansion_k,
            query_expansion_alpha=values.query_expansion_alpha)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(format_report(summary))
    if values.output_path:
        write_summary(summary, values.output_path)
        print(f"Metrics written to {values.output_path}.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
