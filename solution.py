"""FlipReID + Adaptive L2 person re-identification: flags, data, model, train, evaluate.

    python solution.py --dataset_name Market1501 --use_horizontal_flipping_inside_model
"""
import os
import sys
import time

START_TIME = time.time()  # the --time_budget_minutes clock starts before TensorFlow loads
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from utils.tf_env import tf  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
REPOSITORY_PATH = os.path.dirname(os.path.abspath(__file__))

# Flags of both originals (FlipReID's default wins where both have one), then additions.
flags.DEFINE_string("root_folder_path",
                    os.path.expanduser("~/Documents/Local Storage/Dataset"),
                    "Folder holding the dataset folders (e.g. Market-1501-v15.09.15).")
flags.DEFINE_string("dataset_name", "Market1501", "Name of the dataset.")
flags.DEFINE_string("backbone_model_name", "resnet50", "Name of the backbone model.")
flags.DEFINE_integer("freeze_backbone_for_N_epochs", 20, "Epochs of stage A (frozen backbone).")
flags.DEFINE_integer("image_width", 128, "Width of the images.")
flags.DEFINE_integer("image_height", 384, "Height of the images.")
flags.DEFINE_integer("region_num", 2, "Number of horizontal stripes (0 disables the branch).")
flags.DEFINE_float("kernel_regularization_factor", 0.0005,
                   "L2 factor of kernels (the amplitude when adaptive).")
flags.DEFINE_float("bias_regularization_factor", 0.0005, "L2 factor of biases.")
flags.DEFINE_float("gamma_regularization_factor", 0.0005, "L2 factor of BN gammas.")
flags.DEFINE_float("beta_regularization_factor", 0.0005, "L2 factor of BN betas.")
flags.DEFINE_bool("use_adaptive_l1_l2_regularizer", True,
                  "Adaptive L2 (one trainable factor per tensor) instead of fixed L2.")
flags.DEFINE_string("pooling_mode", "GeM", "Pooling: Average, Max or GeM.")
flags.DEFINE_float("min_value", 0.0, "Lower clipping bound of the embeddings.")
flags.DEFINE_float("max_value", 1.0, "Upper clipping bound of the embeddings.")
flags.DEFINE_alias("min_value_in_clipping", "min_value")
flags.DEFINE_alias("max_value_in_clipping", "max_value")
flags.DEFINE_float("validation_size", 0.0,
                   "Proportion (<=1) or number (>1) of training samples held out; 0 = off.")
flags.DEFINE_float("testing_size", 1.0,
                   "Proportion (<=1) or number (>1) of testing identities; 0 = no testing.")
flags.DEFINE_integer("evaluate_validation_every_N_epochs", 1, "Validation period.")
flags.DEFINE_integer("evaluate_testing_every_N_epochs", 10, "Testing period.")
flags.DEFINE_integer("identity_num_per_batch", 16, "P: identities per batch.")
flags.DEFINE_integer("image_num_per_identity", 4, "K: images per identity.")
flags.DEFINE_string("learning_rate_mode", "default",
                    "One of constant, linear, cosine, warmup, default, warmup_cosine.")
flags.DEFINE_float("learning_rate_start", 2e-4, "Starting learning rate.")
flags.DEFINE_float("learning_rate_end", 2e-4, "Ending learning rate.")
flags.DEFINE_float("learning_rate_base", 2e-4, "Base learning rate.")
flags.DEFINE_integer("learning_rate_warmup_epochs", 10, "Warmup epochs.")
flags.DEFINE_integer("learning_rate_steady_epochs", 30, "Epochs between drops.")
flags.DEFINE_float("learning_rate_drop_factor", 10, "Drop factor (0 = computed).")
flags.DEFINE_float("learning_rate_lower_bound", 2e-6, "Lower bound of the learning rate.")
flags.DEFINE_integer("steps_per_epoch", 200, "Training steps per epoch.")
flags.DEFINE_integer("epoch_num", 1000000, "Epochs of stage B.")
flags.DEFINE_integer("workers", 5, "Threads reading and augmenting training images.")
flags.DEFINE_string("image_augmentor_name", "FlipReIDImageAugmentor",
                    "FlipReIDImageAugmentor, RandomErasingImageAugmentor or BaseImageAugmentor.")
flags.DEFINE_float("patch_replacement_probability", 0.8, "Grayscale patch replacement p.")
flags.DEFINE_float("random_erasing_probability", 0.8, "Random erasing p (FlipReID augmentor).")
flags.DEFINE_bool("use_data_augmentation_in_training", True, "Augment training images.")
flags.DEFINE_bool("use_data_augmentation_in_evaluation", False,
                  "Apply the training augmentor to evaluation images.")
flags.DEFINE_integer("augmentation_num", 1, "Augmented passes averaged in evaluation.")
flags.DEFINE_bool("use_identity_balancing_in_training", False,
                  "Each identity at most once per sampler round.")
flags.DEFINE_bool("use_horizontal_flipping_inside_model", False,
                  "FlipReID: flip inside the training model, with the flipping loss.")
flags.DEFINE_bool("use_horizontal_flipping_in_evaluation", False,
                  "Average features of the image and its mirror in evaluation.")
flags.DEFINE_bool("use_re_ranking", False, "k-reciprocal re-ranking in evaluation.")
flags.DEFINE_bool("evaluation_only", False, "Only evaluate --pretrained_model_file_path.")
flags.DEFINE_bool("save_data_to_disk", False, "Write <split>.npz with features and ids.")
flags.DEFINE_string("pretrained_model_file_path", "", "training_model.h5 to load.")
flags.DEFINE_string("output_folder_path", os.path.join(REPOSITORY_PATH, "output"),
                    "Where runs are written (one sub-folder per dataset and backbone).")
# Additions.
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy.")
flags.DEFINE_float("flipping_loss_weight", 1.0, "Weight of the flipping loss.")
flags.DEFINE_float("triplet_loss_weight", 1.0,
                   "Weight of each branch's triplet loss (the cross-entropy keeps weight 1).")
flags.DEFINE_string("classifier_head", "softmax",
                    "Classifier after each BNNeck: softmax (the originals'), cosface or arcface "
                    "(cosine classifier + additive cosine / angular margin).")
flags.DEFINE_float("cosine_scale", 30.0, "Scale s of the cosface / arcface logits.")
flags.DEFINE_float("cosine_margin", None,
                   "Margin m of cosface / arcface (unset: 0.35 for cosface, 0.5 for arcface).")
flags.DEFINE_string("evaluation_feature", "embedding",
                    "Features ranked in evaluation: embedding (the pooled, clipped branch "
                    "embeddings, as the originals) or bnneck (their BNNeck outputs).")
flags.DEFINE_float("weight_decay", 0.0,
                   "Decoupled weight decay of conv and dense kernels (AdamW, per step "
                   "learning rate x this); 0 keeps the originals' Adam.")
flags.DEFINE_integer("seed", None, "Seed of every random generator (unset: not seeded).")
flags.DEFINE_bool("resume", False, "Continue the interrupted run in the output folder.")
flags.DEFINE_bool("select_model_on_testing", False,
                  "The originals' model selection on the test set (leaks test labels). "
                  "Default: select on the validation split if any, else keep the last epoch.")
flags.DEFINE_string("backbone_weights", "imagenet",
                    "imagenet (download or cache), none (from scratch) or a local .h5 path.")
flags.DEFINE_integer("backbone_last_stride", 1,
                     "Stride of the backbone's last downsampling: 1 (re-ID default, finer "
                     "feature map) or 2 (the backbone's own; about 2x faster for MobileNetV3).")
flags.DEFINE_float("time_budget_minutes", 0,
                   "Wall-clock budget of the whole run (0: none). Loading, training and the "
                   "final evaluation fit in it: stage B's epoch count (and so the learning-rate "
                   "schedule) is fitted to the budget from the measured epoch time.")
flags.DEFINE_bool("cache_images", True, "Keep decoded training images in memory.")
flags.DEFINE_float("batch_normalization_momentum", None,
                   "Override the momentum of every BatchNormalization layer (unset: keep each "
                   "backbone's own; 0.9 helps short from-scratch runs of Keras backbones, "
                   "whose 0.999 makes the moving statistics lag for thousands of steps).")


def main(_):
    try:
        run_solution()
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        if os.environ.get("REID_DEBUG"):
            raise
        sys.exit("Error: {} (set REID_DEBUG=1 for the traceback)".format(error))


def run_solution():
    from training import run

    print("Getting hyperparameters ...")
    print("Using command {}".format(" ".join(sys.argv)))
    for name in sorted(FLAGS.flag_values_dict()):
        print("{} {}".format(name, FLAGS[name].value))
    options = run.validate_options(FLAGS.flag_values_dict())
    options.deadline = (START_TIME + 60 * options.time_budget_minutes
                        if options.time_budget_minutes else None)
    run.seed_everything(options.seed)

    data = run.load_data(options)
    models = run.build_models(options, data)
    if options.evaluation_only:
        run.evaluate_only(options, data, models)
    else:
        run.train(options, data, models)
    print("All done!")


if __name__ == "__main__":
    app.run(main)
