"""The input pipeline: PK sampler, augmentation, the training tf.data input and feature extraction.

Data sources (the dataset loaders) live in ``datasets``; everything here works on their image
paths and labels.
"""
