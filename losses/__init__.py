"""Training losses: soft- or hard-margin batch-hard triplet (with the harder-example factor),
pairwise circle loss, center loss with its own centers, (label-smoothed) cross-entropy and its
margin variants on cosines (CosFace, ArcFace).

They take integer identity labels (B,) or (B, 1) and also accept one-hot labels (B, C).
"""
from losses.center import center_loss, CenterLoss
from losses.circle import pairwise_circle_loss, CircleLoss
from losses.classification import (categorical_cross_entropy, CategoricalCrossEntropy,
                                    margin_logits, MarginCrossEntropy)
from losses.triplet import batch_hard_triplet_loss, BatchHardTripletLoss

__all__ = ["batch_hard_triplet_loss", "BatchHardTripletLoss", "categorical_cross_entropy",
           "CategoricalCrossEntropy", "center_loss", "CenterLoss", "CircleLoss", "margin_logits",
           "MarginCrossEntropy", "pairwise_circle_loss"]
