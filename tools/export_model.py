"""Exports a trained run's inference model for serving: SavedModel, TFLite (float32 / float16)
and ONNX, each taking uint8 RGB images (N, H, W, 3) and returning L2-normalised embeddings.

    python -m tools.export_model --model_path results/Market1501_resnet50 \
        --output_folder export/Market1501_resnet50 \
        --formats saved_model,tflite,tflite_float16,onnx

The output folder gets ``saved_model/``, ``model.tflite``, ``model_float16.tflite``,
``model.onnx`` (each with its metadata json) and ``export.json`` (fingerprint, image size, flip,
each format's size and its largest difference from the Keras model on test images). It appears
only when every format has been written and checked; on failure nothing is left behind.
"""
import os
import sys


def export_run(model_path, output_folder, formats="saved_model,tflite,tflite_float16,onnx",
               overwrite=False, check=True, opset=None):
    """Exports the run at ``model_path`` (run folder or its ``training_model.h5``) into
    ``output_folder``; returns the summary written to its ``export.json``."""
    from inference import export
    from inference.feature_extractor import FeatureExtractor
    from inference.run_loading import locate_run

    formats = export.parse_formats(formats)  # fail fast: before the model loads
    locate_run(model_path)
    output_folder = os.path.abspath(os.fspath(output_folder))
    if os.path.exists(output_folder) and not overwrite and not (
            os.path.isdir(output_folder) and not os.listdir(output_folder)):
        raise FileExistsError("{} already exists and is not empty; pass --overwrite to replace "
                              "it, or choose another --output_folder.".format(output_folder))
    if "onnx" in formats:
        export._import_onnx_tools()  # noqa: SLF001  (before minutes of loading and converting)
    extractor = FeatureExtractor.from_run(model_path)
    summary = export.export_formats(
        extractor, output_folder, formats, overwrite=overwrite, check=check,
        opset=opset or export.DEFAULT_ONNX_OPSET)
    print("Exported {} ({}x{}, {}-d embeddings{}, fingerprint {}) to {}:".format(
        model_path, summary["image_height"], summary["image_width"], summary["embedding_size"],
        ", flip-averaged" if summary["use_horizontal_flipping"] else "", summary["fingerprint"],
        output_folder))
    for name, entry in summary["formats"].items():
        print("  {:<15} {:<22} {:>8.1f} MB{}".format(
            name, entry["path"], entry["bytes"] / 1e6,
            "" if "max_abs_difference" not in entry else
            "   max |difference| from Keras {:.2g}".format(entry["max_abs_difference"])))
    return summary


def main(argv):
    from absl import flags, logging
    from inference.export import ExportDependencyError
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit("Unexpected arguments: {}".format(" ".join(argv[1:])))
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines at every save
    try:
        export_run(FLAGS.model_path, FLAGS.output_folder, FLAGS.formats, FLAGS.overwrite,
                   FLAGS.check, FLAGS.onnx_opset)
    except (ValueError, FileNotFoundError, FileExistsError, ExportDependencyError,
            RuntimeError) as error:
        if os.environ.get("REID_DEBUG"):
            raise
        sys.exit("Error: {} Nothing was written. (Set REID_DEBUG=1 for the traceback.)".format(
            error))


def define_flags():
    from absl import flags
    from inference.export import DEFAULT_ONNX_OPSET, FORMATS
    flags.DEFINE_string("model_path", None, "Run folder, or its training_model.h5.",
                        required=True)
    flags.DEFINE_string("output_folder", None, "Folder to write the exported files into.",
                        required=True)
    flags.DEFINE_string("formats", ",".join(FORMATS),
                        "Comma-separated formats among {}.".format(",".join(FORMATS)))
    flags.DEFINE_boolean("overwrite", False, "Replace an existing non-empty output folder.")
    flags.DEFINE_boolean("check", True, "Run each exported file with its own runtime on test "
                         "images and refuse it if it strays from the Keras model (1e-4; 1e-2 "
                         "for float16).")
    flags.DEFINE_integer("onnx_opset", DEFAULT_ONNX_OPSET, "ONNX opset for tf2onnx.")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # What utils.tf_env sets, without loading TensorFlow yet: bad flags fail in a second.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    from absl import app
    define_flags()
    app.run(main)
