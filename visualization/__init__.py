"""Pictures for inspecting a run: ranked lists of the best and worst queries by AP
(``ranked_lists``) and one augmented PK training batch (``training_batch``), as PNG files.

Both use matplotlib's Agg canvas directly (pyplot's backend is left alone) and neither imports
TensorFlow.
"""
