"""Re-ID evaluation: distances, CMC / mAP / mINP (Market-1501 and CUHK03 protocols).

TensorFlow-free. The ranking kernel is compiled (``metrics.rank_cy``) when built with
``python setup.py build_ext --inplace``; otherwise a NumPy fallback with identical numbers
is used and a warning is issued once.
"""
import warnings

try:
    from metrics import rank_cy as _rank_cy  # noqa: F401
    CYTHON_AVAILABLE = True
except ImportError:
    CYTHON_AVAILABLE = False
    warnings.warn("metrics.rank_cy (compiled ranking kernel) is not built; using the slower "
                  "NumPy fallback. Build it with `python setup.py build_ext --inplace` in the "
                  "repository root.", RuntimeWarning, stacklevel=2)

from metrics.distances import compute_distance_matrix  # noqa: E402
from metrics.evaluation import (compute_CMC_mAP, evaluate_features,  # noqa: E402
                                evaluate_rank)

__all__ = ["CYTHON_AVAILABLE", "compute_CMC_mAP", "compute_distance_matrix",
           "evaluate_features", "evaluate_rank"]
