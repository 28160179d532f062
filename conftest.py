"""Test-wide setup: the repository root is importable and TensorFlow uses tf-keras."""
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARED_DATASETS = os.environ.get(
    "REID_SHARED_DATASETS",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "shared", "datasets")))
