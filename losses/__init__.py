"""Training losses: soft-margin batch-hard triplet, (label-smoothed) cross-entropy and its margin
variants on cosines (CosFace, ArcFace).

Both take integer identity labels (B,) or (B, 1) and also accept one-hot labels (B, C).
"""
from losses.classification import (categorical_cross_entropy, CategoricalCrossEntropy,
                                    margin_logits, MarginCrossEntropy)
from losses.triplet import batch_hard_triplet_loss, BatchHardTripletLoss

__all__ = ["batch_hard_triplet_loss", "BatchHardTripletLoss", "categorical_cross_entropy",
           "CategoricalCrossEntropy", "margin_logits", "MarginCrossEntropy"]
