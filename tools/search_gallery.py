"""Build a searchable gallery index and answer top-k queries against it.

Build from saved features or from images (the model extracts them)::

    python -m tools.search_gallery --build_index_from output/run/test.npz --index_path gallery_index
    python -m tools.search_gallery --build_index_from gallery_images/ --model_path output/run \
        --index_path gallery_index

Query with images, a folder or an .npz of query features; prints a table and writes CSV/JSON::

    python -m tools.search_gallery --index_path gallery_index --query output/run/test.npz \
        --top_k 10 --output_path results.csv
    python -m tools.search_gallery --index_path gallery_index --query query_images/ \
        --model_path output/run --output_path results.json

An .npz is either the evaluator's ``<split>.npz`` (``--save_data_to_disk``; its gallery part
builds, its query part queries) or the feature-extraction tool's file (``features``,
``image_file_paths``, optional ``identity_ID``, ``camera_ID``, ``fingerprint``). An index remembers
the fingerprint of the model that made its features and refuses queries from another model.
Identities and cameras of images come from Market-style names (``0002_c1s1_000451_03.jpg``)
when every name has one.
"""
import collections
import csv
import json
import os
import sys

import numpy as np
from absl import app, flags

from retrieval.gallery_index import BACKENDS, FAISS_INDEX_TYPES, GalleryIndex
from utils.files import atomic_write

FeatureSet = collections.namedtuple(
    "FeatureSet", ["features", "image_paths", "identity_ids", "camera_ids", "fingerprint"])
OUTPUT_FORMATS = (".csv", ".json")
CSV_COLUMNS = ("query", "query_index", "query_identity", "query_camera", "rank", "gallery_index",
               "gallery_path", "gallery_identity", "gallery_camera", "distance", "same_identity")
EVALUATOR_KEYS = "{}_image_features_array"


def _optional_array(data, key):
    return data[key] if key in data.files else None


def read_feature_file(path, part):
    """The ``part`` ('gallery' or 'query') of an evaluator .npz, or the whole of a
    feature-extraction .npz, as a FeatureSet; images without saved paths are named part[i]."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature file {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        if EVALUATOR_KEYS.format(part) in data.files:
            features = data[EVALUATOR_KEYS.format(part)]
            paths = _optional_array(data, f"{part}_image_file_path_array")
            identities = _optional_array(data, f"{part}_identity_ID_array")
            cameras = _optional_array(data, f"{part}_camera_ID_array")
            fingerprint = None
        elif "features" in data.files:
            features = data["features"]
            paths = _optional_array(data, "image_file_paths")
            identities = _optional_array(data, "identity_ID")
            cameras = _optional_array(data, "camera_ID")
            fingerprint = _optional_array(data, "fingerprint")
            fingerprint = None if fingerprint is None else str(fingerprint)
        else:
            raise ValueError(f"{path} holds neither {EVALUATOR_KEYS.format(part)} (the evaluator's "
                             "--save_data_to_disk file) nor 'features' (the feature-extraction "
                             f"tool's file); its keys are {sorted(data.files)}")
    if paths is None:
        paths = np.array(["{}[{}]".format(part, index) for index in range(len(features))])
    return FeatureSet(features, np.asarray(paths).astype(str), identities, cameras, fingerprint)


def resolve_inputs(inputs):
    """('npz', path) for one .npz, else ('images', image paths) from folders and image files."""
    from inference.feature_extractor import list_images
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    if not inputs:
        raise ValueError("no input given: pass image paths, a folder of images or an .npz file")
    if any(str(item).endswith(".npz") for item in inputs):
        if len(inputs) > 1:
            raise ValueError(f"an .npz input must come alone, got {inputs}")
        return "npz", inputs[0]
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths.extend(list_images(item, recursive=True))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item} is neither an image file nor a folder")
    return "images", paths


def load_extractor(model_path):
    """The feature extractor of a run folder or checkpoint (imports TensorFlow)."""
    if not model_path:
        raise ValueError("images need a model to extract their features: pass --model_path (a "
                         "run folder or checkpoint), or give an .npz of features instead")
    from inference.feature_extractor import FeatureExtractor
    return FeatureExtractor.from_run(model_path)


def read_inputs(inputs, part, model_path=None, extractor=None, index=None):
    """FeatureSet of the inputs (an .npz, or images through the model). With ``index``, the
    model's fingerprint is checked before any image is read."""
    kind, value = resolve_inputs(inputs)
    if kind == "npz":
        feature_set = read_feature_file(value, part)
        if index is not None:
            index.check_fingerprint(feature_set.fingerprint)
        return feature_set, extractor
    from tools.extract_features import parse_identities
    extractor = extractor or load_extractor(model_path)
    if index is not None:
        index.check_fingerprint(extractor.fingerprint)
    features = extractor.extract(value, progress=True)
    identities, cameras = parse_identities(value) or (None, None)
    return FeatureSet(features, np.array(value, dtype=str), identities, cameras,
                      extractor.fingerprint), extractor


def build_index(source, index_path, model_path=None, extractor=None, backend="auto",
                faiss_index_type="hnsw_flat", target_recall=0.95, recall_k=10):
    """Build an index from an .npz (its gallery part) or images and save it to ``index_path``;
    returns (index, extractor)."""
    feature_set, extractor = read_inputs(source, "gallery", model_path, extractor)
    index = GalleryIndex.build(
        feature_set.features, feature_set.image_paths, feature_set.identity_ids,
        feature_set.camera_ids, feature_set.fingerprint, backend=backend,
        faiss_index_type=faiss_index_type, target_recall=target_recall, recall_k=recall_k)
    index.save(index_path)
    print("Gallery index written to {}: {}".format(index_path, index.describe()))
    if index.fingerprint is None:
        print("Note: no model fingerprint with these features, so queries from another model "
              "cannot be refused.")
    return index, extractor


def _identity(values, position):
    return None if values is None else int(values[position])


def result_rows(index, queries, distances, indices):
    """One dict per (query, rank) with the CSV_COLUMNS keys; same_identity is None when either
    identity is unknown."""
    rows = []
    for query_position, (row_distances, row_indices) in enumerate(zip(distances, indices)):
        query_identity = _identity(queries.identity_ids, query_position)
        for rank, (distance, gallery_position) in enumerate(zip(row_distances, row_indices), 1):
            gallery_identity = _identity(index.identity_ids, gallery_position)
            same = (None if query_identity is None or gallery_identity is None
                    else query_identity == gallery_identity)
            rows.append(dict(
                query=str(queries.image_paths[query_position]), query_index=query_position,
                query_identity=query_identity,
                query_camera=_identity(queries.camera_ids, query_position), rank=rank,
                gallery_index=int(gallery_position),
                gallery_path=str(index.image_paths[gallery_position]),
                gallery_identity=gallery_identity,
                gallery_camera=_identity(index.camera_ids, gallery_position),
                distance=round(float(distance), 6), same_identity=same))
    return rows


def _short(text, width):
    return text if len(text) <= width else "..." + text[-(width - 3):]


def format_table(rows, print_limit=10):
    """The rows as a text table, the first ``print_limit`` queries only."""
    lines = ["{:<40} {:>4}  {:<40} {:>8}  {}".format("query", "rank", "gallery path", "distance",
                                                    "same identity?")]
    queries = sorted({row["query_index"] for row in rows})
    shown = set(queries[:print_limit])
    for row in rows:
        if row["query_index"] in shown:
            same = {True: "yes", False: "no", None: "?"}[row["same_identity"]]
            lines.append("{:<40} {:>4}  {:<40} {:>8.4f}  {}".format(
                _short(row["query"], 40) if row["rank"] == 1 else "", row["rank"],
                _short(row["gallery_path"], 40), row["distance"], same))
    if len(queries) > len(shown):
        lines.append("... {} more queries not shown".format(len(queries) - len(shown)))
    return "\n".join(lines)


def write_results(rows, output_path, index_description="", top_k=None):
    """Write the rows as CSV (one line per query and rank) or JSON (matches grouped by query),
    atomically."""
    extension = os.path.splitext(output_path)[1].lower()
    if extension not in OUTPUT_FORMATS:
        raise ValueError(f"--output_path {output_path} must end in one of {OUTPUT_FORMATS}")
    if extension == ".csv":
        with atomic_write(output_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({key: "" if value is None else value for key, value in row.items()})
        return
    queries = collections.OrderedDict()
    for row in rows:
        query = queries.setdefault(row["query_index"], dict(
            query=row["query"], query_index=row["query_index"],
            query_identity=row["query_identity"], query_camera=row["query_camera"], matches=[]))
        query["matches"].append({key: row[key] for key in CSV_COLUMNS if key not in query})
    with atomic_write(output_path, "w") as file:
        json.dump(dict(index=index_description, top_k=top_k, queries=list(queries.values())),
                  file, indent=1)


def search_gallery(index, inputs, top_k=10, model_path=None, extractor=None, output_path=None,
                   print_limit=10, search_breadth=0):
    """Answer top-k queries (image paths, a folder or an .npz) against ``index`` (a GalleryIndex
    or its path); prints a table, writes ``output_path`` (.csv / .json) if given; returns the
    rows."""
    if not isinstance(index, GalleryIndex):
        index = GalleryIndex.load(index)
    if search_breadth:
        index.set_search_breadth(search_breadth)
    if output_path and os.path.splitext(output_path)[1].lower() not in OUTPUT_FORMATS:
        raise ValueError(f"--output_path {output_path} must end in one of {OUTPUT_FORMATS}")
    queries, extractor = read_inputs(inputs, "query", model_path, extractor, index)
    if queries.fingerprint is None or index.fingerprint is None:
        print("Note: the model fingerprint of the {} is unknown, so the query model cannot be "
              "checked against the index's.".format(
                  "queries" if queries.fingerprint is None else "index"))
    distances, indices = index.search(queries.features, top_k)
    rows = result_rows(index, queries, distances, indices)
    print("Top-{} of {} queries in {}".format(indices.shape[1], len(indices), index.describe()))
    print(format_table(rows, print_limit))
    known = [row["same_identity"] for row in rows if row["rank"] == 1
             and row["same_identity"] is not None]
    if known:
        print("Rank-1 shares the query's identity for {} of {} queries.".format(
            sum(known), len(known)))
    if output_path:
        write_results(rows, output_path, index.describe(), int(indices.shape[1]))
        print("Results written to {}".format(output_path))
    return rows


def define_flags():
    flags.DEFINE_string("build_index_from", None,
                        "Build an index from this .npz of features or folder of images.")
    flags.DEFINE_string("index_path", None,
                        "The index: a folder, or a single file if it ends in .npz.")
    flags.DEFINE_list("query", None, "Query image paths, folders, or one .npz of query features.")
    flags.DEFINE_integer("top_k", 10, "Gallery images returned per query.")
    flags.DEFINE_string("output_path", None, "Write the results here (.csv or .json).")
    flags.DEFINE_string("model_path", None,
                        "Run folder or checkpoint that extracts features of image inputs.")
    flags.DEFINE_enum("backend", "auto", BACKENDS,
                      "exact search, faiss, or auto: exact below 200,000 images, and where faiss "
                      "at the target recall is not twice as fast as exact search.")
    flags.DEFINE_enum("faiss_index_type", "hnsw_flat", FAISS_INDEX_TYPES,
                      "The faiss index: HNSW graph (fastest at 0.95 recall in "
                      "benchmarks/gallery_search_speed.py) or IVF with flat lists.")
    flags.DEFINE_float("target_recall", 0.95,
                       "faiss: recall@10 against exact search that the search breadth is "
                       "calibrated to reach when building.")
    flags.DEFINE_integer("faiss_search_breadth", 0,
                         "faiss: nprobe (IVF) or efSearch (HNSW) for these queries; 0 keeps the "
                         "calibrated one.")
    flags.DEFINE_integer("print_limit", 10, "Queries shown in the printed table.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: {}".format(argv[1:]))
    values = flags.FLAGS
    if not values.index_path:
        raise app.UsageError("--index_path is required (the index to build or to query)")
    if not values.build_index_from and not values.query:
        raise app.UsageError("give --build_index_from SOURCE to build and/or --query INPUTS to "
                             "search")
    try:
        extractor = index = None
        if values.build_index_from:
            index, extractor = build_index(
                values.build_index_from, values.index_path, values.model_path,
                backend=values.backend, faiss_index_type=values.faiss_index_type,
                target_recall=values.target_recall)
        if values.query:
            search_gallery(index or values.index_path, values.query, values.top_k,
                           values.model_path, extractor, values.output_path, values.print_limit,
                           values.faiss_search_breadth)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as error:
        print("error: {}".format(error), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
