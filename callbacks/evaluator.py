"""Periodic query/gallery evaluation of the inference model during training."""
import os
import time

import numpy as np

from utils.files import atomic_write
from utils.tf_env import keras

RANKS = (1, 5, 10, 20)
# keyword arguments of metrics.evaluate_features that `evaluation_options` may set
EVALUATION_OPTIONS = ("use_centroids", "query_expansion_k", "query_expansion_alpha",
                      "query_expansion_times", "k1", "k2", "lambda_value")


def check_evaluation_options(evaluation_options, metric="cosine"):
    """A validated copy of ``evaluation_options`` (dict or None); ValueError otherwise."""
    options = dict(evaluation_options or {})
    unknown = sorted(set(options) - set(EVALUATION_OPTIONS))
    if unknown:
        raise ValueError(f"unknown evaluation option(s) {unknown}; use any of "
                         f"{list(EVALUATION_OPTIONS)}")
    from metrics.evaluation import check_options
    check_options(metric=metric, **options)
    return options


def log_key_suffix(evaluation_options=None):
    """What the evaluation options add to the log key prefix: "" when centroids and query
    expansion are off (the originals' keys), else "_centroids" and/or "_aqe<k>", the latter
    followed by "_alpha<alpha>" / "_times<rounds>" when those differ from 3.0 / 1.
    Re-ranking parameters (k1, k2, lambda_value) add nothing, as before."""
    options = dict(evaluation_options or {})
    suffix = "_centroids" if options.get("use_centroids", False) else ""
    k = int(options.get("query_expansion_k", 0))
    if k > 0:
        suffix += "_aqe{}".format(k)
        alpha = float(options.get("query_expansion_alpha", 3.0))
        if alpha != 3.0:
            suffix += "_alpha{:g}".format(alpha)
        rounds = int(options.get("query_expansion_times", 1))
        if rounds != 1:
            suffix += "_times{}".format(rounds)
    return suffix


def log_key_prefix(split_name, metric, use_re_ranking, suffix=""):
    """`test_cosine_False` (the originals' prefix of every evaluation log key) + `suffix`
    (``log_key_suffix`` of the evaluation options, e.g. `test_cosine_False_centroids_aqe10`)."""
    return "{}_{}_{}{}".format(split_name, metric, use_re_ranking, suffix)


def evaluation_logs(split_name, metric, use_re_ranking, result, suffix=""):
    """Flat log entries of one evaluation: rank-k accuracies, mAP and mINP (fractions)."""
    prefix = log_key_prefix(split_name, metric, use_re_ranking, suffix)
    logs = {}
    cmc = np.asarray(result["cmc"])
    for rank in RANKS:
        if rank <= len(cmc):
            logs["{}_rank-{} accuracy".format(prefix, rank)] = float(cmc[rank - 1])
    logs["{}_mAP_score".format(prefix)] = float(result["mAP"])
    logs["{}_mINP_score".format(prefix)] = float(result["mINP"])
    return logs


class Evaluator(keras.callbacks.Callback):
    """Extracts query and gallery features, ranks them and writes the metrics into `logs`.

    Runs when `(epoch + 1) % every_N_epochs == 0` or at the last epoch (FlipReID's rule),
    before checkpointing callbacks that read the metrics.

    `evaluation_options`: one dict of extra keyword arguments of `metrics.evaluate_features`
    (keys in `EVALUATION_OPTIONS`: use_centroids, query_expansion_k, query_expansion_alpha,
    query_expansion_times, k1, k2, lambda_value), so new options pass through without a new
    argument here. It is checked at construction, before any training, and an unknown key
    or bad value raises ValueError. Centroids and query expansion add `log_key_suffix` to
    the log keys; with the options off (None or {}) the keys are the originals'.
    """

    def __init__(self, inference_model, split_name, query_df, gallery_df, image_height,
                 image_width, every_N_epochs, epoch_num, batch_size=64,
                 use_horizontal_flipping=False, use_re_ranking=False, metric="cosine",
                 output_folder_path=None, save_data_to_disk=False, max_rank=20,
                 augmentor=None, augmentation_num=1, evaluation_options=None, visualize_num=0):
        super().__init__()
        self.inference_model = inference_model
        self.split_name = split_name
        self.query_df, self.gallery_df = query_df, gallery_df
        self.image_height, self.image_width = image_height, image_width
        self.every_N_epochs, self.epoch_num = every_N_epochs, epoch_num
        self.batch_size = batch_size
        self.use_horizontal_flipping = use_horizontal_flipping
        self.use_re_ranking = use_re_ranking
        self.metric = metric
        self.output_folder_path = output_folder_path
        self.save_data_to_disk = save_data_to_disk
        self.max_rank = max_rank
        self.augmentor, self.augmentation_num = augmentor, augmentation_num
        self.evaluation_options = check_evaluation_options(evaluation_options, metric)
        self.log_key_suffix = log_key_suffix(self.evaluation_options)
        self.visualize_num = visualize_num
        self.last_result = None

    def is_due(self, epoch):
        return self.every_N_epochs > 0 and (
            (epoch + 1) % self.every_N_epochs == 0 or (epoch + 1) == self.epoch_num)

    def extract(self, data_frame):
        from pipeline.feature_extraction import extract_features
        return extract_features(self.inference_model, data_frame["image_file_path"].tolist(),
                                self.image_height, self.image_width,
                                batch_size=self.batch_size,
                                use_horizontal_flipping=self.use_horizontal_flipping,
                                augmentor=self.augmentor,
                                augmentation_num=self.augmentation_num)

    def evaluate(self):
        """Returns the flat log dict of one evaluation of the current weights."""
        from metrics import evaluate_features
        query_features = self.extract(self.query_df)
        gallery_features = self.extract(self.gallery_df)
        arrays = dict(
            query_image_features_array=query_features,
            gallery_image_features_array=gallery_features,
            query_identity_ID_array=self.query_df["identity_ID"].to_numpy(),
            gallery_identity_ID_array=self.gallery_df["identity_ID"].to_numpy(),
            query_camera_ID_array=self.query_df["camera_ID"].to_numpy(),
            gallery_camera_ID_array=self.gallery_df["camera_ID"].to_numpy())
        if self.save_data_to_disk and self.output_folder_path:
            path = os.path.join(self.output_folder_path, "{}.npz".format(self.split_name))
            paths = {"{}_image_file_path_array".format(name): np.asarray(
                frame["image_file_path"].tolist(), np.str_)
                for name, frame in (("query", self.query_df), ("gallery", self.gallery_df))}
            with atomic_write(path, "wb") as file:
                np.savez(file, **arrays, **paths)
        start = time.time()
        result = evaluate_features(
            query_features, gallery_features, arrays["query_identity_ID_array"],
            arrays["gallery_identity_ID_array"], arrays["query_camera_ID_array"],
            arrays["gallery_camera_ID_array"], metric=self.metric, max_rank=self.max_rank,
            use_re_ranking=self.use_re_ranking, **self.evaluation_options)
        print("Ranking {} queries against {} gallery images took {:.1f} s.".format(
            len(query_features), len(gallery_features), time.time() - start))
        self.last_result = result
        if self.visualize_num and self.output_folder_path:
            self.visualize(arrays)
        return evaluation_logs(self.split_name, self.metric, self.use_re_ranking, result,
                               self.log_key_suffix)

    def visualize(self, arrays):
        """``<split>_ranked_lists_{best,worst}.png``: the ``visualize_num`` best and worst
        queries by AP, ranked by the feature distance (before any re-ranking, centroids or
        query expansion)."""
        from visualization.ranked_lists import write_ranked_lists
        write_ranked_lists(
            self.query_df["image_file_path"].tolist(), self.gallery_df["image_file_path"].tolist(),
            arrays["query_identity_ID_array"], arrays["gallery_identity_ID_array"],
            arrays["query_camera_ID_array"], arrays["gallery_camera_ID_array"],
            arrays["query_image_features_array"], arrays["gallery_image_features_array"],
            output_folder=self.output_folder_path, num=self.visualize_num, metric=self.metric,
            file_prefix=self.split_name + "_")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.is_due(epoch):
            return
        logs.update(self.evaluate())
