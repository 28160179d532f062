"""Re-ID evaluation: distances, CMC / mAP / mINP (Market-1501 and CUHK03 protocols),
gallery centroids and average query expansion.

TensorFlow-free. The ranking kernel is compiled (``metrics.rank_cy``) when built with
``python setup.py build_ext --inplace``; otherwise a NumPy fallback with identical numbers
is used and a warning is issued once.
"""
import warnings

try:
    from metrics import rank_cy as _rank_cy
except ImportError:
    _rank_cy = None
CYTHON_AVAILABLE = _rank_cy is not None
if not CYTHON_AVAILABLE:
    warnings.warn("metrics.rank_cy (compiled ranking kernel) is not built; using the slower "
                  "NumPy fallback. Build it with `python setup.py build_ext --inplace` in the "
                  "repository root.", RuntimeWarning, stacklevel=2)

from metrics.distances import compute_distance_matrix  # noqa: E402
from metrics.evaluation import (compute_CMC_mAP, evaluate_features,  # noqa: E402
                                evaluate_rank)
from metrics.centroids import compute_centroids  # noqa: E402
from metrics.query_expansion import average_query_expansion  # noqa: E402

__all__ = ["CYTHON_AVAILABLE", "average_query_expansion", "compute_CMC_mAP",
           "compute_centroids", "compute_distance_matrix", "evaluate_features", "evaluate_rank"]
