"""Ranked lists of the best and worst queries by AP from a run's saved features, as PNG files.

    python -m tools.visualize_ranks --features_path output/Market1501_resnet50/test.npz \
        --output_folder ranks --visualize_num 5 --top_k 10 [--distance_metric cosine]

Writes ``ranked_lists_best.png`` and ``ranked_lists_worst.png`` (see
``visualization.ranked_lists``). The features file must hold the image paths, which runs write
with ``--save_data_to_disk`` since the paths were added to it; TensorFlow is not needed.
"""
import sys

from metrics.saved_features import evaluation_arguments, load_saved_features

PATH_KEYS = ("query_image_file_path_array", "gallery_image_file_path_array")


def visualize_saved_features(features_path, output_folder, num=5, top_k=10, metric="cosine",
                             image_height=128):
    """Write the best / worst ranked lists of ``features_path``; returns the PNG paths."""
    from visualization.ranked_lists import write_ranked_lists

    data = load_saved_features(features_path)
    missing = [key for key in PATH_KEYS if key not in data]
    if missing:
        raise ValueError(f"{features_path} has no image paths ({', '.join(missing)} missing): it "
                         f"was saved by an older version. Re-run the evaluation with this "
                         f"version's --save_data_to_disk (e.g. solution.py --evaluation_only "
                         f"--save_data_to_disk with the run's checkpoint) to save them.")
    query_features, gallery_features, q_pids, g_pids, q_camids, g_camids = \
        evaluation_arguments(data)
    return write_ranked_lists(
        [str(path) for path in data[PATH_KEYS[0]]], [str(path) for path in data[PATH_KEYS[1]]],
        q_pids, g_pids, q_camids, g_camids, query_features, gallery_features,
        output_folder=output_folder, num=num, top_k=top_k, metric=metric,
        image_height=image_height)


def _define_flags():
    # Only when run as a program: importing this module must not add flags that would clash
    # with solution.py's.
    from absl import flags

    from metrics.distances import METRICS

    flags.DEFINE_string("features_path", None, "A run's saved test.npz / valid.npz.")
    flags.DEFINE_string("output_folder", None, "Folder for the PNG files (created if needed).")
    flags.DEFINE_integer("visualize_num", 5, "Best and worst queries by AP to draw (each).")
    flags.DEFINE_integer("top_k", 10, "Gallery images shown per query.")
    flags.DEFINE_enum("distance_metric", "cosine", METRICS, "Distance between features.")
    flags.DEFINE_integer("image_height", 128, "Height of every image in the picture (pixels).")
    flags.mark_flags_as_required(["features_path", "output_folder"])


def main(argv):
    from absl import flags

    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; every option is a --flag")
    values = flags.FLAGS
    try:
        paths = visualize_saved_features(values.features_path, values.output_folder,
                                         num=values.visualize_num, top_k=values.top_k,
                                         metric=values.distance_metric,
                                         image_height=values.image_height)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    for path in paths:
        print(f"Wrote {path}")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
