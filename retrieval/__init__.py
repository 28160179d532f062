"""Retrieval over saved re-ID features: a searchable gallery index (exact or faiss top-k cosine
search), tied to the model that produced its features. TensorFlow-free."""
from retrieval.gallery_index import BACKENDS, FAISS_INDEX_TYPES, GalleryIndex, exact_search

__all__ = ["BACKENDS", "FAISS_INDEX_TYPES", "GalleryIndex", "exact_search"]
