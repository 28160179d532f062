"""Using a trained run: rebuild its model from the run folder (`run_loading.py`), extract
L2-normalised embeddings (`feature_extractor.py`) and export it (`export.py`)."""
