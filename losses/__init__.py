"""Training losses: soft-margin batch-hard triplet and (label-smoothed) cross-entropy.

Both take integer identity labels (B,) or (B, 1) and also accept one-hot labels (B, C).
"""
from losses.classification import categorical_cross_entropy, CategoricalCrossEntropy
from losses.triplet import batch_hard_triplet_loss, BatchHardTripletLoss

__all__ = ["batch_hard_triplet_loss", "BatchHardTripletLoss", "categorical_cross_entropy",
           "CategoricalCrossEntropy"]
