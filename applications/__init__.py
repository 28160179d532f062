"""Backbones and the re-ID model.

``get_backbone(name, input_shape, weights, last_stride)`` builds one of ``BACKBONE_NAMES``
(see ``applications.backbones``); ``backbone_min_input_size(name)`` is its smallest input,
``backbone_output_stride(name, last_stride)`` its downsampling;
``clone_block`` copies a backbone's last block.
"""
from applications.backbone_base import Backbone, ImagePreprocessing, clone_block
from applications.backbones import (BACKBONE_NAMES, backbone_has_imagenet_weights,
                                    backbone_min_input_size, backbone_output_stride, get_backbone)

__all__ = ["BACKBONE_NAMES", "Backbone", "ImagePreprocessing", "backbone_has_imagenet_weights",
           "backbone_min_input_size", "backbone_output_stride", "clone_block", "get_backbone"]
