"""Exports a run's inference model as a SavedModel, TFLite (float32 / float16) or ONNX file, and
runs the exported files with their own runtimes.

    extractor = FeatureExtractor.from_run("results/Market1501_resnet50")
    export_saved_model(extractor, "export/saved_model")
    export_tflite(extractor, "export/model_float16.tflite", float16=True)
    export_onnx(extractor, "export/model.onnx")
    features = load_exported("export/model.onnx")(uint8_images)   # == extractor.extract(...)

Every export takes uint8 RGB images (N, H, W, 3) named ``images`` and returns ``embedding``:
float32 (N, D), L2-normalised, flip-averaged when the run's evaluation is. The backbone's own
preprocessing is part of the inference model. Nothing goes through Keras model serialisation
(tf2cv layers have no ``get_config``): a `tf.function` traced over the live model's variables
is saved or converted. Each file gets its metadata (fingerprint, image size, flip) beside it:
``export.json`` inside a SavedModel folder, ``<file>.json`` beside a ``.tflite`` / ``.onnx``
file, and the ONNX file's ``metadata_props`` too.
"""
import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings

import numpy as np

INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
SIGNATURE_KEY = "serving_default"
METADATA_FILE_NAME = "export.json"
DEFAULT_ONNX_OPSET = 17
# Largest difference from the Keras model's embeddings a check accepts (unit-length rows).
TOLERANCES = {"saved_model": 1e-4, "tflite": 1e-4, "tflite_float16": 1e-2, "onnx": 1e-4}
ONNX_REQUIREMENTS = "tf2onnx==1.17.0 onnxruntime==1.32.0 onnx==1.23.2"


class ExportDependencyError(ImportError):
    """A format's converter or runtime is not installed."""


def _tf():
    from utils.tf_env import tf
    return tf


def _source(model_or_extractor, image_height, image_width, use_horizontal_flipping,
            fingerprint):
    """``(inference model, height, width, flip, fingerprint)`` of a `FeatureExtractor` or of a
    Keras inference model (its input shape gives the size; explicit arguments win)."""
    from inference.feature_extractor import FeatureExtractor
    if isinstance(model_or_extractor, FeatureExtractor):
        extractor = model_or_extractor
        model = extractor.inference_model
        image_height = image_height or extractor.image_height
        image_width = image_width or extractor.image_width
        if use_horizontal_flipping is None:
            use_horizontal_flipping = extractor.use_horizontal_flipping
        fingerprint = fingerprint if fingerprint is not None else extractor.fingerprint
    else:
        model = model_or_extractor
        shape = getattr(model, "input_shape", None)
        if isinstance(shape, list):
            shape = shape[0]
        if shape is not None and len(shape) == 4:
            image_height = image_height or shape[1]
            image_width = image_width or shape[2]
    if not callable(model):
        raise TypeError("Pass a FeatureExtractor or a Keras inference model, got {}.".format(
            type(model_or_extractor).__name__))
    if not image_height or not image_width:
        raise ValueError("The model's input has no fixed size: pass image_height and "
                         "image_width.")
    return (model, int(image_height), int(image_width), bool(use_horizontal_flipping),
            fingerprint)


def _feature_size(model):
    """The width of the extractor's features (its outputs flattened and concatenated), or None
    when a dimension is not static."""
    shapes = getattr(model, "output_shape", None)
    if shapes is None:
        return None
    if isinstance(shapes, dict):
        shapes = list(shapes.values())
    if not isinstance(shapes, list):
        shapes = [shapes]
    size = 0
    for shape in shapes:
        dims = list(shape)[1:]
        if any(dim is None for dim in dims):
            return None
        size += int(np.prod(dims, dtype=np.int64))
    return size


def make_serving_module(model_or_extractor, image_height=None, image_width=None,
                        use_horizontal_flipping=None, fingerprint=None):
    """A `tf.Module` whose ``serve(images)`` maps uint8 (N, H, W, 3) to ``{"embedding": ...}``
    exactly as `FeatureExtractor.extract` does (its traced batch function, then the L2
    normalisation), with the metadata as variables: ``image_size``, ``fingerprint``,
    ``use_horizontal_flipping``. A `FeatureExtractor` supplies size, flip and fingerprint."""
    from pipeline.feature_extraction import predict_function
    tf = _tf()
    model, height, width, flip, fingerprint = _source(
        model_or_extractor, image_height, image_width, use_horizontal_flipping, fingerprint)
    # The extractor's own function (untraced Python body), so both share one definition.
    predict = predict_function(model, height, width, flip).python_function

    size = _feature_size(model)

    def serve(images):
        features = predict(images)
        if size is not None:  # the extractor's reshape loses the static width
            features = tf.reshape(features, (-1, size))  # (EnsureShape is no TFLite op)
        norms = tf.sqrt(tf.reduce_sum(tf.square(features), axis=1, keepdims=True))
        return {OUTPUT_NAME: features / tf.maximum(norms, 1e-12)}

    module = tf.Module(name="reid_embedding")
    # The variables are tracked as a plain list, not through the Keras model, so saving never
    # runs Keras' own SavedModel serialisation (which tf2cv layers do not support).
    module.model_variables = list(model.variables)
    module.image_size = tf.Variable([height, width], dtype=tf.int32, trainable=False,
                                    name="image_size")
    module.fingerprint = tf.Variable(fingerprint or "", dtype=tf.string, trainable=False,
                                     name="fingerprint")
    module.use_horizontal_flipping = tf.Variable(flip, trainable=False,
                                                 name="use_horizontal_flipping")
    module.serve = tf.function(serve, input_signature=[
        tf.TensorSpec((None, height, width, 3), tf.uint8, name=INPUT_NAME)])
    module.metadata = dict(image_height=height, image_width=width,
                           use_horizontal_flipping=flip, fingerprint=fingerprint)
    # Traced now: the extractor's function holds the model only weakly, and the module keeps
    # its variables, not the model, which the caller may drop.
    module.serve.get_concrete_function()
    return module


def _as_module(model_or_module, **source):
    if getattr(model_or_module, "serve", None) is not None and hasattr(model_or_module,
                                                                       "metadata"):
        return model_or_module
    return make_serving_module(model_or_module, **source)


def _metadata(module, export_format, embedding_size, extra=None):
    tf = _tf()
    values = dict(module.metadata, format=export_format, embedding_size=embedding_size,
                  input=dict(name=INPUT_NAME, dtype="uint8", channels="RGB", range="0..255",
                             shape=[None, module.metadata["image_height"],
                                    module.metadata["image_width"], 3]),
                  output=dict(name=OUTPUT_NAME, dtype="float32", l2_normalized=True),
                  tensorflow_version=tf.__version__)
    values.update(extra or {})
    return values


def _embedding_size(module):
    spec = module.serve.get_concrete_function().structured_outputs[OUTPUT_NAME]
    return None if spec.shape[-1] is None else int(spec.shape[-1])


def _write_json(path, values):
    # Always inside a staging folder, which makes it atomic; a plain open() keeps the umask's
    # permissions (atomic_write's temporary files are private).
    with open(path, "w") as file:
        json.dump(values, file, indent=2, sort_keys=True)
        file.write("\n")


def _check_target(path, overwrite):
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError("{} already exists; pass overwrite=True (--overwrite) to "
                              "replace it, or choose another path.".format(path))


@contextlib.contextmanager
def _staging_folder(target):
    """A temporary folder beside ``target`` (same file system, so the final rename is atomic),
    removed whatever happens."""
    parent = os.path.dirname(os.path.abspath(target)) or "."
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp",
                              dir=parent)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _replace(source, target):
    """Moves ``source`` to ``target``; an existing folder is swapped out first (os.replace
    cannot replace a non-empty folder) and deleted only once the new one is in place."""
    if os.path.isdir(target) and not os.path.islink(target):
        backup = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".", suffix=".old",
                                  dir=os.path.dirname(os.path.abspath(target)))
        os.rmdir(backup)
        os.replace(target, backup)
        try:
            os.replace(source, target)
        except BaseException:
            os.replace(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(source, target)


def _file_with_metadata(path, overwrite, write, metadata):
    """Writes ``path`` (by ``write(temporary path)``) and ``<path>.json``, both or neither."""
    path = os.path.abspath(os.fspath(path))
    _check_target(path, overwrite)
    with _staging_folder(path) as staging:
        staged = os.path.join(staging, os.path.basename(path))
        write(staged)
        _write_json(staged + ".json", metadata)
        os.replace(staged + ".json", path + ".json")
        os.replace(staged, path)
    return path


def export_saved_model(model_or_extractor, folder, overwrite=False, **source):
    """Saves the serving module as a SavedModel at ``folder`` (signature ``serving_default``:
    ``images`` -> ``embedding``) with ``export.json`` inside. ``model_or_extractor``: a
    `FeatureExtractor`, a Keras inference model (then pass ``image_height`` /
    ``image_width`` / ``use_horizontal_flipping`` / ``fingerprint`` as needed) or a module from
    `make_serving_module`. Returns ``folder``."""
    tf = _tf()
    folder = os.path.abspath(os.fspath(folder))
    _check_target(folder, overwrite)
    module = _as_module(model_or_extractor, **source)
    metadata = _metadata(module, "saved_model", _embedding_size(module))
    with _staging_folder(folder) as staging:
        staged = os.path.join(staging, "saved_model")
        tf.saved_model.save(module, staged, signatures={SIGNATURE_KEY: module.serve})
        _write_json(os.path.join(staged, METADATA_FILE_NAME), metadata)
        _replace(staged, folder)
    return folder


def convert_tflite(module, float16=False):
    """The serving module as TFLite flatbuffer bytes (float16: weights stored as float16)."""
    tf = _tf()
    concrete = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def export_tflite(model_or_extractor, path, float16=False, overwrite=False, **source):
    """Writes a ``.tflite`` file at ``path`` and ``<path>.json``; ``float16`` halves the file
    (weights stored as float16; CPUs without float16 arithmetic, x86 ones, compute in
    float32). Returns ``path``."""
    module = _as_module(model_or_extractor, **source)
    content = convert_tflite(module, float16)

    def write(staged):
        with open(staged, "wb") as file:
            file.write(content)

    export_format = "tflite_float16" if float16 else "tflite"
    return _file_with_metadata(path, overwrite, write,
                               _metadata(module, export_format, _embedding_size(module)))


def _import_onnx_tools():
    _tf()  # tf2onnx imports TensorFlow: tf-keras must be chosen first
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import tf2onnx
    except ImportError as error:
        raise ExportDependencyError(
            "ONNX export needs tf2onnx, onnx and onnxruntime ({}); install them with `pip "
            "install {}`.".format(error, ONNX_REQUIREMENTS)) from error
    return tf2onnx


@contextlib.contextmanager
def _quiet_tf2onnx():
    # tf2onnx logs every step at INFO and a full traceback for each optimizer pass it skips.
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _tf2onnx_model(concrete, opset, catch_errors, skip_transpose_optimizer=False):
    """tf2onnx's ``convert.from_function`` minus its two slow or lenient defaults: it converts
    unsupported ops into TF custom ops that onnxruntime then cannot load (here: an error), and
    it deep-copies the whole graph, weights included, before each optimizer pass so that a
    failing pass can be skipped (``catch_errors``: 27 s instead of 11 s for a ResNet18)."""
    from tf2onnx import optimizer, tf_loader, tfonnx
    from tf2onnx.convert import tensor_names_from_structed
    tf = _tf()
    input_names = [tensor.name for tensor in concrete.inputs if tensor.dtype != tf.resource]
    output_names = [tensor.name for tensor in concrete.outputs if tensor.dtype != tf.resource]
    renames = tensor_names_from_structed(concrete, input_names, output_names)
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete, input_names, output_names)
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(frozen, name="")
        onnx_graph = tfonnx.process_tf_graph(
            graph, continue_on_error=False, opset=int(opset), input_names=input_names,
            output_names=output_names, tensors_to_rename=renames)
        passes = optimizer._get_optimizers().copy()  # noqa: SLF001  (its list, to leave one out)
        if skip_transpose_optimizer:
            passes.pop("optimize_transpose", None)
        onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=catch_errors,
                                              optimizers=passes)
        return onnx_graph.make_model("re-ID embedding")


def convert_onnx(module, opset=DEFAULT_ONNX_OPSET):
    """The serving module as an ONNX ``ModelProto`` (tf2onnx), metadata in ``metadata_props``."""
    _import_onnx_tools()
    concrete = module.serve.get_concrete_function()
    # tf2onnx's transpose optimizer fails on a Conv followed by an Add of a scalar (MobileNetV3's
    # hard-sigmoid); without it onnxruntime's own layout optimizer removes the transposes left.
    # The last attempt is tf2onnx's default, skipping whichever pass fails (slow).
    attempts = (dict(catch_errors=False), dict(catch_errors=False, skip_transpose_optimizer=True),
                dict(catch_errors=True))
    with _quiet_tf2onnx():
        for attempt in attempts:
            try:
                proto = _tf2onnx_model(concrete, opset, **attempt)
                break
            except Exception as error:  # noqa: BLE001
                if attempt is attempts[-1]:
                    raise
                logging.getLogger(__name__).info("tf2onnx failed (%r); converting again with "
                                                 "%s.", error, attempts[attempts.index(attempt) + 1])
    names = ([value.name for value in proto.graph.input],
             [value.name for value in proto.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise RuntimeError("tf2onnx named the ONNX model's inputs and outputs {}, expected "
                           "{}.".format(names, ([INPUT_NAME], [OUTPUT_NAME])))
    for key, value in sorted(module.metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto


def export_onnx(model_or_extractor, path, opset=DEFAULT_ONNX_OPSET, overwrite=False, **source):
    """Writes an ``.onnx`` file at ``path`` (tf2onnx, ``opset``) and ``<path>.json``. Raises
    `ExportDependencyError` when tf2onnx / onnxruntime are missing. Returns ``path``."""
    _import_onnx_tools()
    module = _as_module(model_or_extractor, **source)
    proto = convert_onnx(module, opset)

    def write(staged):
        with open(staged, "wb") as file:
            file.write(proto.SerializeToString())

    return _file_with_metadata(path, overwrite, write, _metadata(
        module, "onnx", _embedding_size(module), dict(onnx_opset=int(opset))))


# Format -> its name inside an export folder.
FORMAT_FILE_NAMES = {"saved_model": "saved_model", "tflite": "model.tflite",
                     "tflite_float16": "model_float16.tflite", "onnx": "model.onnx"}
FORMATS = tuple(FORMAT_FILE_NAMES)


def parse_formats(formats):
    """A list of format names from ``"saved_model,tflite"`` or a sequence; unknown ones refused."""
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = [name.strip() for name in formats if name.strip()]
    unknown = [name for name in formats if name not in FORMAT_FILE_NAMES]
    if unknown or not formats:
        raise ValueError("Unknown export format(s) {}; choose among {} (comma-separated).".format(
            ", ".join(map(repr, unknown)) or "(none given)", ",".join(FORMATS)))
    return list(dict.fromkeys(formats))


def export_formats(model_or_extractor, folder, formats=FORMATS, overwrite=False, check=True,
                   opset=DEFAULT_ONNX_OPSET, reference=None, **source):
    """Writes every format of ``formats`` into ``folder`` (names in `FORMAT_FILE_NAMES`) with a
    summary ``export.json``, all or nothing: the folder appears only once every file is written
    (and, with ``check``, each one's runtime has matched ``reference`` within `TOLERANCES`).
    ``reference(uint8 images) -> embeddings`` defaults to `FeatureExtractor.extract` of the
    Keras model. Returns the summary."""
    formats = parse_formats(formats)
    folder = os.path.abspath(os.fspath(folder))
    if os.path.exists(folder) and not (os.path.isdir(folder) and not os.listdir(folder)) \
            and not overwrite:
        raise FileExistsError("{} already exists and is not empty; pass overwrite=True "
                              "(--overwrite) to replace it, or choose another folder."
                              .format(folder))
    if "onnx" in formats:
        _import_onnx_tools()  # before the slow conversions, not after them
    module = _as_module(model_or_extractor, **source)
    if reference is None:
        reference = _keras_reference(model_or_extractor, module)
    summary = dict(module.metadata, embedding_size=_embedding_size(module), formats={})
    with _staging_folder(folder) as staging:
        staged = os.path.join(staging, "export")
        os.makedirs(staged)
        for name in formats:
            path = os.path.join(staged, FORMAT_FILE_NAMES[name])
            if name == "saved_model":
                export_saved_model(module, path)
            elif name in ("tflite", "tflite_float16"):
                export_tflite(module, path, float16=name == "tflite_float16")
            else:
                export_onnx(module, path, opset=opset)
            entry = dict(path=FORMAT_FILE_NAMES[name], bytes=_size(path))
            if check:
                entry["max_abs_difference"] = check_export(path, reference, TOLERANCES[name])
            summary["formats"][name] = entry
        _write_json(os.path.join(staged, METADATA_FILE_NAME), summary)
        _replace(staged, folder)
    return summary


def _keras_reference(model_or_extractor, module):
    """What the exports must reproduce: `FeatureExtractor.extract` of the Keras model (the
    module's own function when only the module was given)."""
    from inference.feature_extractor import FeatureExtractor
    if isinstance(model_or_extractor, FeatureExtractor):
        return lambda images: model_or_extractor.extract(images, progress=False)
    if model_or_extractor is module:
        return lambda images: module.serve(images)[OUTPUT_NAME].numpy()
    metadata = module.metadata
    extractor = FeatureExtractor(model_or_extractor, metadata["image_height"],
                                 metadata["image_width"], metadata["use_horizontal_flipping"])
    return lambda images: extractor.extract(images, progress=False)


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def check_images(image_height, image_width, count=4, seed=0):
    """Random uint8 RGB images: smooth gradients plus noise, so embeddings differ."""
    generator = np.random.default_rng(seed)
    rows = np.linspace(0, 255, image_height)[None, :, None, None]
    columns = np.linspace(0, 255, image_width)[None, None, :, None]
    weights = generator.uniform(0, 1, (count, 1, 1, 3))
    noise = generator.normal(0, 40, (count, image_height, image_width, 3))
    return np.clip(weights * rows + (1 - weights) * columns + noise, 0, 255).astype(np.uint8)


def check_export(path, reference, tolerance, images=None):
    """Runs the export at ``path`` with its own runtime on ``images`` (default `check_images`)
    and returns the largest difference from ``reference(images)``; raises if above
    ``tolerance``."""
    runner = load_exported(path)
    if images is None:
        images = check_images(runner.image_height, runner.image_width)
    difference = float(np.max(np.abs(runner(images) - np.asarray(reference(images)))))
    if not difference <= tolerance:
        raise RuntimeError("The export {} gives embeddings up to {:.3g} away from the Keras "
                           "model's (tolerance {:g}); it was not written.".format(
                               os.path.basename(path), difference, tolerance))
    return difference


# ------------------------------------------------------------------------------ runners
class ExportedModel:
    """An exported model run by its own runtime: ``model(uint8 (N, H, W, 3)) -> float32 (N, D)``
    (L2-normalised rows); ``metadata`` is its json."""

    format = None

    def __init__(self, path, metadata):
        self.path, self.metadata = path, metadata
        self.image_height = int(metadata["image_height"])
        self.image_width = int(metadata["image_width"])
        self.fingerprint = metadata.get("fingerprint")

    def _checked(self, images):
        images = np.asarray(images)
        expected = (self.image_height, self.image_width, 3)
        if images.ndim == 4 and len(images) == 0:
            raise ValueError("No image given: nothing to embed.")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError("{} takes uint8 RGB images of shape (N, {}, {}, 3), got {} {}; "
                             "resize them first (FeatureExtractor.extract does).".format(
                                 self.path, *expected[:2], images.dtype, images.shape))
        return np.ascontiguousarray(images)

    def __call__(self, images):
        return np.asarray(self._run(self._checked(images)), np.float32)

    def _run(self, images):
        raise NotImplementedError


class SavedModelRunner(ExportedModel):
    format = "saved_model"

    def __init__(self, path, metadata):
        super().__init__(path, metadata)
        self.loaded = _tf().saved_model.load(path)
        self.function = self.loaded.signatures[SIGNATURE_KEY]

    def _run(self, images):
        return self.function(**{INPUT_NAME: _tf().constant(images)})[OUTPUT_NAME].numpy()


def tflite_interpreter_class():
    """LiteRT's interpreter (``ai-edge-litert``) when installed, else TensorFlow's deprecated
    ``tf.lite.Interpreter``: TF 2.21's XNNPACK delegate refuses ``maximum(x, scalar)`` after a
    convolution (GeM pooling's clamp), LiteRT 2.3's runs it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        return _tf().lite.Interpreter


class TFLiteRunner(ExportedModel):
    def __init__(self, path, metadata, num_threads=None):
        super().__init__(path, metadata)
        self.format = metadata.get("format", "tflite")
        self.num_threads = int(num_threads or os.cpu_count() or 1)
        interpreter_class = tflite_interpreter_class()
        self.runtime = interpreter_class.__module__.split(".")[0]
        self.interpreter = self._make(interpreter_class, None)
        self.batch_size = None
        try:
            self._resize(1)
        except RuntimeError as error:
            if "XNNPack" not in str(error):
                raise
            # TensorFlow's own interpreter: its XNNPACK cannot run GeM's clamp (see
            # tflite_interpreter_class); the built-in kernels can, more slowly.
            warnings.warn("{}: XNNPACK failed ({}); running without it. Install ai-edge-litert "
                          "for the faster runtime.".format(path, error))
            self.interpreter = self._make(interpreter_class, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
            self.runtime += " (no XNNPACK)"
            self._resize(1)

    def _make(self, interpreter_class, resolver):
        arguments = dict(model_path=self.path, num_threads=self.num_threads)
        if resolver is not None:
            if interpreter_class.__module__.startswith("tensorflow"):
                arguments["experimental_op_resolver_type"] = getattr(
                    _tf().lite.experimental.OpResolverType, resolver)
            else:
                from ai_edge_litert.interpreter import OpResolverType
                arguments["experimental_op_resolver_type"] = getattr(OpResolverType, resolver)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            return interpreter_class(**arguments)

    def _resize(self, batch_size):
        if batch_size == self.batch_size:
            return
        interpreter = self.interpreter
        self.input_index = interpreter.get_input_details()[0]["index"]
        self.output_index = interpreter.get_output_details()[0]["index"]
        interpreter.resize_tensor_input(
            self.input_index, (batch_size, self.image_height, self.image_width, 3), strict=True)
        self.batch_size = None
        interpreter.allocate_tensors()
        self.batch_size = batch_size

    def _run(self, images):
        self._resize(len(images))
        self.interpreter.set_tensor(self.input_index, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()


class OnnxRunner(ExportedModel):
    format = "onnx"

    def __init__(self, path, metadata, num_threads=None):
        super().__init__(path, metadata)
        try:
            import onnxruntime
        except ImportError as error:
            raise ExportDependencyError("Running an ONNX model needs onnxruntime: `pip install "
                                        "onnxruntime==1.32.0`.") from error
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(num_threads or os.cpu_count() or 1)
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=["CPUExecutionProvider"])

    def _run(self, images):
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def metadata_path(path):
    """Where the json of the exported file or folder ``path`` is."""
    path = os.fspath(path)
    return os.path.join(path, METADATA_FILE_NAME) if os.path.isdir(path) else path + ".json"


def read_metadata(path):
    json_path = metadata_path(path)
    if not os.path.isfile(json_path):
        raise FileNotFoundError("{} has no {} (written by inference.export); export the model "
                                "with tools.export_model.".format(path, json_path))
    with open(json_path) as file:
        return json.load(file)


def load_exported(path, num_threads=None):
    """The runner of an exported SavedModel folder, ``.tflite`` or ``.onnx`` file."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError("{} does not exist: pass a SavedModel folder, a .tflite or an "
                                ".onnx file written by tools.export_model.".format(path))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ValueError("{} is not a SavedModel folder (no saved_model.pb). For an export "
                             "folder, pass one of its files or its saved_model/ folder."
                             .format(path))
        return SavedModelRunner(path, read_metadata(path))
    if path.endswith(".tflite"):
        return TFLiteRunner(path, read_metadata(path), num_threads)
    if path.endswith(".onnx"):
        return OnnxRunner(path, read_metadata(path), num_threads)
    raise ValueError("{}: unknown export format; expected a SavedModel folder, a .tflite or an "
                     ".onnx file.".format(path))
