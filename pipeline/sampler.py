"""P x K identity sampler for triplet-style training batches (the originals' ``TrainDataSequence``).

The sampler works on row indices of the training DataFrame; the caller maps indices to image paths
and labels. Identities with fewer than K images are never sampled (they still count as classifier
classes, which is the caller's business).
"""
import numpy as np

__all__ = ["PKSampler"]


class PKSampler:
    """Infinite stream of batches of ``P*K`` row indices: P distinct identities x K consecutive images.

    Each *round*: every identity with >= K images has its rows shuffled, truncated to a multiple of
    K and cut into sections of K. While at least P identities still have sections, P of them are
    drawn uniformly without replacement and the last section of each is popped (with
    ``use_identity_balancing`` an identity is retired after one section, i.e. used at most once per
    round). Indices accumulate in a running list that is emitted as one *epoch* of
    ``steps_per_epoch`` batches as soon as it holds ``P*K*steps_per_epoch`` indices, so an epoch
    may span two rounds and a round may span epochs. Sections left over at the end of a round are
    dropped.

    Args:
        identity_ids: identity of each training row (any hashable/sortable values), length N.
        identity_num_per_batch: P.
        image_num_per_identity: K.
        steps_per_epoch: batches per epoch; ``len(sampler)``.
        use_identity_balancing: AdaptiveL2's ``use_identity_balancing_in_training`` variant.
        seed: seed of the sampler's own ``np.random.Generator`` (None = nondeterministic).

    Iterating yields int64 arrays of shape (P*K,), forever; ``next_epoch()`` returns the next
    (steps_per_epoch, P*K) block.
    """

    def __init__(self, identity_ids, identity_num_per_batch=16, image_num_per_identity=4,
                 steps_per_epoch=200, use_identity_balancing=False, seed=None):
        identity_ids = np.asarray(identity_ids)
        if identity_ids.ndim != 1:
            raise ValueError(f"identity_ids must be one-dimensional, got shape {identity_ids.shape}.")
        for name, value in (("identity_num_per_batch", identity_num_per_batch),
                            ("image_num_per_identity", image_num_per_identity),
                            ("steps_per_epoch", steps_per_epoch)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r} "
                                 f"(flag --{name}).")
        self.identity_num_per_batch = P = int(identity_num_per_batch)
        self.image_num_per_identity = K = int(image_num_per_identity)
        self.steps_per_epoch = int(steps_per_epoch)
        self.use_identity_balancing = bool(use_identity_balancing)
        self.batch_size = P * K
        self.epoch_size = self.batch_size * self.steps_per_epoch

        unique_ids, inverse = np.unique(identity_ids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=len(unique_ids))
        rows_per_identity = np.split(order, np.cumsum(counts)[:-1]) if len(order) else []
        eligible = [i for i, rows in enumerate(rows_per_identity) if len(rows) >= K]
        self.eligible_identities = unique_ids[eligible]
        self._rows_per_identity = [rows_per_identity[i] for i in eligible]
        if len(eligible) < P:
            raise ValueError(
                f"Cannot build batches of {P} identities x {K} images: only {len(eligible)} of "
                f"{len(unique_ids)} identities have at least {K} images. Lower "
                f"--identity_num_per_batch to at most {len(eligible)} (the maximum feasible P for "
                f"K={K}) or lower --image_num_per_identity.")

        self._rng = np.random.default_rng(seed)
        self._pending = np.empty(0, np.int64)  # indices carried over from the previous round

    def __len__(self):
        return self.steps_per_epoch

    def sample_round(self):
        """One round of sampling: an int64 array (num_batches, P*K) (num_batches >= 1)."""
        P, K = self.identity_num_per_batch, self.image_num_per_identity
        rng = self._rng
        sections = []
        for rows in self._rows_per_identity:
            rows = rows.copy()
            rng.shuffle(rows)
            sections.append(list(rows[:len(rows) // K * K].reshape(-1, K)))
        available = list(range(len(sections)))  # positions into `sections`, in a fixed order
        batches = []
        while len(available) >= P:
            chosen = rng.choice(len(available), size=P, replace=False)
            batch = []
            exhausted = []
            for position in chosen:
                identity = available[position]
                batch.append(sections[identity].pop())
                if self.use_identity_balancing or not sections[identity]:
                    exhausted.append(position)
            for position in sorted(exhausted, reverse=True):
                del available[position]
            batches.append(np.concatenate(batch))
        return np.stack(batches).astype(np.int64)

    def next_epoch(self):
        """The next ``steps_per_epoch`` batches as an int64 array (steps_per_epoch, P*K)."""
        parts = [self._pending]
        collected = len(self._pending)
        while collected < self.epoch_size:
            part = self.sample_round().ravel()
            parts.append(part)
            collected += len(part)
        indices = np.concatenate(parts)
        self._pending = indices[self.epoch_size:]
        return indices[:self.epoch_size].reshape(self.steps_per_epoch, self.batch_size)

    def __iter__(self):
        while True:
            yield from self.next_epoch()
