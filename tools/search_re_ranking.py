"""Grid search of the re-ranking parameters (k1, k2, lambda) on a run's validation features.

    python -m tools.search_re_ranking --features_path output/Market1501_resnet50/valid.npz \
        [--k1_values 15,20,25] [--k2_values 3,6] [--lambda_values 0.1,0.3,0.5] \
        [--distance_metric euclidean] [--output_path search.csv]

Prints the grid sorted by mAP, the best setting and the evaluation flags that select it.
``valid.npz`` is written by a run with ``--validation_size > 0 --save_data_to_disk``. A file
whose name starts with "test" is refused: parameters chosen by test mAP leak the test labels
into the reported numbers.

Speed: the k-reciprocal neighbour structure depends on (k1, k2) only, and lambda only mixes
the Jaccard distance with the original one, ``(1 - lambda) * jaccard + lambda * original``.
So each (k1, k2) is re-ranked once with lambda = 0 (the Jaccard part) and the original part once
for the whole grid (lambda = 1); every lambda is then that float32 blend, bit for bit what
``metrics.evaluate_features`` ranks, followed by a ranking. ``reuse_across_lambdas=False``
(``--noreuse_across_lambdas``) re-ranks every grid point through ``evaluate_features`` instead.
"""
import csv
import io
import json
import os
import sys
import time

from metrics.evaluation import evaluate_features, evaluate_rank
from metrics.re_ranking_from_features import re_ranking_features_dense, validate_parameters
from metrics.saved_features import evaluation_arguments, load_saved_features
from utils.files import atomic_write

DEFAULT_K1_VALUES = (10, 15, 20, 25, 30)
DEFAULT_K2_VALUES = (2, 4, 6, 8)
DEFAULT_LAMBDA_VALUES = tuple(i / 10 for i in range(11))  # i / 10: 0.3, not 0.30000000000000004
COLUMNS = ("k1", "k2", "lambda", "mAP", "rank-1", "rank-5", "mINP")
# the reuse path holds three (Q, G) float32 matrices; past this it re-ranks point by point
REUSE_MEMORY_BUDGET = 2 * 1024 ** 3
OUTPUT_FORMATS = (".csv", ".json")


def check_not_test_split(features_path):
    """Raise ValueError if ``features_path`` names the test split (basename starting "test")."""
    if os.path.basename(features_path).lower().startswith("test"):
        raise ValueError(
            f"{features_path}: refusing to tune re-ranking on the test split. Choosing k1, k2 "
            f"and lambda by test mAP leaks the test labels into the numbers you then report on "
            f"that same test split. Tune on the validation split instead: a run with "
            f"--validation_size > 0 (e.g. 0.1) and --save_data_to_disk writes valid.npz beside "
            f"test.npz in its run folder; then evaluate the test split once with the best flags.")


def parse_values(text, kind, name):
    """Comma-separated numbers (``kind`` int or float), duplicates dropped, order kept."""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = kind(item)
        except ValueError:
            what, example = ("an integer", "15,20,25") if kind is int else ("a number", "0.1,0.3")
            raise ValueError(f"--{name}: {item!r} is not {what}; give a comma-separated list "
                             f"such as {example}") from None
        if value not in values:
            values.append(value)
    if not values:
        raise ValueError(f"--{name} is empty; give a comma-separated list of values")
    return values


def grid_points(k1_values, k2_values, lambda_values):
    """``(valid points, skipped)``: valid (k1, k2, lambda) in grid order, and skipped
    (k1, k2, lambda, reason) for the points ``validate_parameters`` rejects."""
    points, skipped = [], []
    for k1 in k1_values:
        for k2 in k2_values:
            for lambda_value in lambda_values:
                try:
                    validate_parameters(k1, k2, lambda_value)
                except ValueError as error:
                    skipped.append((k1, k2, lambda_value, str(error)))
                else:
                    points.append((k1, k2, lambda_value))
    return points, skipped


def _metrics(result):
    cmc = result["cmc"]
    return {"mAP": float(result["mAP"]), "rank-1": float(cmc[0]),
            "rank-5": float(cmc[4]) if len(cmc) > 4 else None, "mINP": float(result["mINP"])}


def _row(k1, k2, lambda_value, result):
    return dict({"k1": int(k1), "k2": int(k2), "lambda": float(lambda_value)}, **_metrics(result))


def search_re_ranking(data, k1_values=DEFAULT_K1_VALUES, k2_values=DEFAULT_K2_VALUES,
                      lambda_values=DEFAULT_LAMBDA_VALUES, metric="cosine",
                      reuse_across_lambdas=True, log=print):
    """Evaluates every valid grid point on ``data`` (``load_saved_features``).

    Returns ``dict(rows, skipped, baseline, seconds)``: ``rows`` one dict per point (``COLUMNS``)
    sorted by mAP, then rank-1, descending (ties keep grid order), so ``rows[0]`` is the best;
    ``skipped`` the (k1, k2, lambda, reason) of invalid points; ``baseline`` the metrics
    without re-ranking.
    """
    start = time.time()
    arguments = evaluation_arguments(data)
    labels = arguments[2:]
    points, skipped = grid_points(k1_values, k2_values, lambda_values)
    if not points:
        raise ValueError(f"no valid grid point: {skipped[0][3]}")
    baseline = _metrics(evaluate_features(*arguments, metric=metric))
    num_q, num_g = len(arguments[0]), len(arguments[1])
    if reuse_across_lambdas and 3 * 4 * num_q * num_g > REUSE_MEMORY_BUDGET:
        log(f"Note: {num_q} x {num_g} distances need more than "
            f"{REUSE_MEMORY_BUDGET / 1024 ** 3:g} GiB to reuse the re-ranking across lambdas; "
            f"re-ranking each grid point on its own.")
        reuse_across_lambdas = False
    rows = []
    original = None
    pairs = list(dict.fromkeys((k1, k2) for k1, k2, _ in points))
    for k1, k2 in pairs:
        pair_start = time.time()
        lambdas = [lam for a, b, lam in points if (a, b) == (k1, k2)]
        if reuse_across_lambdas:
            qf, gf = arguments[:2]
            if original is None:  # lambda = 1: the normalised original distance, any k1, k2
                original = re_ranking_features_dense(qf, gf, k1, k2, 1.0, metric)
            jaccard = re_ranking_features_dense(qf, gf, k1, k2, 0.0, metric)
            for lambda_value in lambdas:
                lambda_value = float(lambda_value)  # a NumPy float64 would upcast the blend
                # the same float32 expression re-ranking ends with, hence the same bits
                blend = jaccard * (1 - lambda_value) + original * lambda_value
                rows.append(_row(k1, k2, lambda_value, evaluate_rank(blend, *labels)))
            del jaccard, blend
        else:
            for lambda_value in lambdas:
                result = evaluate_features(*arguments, metric=metric, use_re_ranking=True,
                                           k1=k1, k2=k2, lambda_value=lambda_value)
                rows.append(_row(k1, k2, lambda_value, result))
        log(f"k1 {k1} k2 {k2}: {len(lambdas)} lambda value(s) in {time.time() - pair_start:.1f} s")
    rows.sort(key=lambda row: (-row["mAP"], -row["rank-1"]))  # stable: ties keep grid order
    return dict(rows=rows, skipped=skipped, baseline=baseline, seconds=time.time() - start)


def evaluation_flags(row, metric="cosine"):
    """The evaluation flags of ``solution.py`` / ``tools.evaluate_features`` for ``row``."""
    return (f"--use_re_ranking --re_ranking_k1 {row['k1']} --re_ranking_k2 {row['k2']} "
            f"--re_ranking_lambda {row['lambda']:g} --distance_metric {metric}")


def format_table(rows, limit=0):
    """The rows as an aligned text table (the first ``limit`` rows; 0 = all)."""
    shown = rows[:limit] if limit else rows
    lines = ["{:>4} {:>4} {:>7} {:>8} {:>8}".format("k1", "k2", "lambda", "mAP", "rank-1")]
    for row in shown:
        lines.append("{k1:>4} {k2:>4} {lambda:>7g} {mAP:>8.4f} {rank-1:>8.4f}".format(**row))
    if len(shown) < len(rows):
        lines.append(f"({len(shown)} of {len(rows)} settings shown)")
    return "\n".join(lines)


def check_output_path(output_path):
    """Raise ValueError unless ``output_path`` ends with .csv or .json (checked before the
    search, which may take long)."""
    if os.path.splitext(output_path)[1].lower() not in OUTPUT_FORMATS:
        raise ValueError(f"--output_path {output_path}: unknown format; end the name with "
                         f"{' or '.join(OUTPUT_FORMATS)}")


def write_results(result, output_path, features_path=None, metric="cosine"):
    """The sorted table as CSV (``COLUMNS``) or, for .json, everything (atomic write)."""
    check_output_path(output_path)
    if output_path.lower().endswith(".csv"):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(result["rows"])
        content = text.getvalue()
    else:
        best = result["rows"][0]
        content = json.dumps(dict(
            features_path=None if features_path is None else os.path.abspath(features_path),
            distance_metric=metric, best=best, flags=evaluation_flags(best, metric),
            without_re_ranking=result["baseline"], rows=result["rows"],
            skipped=[dict(k1=k1, k2=k2, reason=reason, **{"lambda": lam})
                     for k1, k2, lam, reason in result["skipped"]],
            seconds=round(result["seconds"], 3)), indent=2)
    with atomic_write(output_path, "w") as file:
        file.write(content)


def run_search(features_path, k1_values=DEFAULT_K1_VALUES, k2_values=DEFAULT_K2_VALUES,
               lambda_values=DEFAULT_LAMBDA_VALUES, metric="cosine", output_path=None,
               table_rows=20, reuse_across_lambdas=True, log=print):
    """The command: refuses the test split, loads, searches, prints, writes; returns the
    ``search_re_ranking`` result."""
    check_not_test_split(features_path)
    if output_path:
        check_output_path(output_path)
    data = load_saved_features(features_path)
    points, skipped = grid_points(k1_values, k2_values, lambda_values)
    log(f"{features_path}: {len(data['query_image_features_array'])} queries, "
        f"{len(data['gallery_image_features_array'])} gallery images; {len(points)} settings "
        f"({metric} distance).")
    for reason in dict.fromkeys(reason for *_, reason in skipped):
        count = sum(1 for *_, other in skipped if other == reason)
        log(f"Note: {count} grid point(s) skipped: {reason}")
    result = search_re_ranking(data, k1_values, k2_values, lambda_values, metric,
                               reuse_across_lambdas, log)
    best, baseline = result["rows"][0], result["baseline"]
    log(format_table(result["rows"], table_rows))
    log("Without re-ranking: mAP {mAP:.4f} rank-1 {rank-1:.4f}".format(**baseline))
    log("Best: k1 {k1} k2 {k2} lambda {lambda:g}: mAP {mAP:.4f} rank-1 {rank-1:.4f} "
        "({n} settings in {s:.1f} s)".format(n=len(result["rows"]), s=result["seconds"], **best))
    log("Evaluation flags: " + evaluation_flags(best, metric))
    if output_path:
        write_results(result, output_path, features_path, metric)
        log(f"Table written to {output_path}.")
    return result


def _define_flags():
    # Defined only when run as a program: importing this module (tests, other tools) must not
    # add flags, which would clash with solution.py's of the same names.
    from absl import flags

    from metrics.distances import METRICS

    flags.DEFINE_string("features_path", None,
                        "A run's valid.npz (--validation_size > 0 --save_data_to_disk); a file "
                        "named test* is refused.")
    flags.DEFINE_string("k1_values", ",".join(map(str, DEFAULT_K1_VALUES)), "k1 values to try.")
    flags.DEFINE_string("k2_values", ",".join(map(str, DEFAULT_K2_VALUES)), "k2 values to try.")
    flags.DEFINE_string("lambda_values", ",".join(f"{v:g}" for v in DEFAULT_LAMBDA_VALUES),
                        "lambda values to try (weight of the original distance).")
    flags.DEFINE_enum("distance_metric", "cosine", METRICS, "Distance between features.")
    flags.DEFINE_string("output_path", None, "Also write the table to this .csv or .json file.")
    flags.DEFINE_integer("table_rows", 20, "Rows of the printed table (0: all).")
    flags.DEFINE_bool("reuse_across_lambdas", True,
                      "Re-rank each (k1, k2) once and blend every lambda from it (same numbers).")
    flags.mark_flag_as_required("features_path")


def main(argv):
    from absl import flags

    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; every option is a --flag")
    values = flags.FLAGS
    try:
        run_search(values.features_path,
                   parse_values(values.k1_values, int, "k1_values"),
                   parse_values(values.k2_values, int, "k2_values"),
                   parse_values(values.lambda_values, float, "lambda_values"),
                   metric=values.distance_metric, output_path=values.output_path,
                   table_rows=values.table_rows,
                   reuse_across_lambdas=values.reuse_across_lambdas)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
