"""The command-line flags of solution.py: both originals' flags (FlipReID's default where both
have one, the Adaptive L2 original's for its own flags), then this toolkit's additions.

Allowed values come from the modules that implement them, so each list is written once;
``training.config`` groups, checks and freezes the parsed values.
"""
import os

from absl import flags

from applications import BACKBONE_NAMES
from applications.reid_model import CLASSIFIER_HEADS, EVALUATION_FEATURES, POOLING_MODES
from datasets import DATASET_NAMES
from metrics.distances import METRICS
from pipeline.augmentation import IMAGE_AUGMENTOR_NAMES
from training.distribution import LEARNING_RATE_SCALINGS, STRATEGIES
from training.optimizer import OPTIMIZER_NAMES
from utils.learning_rate import LEARNING_RATE_MODES

FLAGS = flags.FLAGS
REPOSITORY_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _define_data_flags():
    flags.DEFINE_string("root_folder_path",
                        os.path.expanduser("~/Documents/Local Storage/Dataset"),
                        "Folder holding the dataset folders (e.g. Market-1501-v15.09.15).")
    flags.DEFINE_string("dataset_name", "Market1501",
                        "Name of the dataset: one of {}; several joined by commas train on all "
                        "of them (identities kept apart) and evaluate on the first.".format(
                            ", ".join(DATASET_NAMES)))
    flags.DEFINE_integer("image_width", 128, "Width of the images.")
    flags.DEFINE_integer("image_height", 384, "Height of the images.")
    flags.DEFINE_float("validation_size", 0.0,
                       "Proportion (<=1) or number (>1) of training samples held out; 0 = off.")
    flags.DEFINE_float("testing_size", 1.0,
                       "Proportion (<=1) or number (>1) of testing identities; 0 = no testing.")
    flags.DEFINE_integer("identity_num_per_batch", 16, "P: identities per batch.")
    flags.DEFINE_integer("image_num_per_identity", 4, "K: images per identity.")
    flags.DEFINE_bool("use_identity_balancing_in_training", False,
                      "Each identity at most once per sampler round.")
    flags.DEFINE_enum("image_augmentor_name", "FlipReIDImageAugmentor", IMAGE_AUGMENTOR_NAMES,
                      "Augmentation pipeline of the training images.")
    flags.DEFINE_float("patch_replacement_probability", 0.8, "Grayscale patch replacement p.")
    flags.DEFINE_float("random_erasing_probability", 0.8,
                       "Random erasing p (FlipReID augmentor).")
    flags.DEFINE_bool("use_data_augmentation_in_training", True, "Augment training images.")
    flags.DEFINE_integer("workers", 5, "Threads reading and augmenting training images.")
    flags.DEFINE_bool("cache_images", True, "Keep decoded training images in memory.")


def _define_model_flags():
    flags.DEFINE_enum("backbone_model_name", "resnet50", BACKBONE_NAMES,
                      "Name of the backbone model.")
    flags.DEFINE_string("backbone_weights", "imagenet",
                        "imagenet (download or cache), none (from scratch) or a local .h5 path.")
    flags.DEFINE_integer("backbone_last_stride", 1,
                         "Stride of the backbone's last downsampling: 1 (re-ID default, finer "
                         "feature map) or 2 (the backbone's own; about 2x faster for "
                         "MobileNetV3).")
    flags.DEFINE_integer("region_num", 2, "Number of horizontal stripes (0 disables the branch).")
    flags.DEFINE_enum("pooling_mode", "GeM", POOLING_MODES, "Pooling of every branch.")
    flags.DEFINE_float("min_value", 0.0, "Lower clipping bound of the embeddings.")
    flags.DEFINE_float("max_value", 1.0, "Upper clipping bound of the embeddings.")
    flags.DEFINE_alias("min_value_in_clipping", "min_value")
    flags.DEFINE_alias("max_value_in_clipping", "max_value")
    flags.DEFINE_bool("use_horizontal_flipping_inside_model", False,
                      "FlipReID: flip inside the training model, with the flipping loss.")
    flags.DEFINE_enum("classifier_head", "softmax", CLASSIFIER_HEADS,
                      "Classifier after each BNNeck: softmax (the originals'), cosface or arcface "
                      "(cosine classifier + additive cosine / angular margin).")
    flags.DEFINE_bool("use_adaptive_l1_l2_regularizer", True,
                      "Adaptive L2 (one trainable factor per tensor) instead of fixed L2.")
    flags.DEFINE_float("kernel_regularization_factor", 0.0005,
                       "L2 factor of kernels (the amplitude when adaptive).")
    flags.DEFINE_float("bias_regularization_factor", 0.0005, "L2 factor of biases.")
    flags.DEFINE_float("gamma_regularization_factor", 0.0005, "L2 factor of BN gammas.")
    flags.DEFINE_float("beta_regularization_factor", 0.0005, "L2 factor of BN betas.")
    flags.DEFINE_float("batch_normalization_momentum", None,
                       "Override the momentum of every BatchNormalization layer (unset: keep "
                       "each backbone's own; 0.9 helps short from-scratch runs of Keras "
                       "backbones, whose 0.999 makes the moving statistics lag for thousands "
                       "of steps).")


def _define_loss_flags():
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy.")
    flags.DEFINE_float("flipping_loss_weight", 1.0, "Weight of the flipping loss.")
    flags.DEFINE_float("triplet_loss_weight", 1.0,
                       "Weight of each branch's triplet loss (the cross-entropy keeps weight 1).")
    flags.DEFINE_float("triplet_margin", None,
                       "Margin m of the batch-hard triplet loss relu(d_ap - d_an + m); unset: "
                       "the soft margin softplus(d_ap - d_an) of the originals.")
    flags.DEFINE_float("triplet_hard_factor", 0.0,
                       "Harder example mining (alpha in [0, 1)): the triplet compares "
                       "(1 + alpha) d_ap with (1 - alpha) d_an.")
    flags.DEFINE_float("circle_loss_weight", 0.0,
                       "Weight of each branch's pairwise circle loss (0: off).")
    flags.DEFINE_float("circle_margin", 0.25, "Margin m of the circle loss.")
    flags.DEFINE_float("circle_gamma", 128.0, "Scale gamma of the circle loss.")
    flags.DEFINE_float("center_loss_weight", 0.0,
                       "Weight of each branch's center loss on its embedding (0: off; the "
                       "strong baselines use 5e-4).")
    flags.DEFINE_float("center_learning_rate", 0.5,
                       "Learning rate of the centers' own SGD (the strong baselines' 0.5).")
    flags.DEFINE_float("cosine_scale", 30.0, "Scale s of the cosface / arcface logits.")
    flags.DEFINE_float("cosine_margin", None,
                       "Margin m of cosface / arcface (unset: 0.35 for cosface, 0.5 for "
                       "arcface).")


def _define_solver_flags():
    flags.DEFINE_integer("freeze_backbone_for_N_epochs", 20,
                         "Epochs of stage A (frozen backbone).")
    flags.DEFINE_integer("epoch_num", 1000000, "Epochs of stage B.")
    flags.DEFINE_integer("steps_per_epoch", 200, "Training steps per epoch.")
    flags.DEFINE_enum("learning_rate_mode", "default", LEARNING_RATE_MODES,
                      "Shape of the epoch-wise learning-rate schedule.")
    flags.DEFINE_float("learning_rate_start", 2e-4, "Starting learning rate.")
    flags.DEFINE_float("learning_rate_end", 2e-4, "Ending learning rate.")
    flags.DEFINE_float("learning_rate_base", 2e-4, "Base learning rate.")
    flags.DEFINE_integer("learning_rate_warmup_epochs", 10, "Warmup epochs.")
    flags.DEFINE_integer("learning_rate_steady_epochs", 30, "Epochs between drops.")
    flags.DEFINE_float("learning_rate_drop_factor", 10, "Drop factor (0 = computed).")
    flags.DEFINE_float("learning_rate_lower_bound", 2e-6, "Lower bound of the learning rate.")
    flags.DEFINE_list("learning_rate_milestones", ["40", "70"],
                      "warmup_multistep: epochs (0-based) at which the rate is multiplied by "
                      "--learning_rate_gamma.")
    flags.DEFINE_float("learning_rate_gamma", 0.1, "warmup_multistep: factor at each milestone.")
    flags.DEFINE_enum("optimizer", "adam", OPTIMIZER_NAMES,
                      "adam (the originals'), amsgrad or sgd; --weight_decay adds decoupled "
                      "weight decay to any of them.")
    flags.DEFINE_float("sgd_momentum", 0.9, "Momentum of --optimizer sgd.")
    flags.DEFINE_bool("sgd_nesterov", False, "Nesterov momentum for --optimizer sgd.")
    flags.DEFINE_float("weight_decay", 0.0,
                       "Decoupled weight decay of conv and dense kernels (per step learning "
                       "rate x this: AdamW for adam / amsgrad); 0 keeps the originals' Adam.")
    flags.DEFINE_float("time_budget_minutes", 0,
                       "Wall-clock budget of the whole run (0: none). Loading, training and the "
                       "final evaluation fit in it: stage B's epoch count (and so the "
                       "learning-rate schedule) is fitted to the budget from the measured epoch "
                       "time.")


def _define_evaluation_flags():
    flags.DEFINE_integer("evaluate_validation_every_N_epochs", 1, "Validation period.")
    flags.DEFINE_integer("evaluate_testing_every_N_epochs", 10, "Testing period.")
    flags.DEFINE_bool("use_horizontal_flipping_in_evaluation", False,
                      "Average features of the image and its mirror in evaluation.")
    flags.DEFINE_bool("use_data_augmentation_in_evaluation", False,
                      "Apply the training augmentor to evaluation images.")
    flags.DEFINE_integer("augmentation_num", 1, "Augmented passes averaged in evaluation.")
    flags.DEFINE_bool("use_re_ranking", False, "k-reciprocal re-ranking in evaluation.")
    flags.DEFINE_integer("re_ranking_k1", 20, "k1 of the k-reciprocal re-ranking.")
    flags.DEFINE_integer("re_ranking_k2", 6, "k2 (local query expansion) of the re-ranking.")
    flags.DEFINE_float("re_ranking_lambda", 0.3,
                       "Weight of the original distance in the re-ranked one.")
    flags.DEFINE_integer("visualize_num", 0,
                         "After each evaluation, draw the N best and N worst queries by AP with "
                         "their top-10 gallery images (PNG, in the run folder); 0 = off.")
    flags.DEFINE_enum("distance_metric", "cosine", METRICS,
                      "Distance between evaluation features.")
    flags.DEFINE_bool("use_centroids", False,
                      "Rank each query against per-(identity, camera) centroids of the gallery "
                      "features instead of the images.")
    flags.DEFINE_integer("query_expansion_k", 0,
                         "Average query expansion over this many neighbours (0: off).")
    flags.DEFINE_float("query_expansion_alpha", 3.0,
                       "Exponent of the similarity weights of the query expansion.")
    flags.DEFINE_enum("evaluation_feature", "embedding", EVALUATION_FEATURES,
                      "Features ranked in evaluation: embedding (the pooled, clipped branch "
                      "embeddings, as the originals) or bnneck (their BNNeck outputs).")
    flags.DEFINE_bool("save_data_to_disk", False, "Write <split>.npz with features and ids.")
    flags.DEFINE_bool("select_model_on_testing", False,
                      "The originals' model selection on the test set (leaks test labels). "
                      "Default: select on the validation split if any, else keep the last "
                      "epoch.")


def _define_distribution_flags():
    flags.DEFINE_bool("sync_batch_normalization", False,
                      "With several replicas, batch-norm statistics over the global batch "
                      "(default: each replica's own sub-batch).")
    flags.DEFINE_bool("gather_embeddings_across_replicas", False,
                      "With several replicas, mine the triplet's hardest positive and negative "
                      "in the global batch (default: in each replica's own identities).")
    flags.DEFINE_enum("learning_rate_scaling", "none", LEARNING_RATE_SCALINGS,
                      "Scale every learning rate by the global batch over "
                      "--learning_rate_reference_batch_size: linear (Goyal et al.) or sqrt.")
    flags.DEFINE_integer("learning_rate_reference_batch_size", 64,
                         "The batch size the learning rates are given for (16 x 4 in the "
                         "originals).")
    flags.DEFINE_bool("mixed_precision", False,
                      "mixed_float16: float16 compute, float32 weights, losses and embeddings, "
                      "one dynamic loss scale for the whole run (fast on GPUs with tensor "
                      "cores; slower on CPUs).")
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")


def _define_run_flags():
    flags.DEFINE_string("output_folder_path", os.path.join(REPOSITORY_PATH, "output"),
                        "Where runs are written (one sub-folder per dataset and backbone).")
    flags.DEFINE_string("pretrained_model_file_path", "",
                        "training_model.h5 to load; with --evaluation_only, the config.json "
                        "beside it supplies every flag not given.")
    flags.DEFINE_bool("evaluation_only", False, "Only evaluate --pretrained_model_file_path.")
    flags.DEFINE_bool("resume", False,
                      "Continue the interrupted run in the output folder (its config.json "
                      "supplies every flag not given).")
    flags.DEFINE_integer("seed", None, "Seed of every random generator (unset: not seeded).")
    flags.DEFINE_bool("deterministic", False,
                      "TensorFlow's op determinism: two runs with the same --seed give the same "
                      "numbers (slower; needs --seed).")
    flags.DEFINE_enum("distribution_strategy", "default", STRATEGIES,
                      "default: one device; mirrored: every local GPU; multi_worker: every "
                      "process of the cluster in TF_CONFIG or of the Slurm step (srun). The "
                      "PK batch is the global batch, split by whole identities.")
    flags.DEFINE_integer("multi_worker_port_base", 8888,
                         "Under Slurm, the port of each node's first worker (the next ones "
                         "count up).")
    flags.DEFINE_integer("intra_op_threads", 0,
                         "Threads one TensorFlow op may use (0: TensorFlow's choice, the cores).")
    flags.DEFINE_integer("inter_op_threads", 0,
                         "TensorFlow ops run at once (0: TensorFlow's choice).")
    flags.DEFINE_integer("opencv_threads", -1,
                         "OpenCV's threads per call in the loader workers (-1: OpenCV's "
                         "default, the cores; 0: none, each worker on its own thread).")
    flags.DEFINE_bool("verbose_tensorflow", False,
                      "Show TensorFlow's start-up and C++ log lines (hidden by default).")


for _define in (_define_data_flags, _define_model_flags, _define_loss_flags,
                _define_solver_flags, _define_evaluation_flags, _define_distribution_flags,
                _define_run_flags):
    _define()
