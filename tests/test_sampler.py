"""PKSampler checked against brute-force properties of the round structure."""
import collections
import itertools

import numpy as np
import pytest

from pipeline.sampler import PKSampler

P, K = 4, 3


def make_identity_ids(counts, seed=0):
    """Row -> identity array with `counts[i]` rows of identity 100+i, rows shuffled."""
    ids = np.repeat(np.arange(len(counts)) + 100, counts)
    return np.random.default_rng(seed).permutation(ids)


# 12 identities; 3 of them (1, 2 and 2 images) have fewer than K=3 images.
COUNTS = [3, 4, 5, 6, 7, 9, 10, 12, 1, 2, 2, 8]


def check_batch(batch, identity_ids):
    assert batch.shape == (P * K,)
    ids = identity_ids[batch].reshape(P, K)
    assert (ids == ids[:, :1]).all(), "each identity contributes K consecutive images"
    assert len(set(ids[:, 0])) == P, "P distinct identities per batch"
    assert len(set(batch.tolist())) == P * K


def test_batches_have_p_distinct_identities_times_k_consecutive_images():
    identity_ids = make_identity_ids(COUNTS)
    sampler = PKSampler(identity_ids, P, K, steps_per_epoch=5, seed=1)
    eligible = {100 + i for i, c in enumerate(COUNTS) if c >= K}
    assert set(sampler.eligible_identities.tolist()) == eligible
    seen = set()
    for batch in itertools.islice(iter(sampler), 200):
        check_batch(batch, identity_ids)
        seen.update(identity_ids[batch].tolist())
    assert seen == eligible, "only identities with >= K images, and all of them, get sampled"
    assert len(sampler) == 5


def brute_force_check_round(batches, identity_ids, balancing):
    """The originals' round invariants, from the identity counts alone."""
    counts = collections.Counter(identity_ids.tolist())
    sections = {i: c // K for i, c in counts.items() if c >= K}
    flat = batches.ravel().tolist()
    assert len(flat) == len(set(flat)), "no image repeated within a round"
    used = collections.Counter()
    for batch in batches:
        check_batch(batch, identity_ids)
        for identity in identity_ids[batch].reshape(P, K)[:, 0]:
            used[int(identity)] += 1
    limit = 1 if balancing else None
    for identity, n in used.items():
        assert n <= (limit or sections[identity])
    remaining = [i for i, n in sections.items() if used[i] < (min(n, 1) if balancing else n)]
    # The round stops exactly when fewer than P identities still have sections.
    assert len(remaining) < P
    if balancing:
        assert len(batches) == len(sections) // P


@pytest.mark.parametrize("balancing", [False, True])
def test_round_structure_brute_force(balancing):
    identity_ids = make_identity_ids(COUNTS)
    sampler = PKSampler(identity_ids, P, K, steps_per_epoch=3, use_identity_balancing=balancing,
                        seed=7)
    for _ in range(30):
        brute_force_check_round(sampler.sample_round(), identity_ids, balancing)


def test_epochs_concatenate_rounds_and_span_round_boundaries():
    identity_ids = make_identity_ids(COUNTS)
    steps = 7  # not a divisor of the round length, so epochs straddle rounds
    rounds_source = PKSampler(identity_ids, P, K, steps_per_epoch=steps, seed=3)
    rounds = np.concatenate([rounds_source.sample_round() for _ in range(20)])
    sampler = PKSampler(identity_ids, P, K, steps_per_epoch=steps, seed=3)
    epochs = [sampler.next_epoch() for _ in range(len(rounds) // steps)]
    assert all(epoch.shape == (steps, P * K) for epoch in epochs)
    stream = np.concatenate(epochs)
    np.testing.assert_array_equal(stream, rounds[:len(stream)])
    # Iteration yields the same batches one at a time.
    iterated = PKSampler(identity_ids, P, K, steps_per_epoch=steps, seed=3)
    np.testing.assert_array_equal(np.stack(list(itertools.islice(iter(iterated), len(stream)))),
                                  stream)


def test_each_round_is_a_partition_into_shuffled_sections():
    """Within a round an identity's images are disjoint K-sized sections of its rows."""
    identity_ids = make_identity_ids([10, 10, 10, 10, 10])
    sampler = PKSampler(identity_ids, P, K, seed=0)
    orders = set()
    for _ in range(50):
        batches = sampler.sample_round()
        per_identity = collections.defaultdict(list)
        for batch in batches:
            for section in batch.reshape(P, K):
                per_identity[int(identity_ids[section[0]])].extend(section.tolist())
        for identity, rows in per_identity.items():
            assert len(rows) == len(set(rows)) and len(rows) % K == 0
            assert set(rows) <= set(np.flatnonzero(identity_ids == identity).tolist())
        orders.add(tuple(batches[0].tolist()))
    assert len(orders) > 40, "rows are reshuffled every round"


def test_identity_balancing_uses_each_identity_once_per_round():
    identity_ids = make_identity_ids([12] * 9 + [3] * 4)
    sampler = PKSampler(identity_ids, P, K, use_identity_balancing=True, seed=0)
    for _ in range(20):
        batches = sampler.sample_round()
        assert len(batches) == 13 // P
        firsts = identity_ids[batches.reshape(-1, K)[:, 0]]
        assert len(firsts) == len(set(firsts.tolist()))
    # Without balancing, identities with many images recur within a round.
    plain = PKSampler(identity_ids, P, K, seed=0).sample_round()
    firsts = identity_ids[plain.reshape(-1, K)[:, 0]]
    assert len(firsts) > len(set(firsts.tolist()))


def test_identities_drawn_uniformly():
    """All 12 identities have one section: the first batch of a round is a uniform P-subset."""
    identity_ids = make_identity_ids([K] * 12)
    sampler = PKSampler(identity_ids, P, K, seed=5)
    hits = collections.Counter()
    rounds = 3000
    for _ in range(rounds):
        hits.update(set(identity_ids[sampler.sample_round()[0]].tolist()))
    frequencies = np.array([hits[i] / rounds for i in range(100, 112)])
    expected = P / 12  # probability to be among the first batch; sd ~ 0.0086
    assert np.abs(frequencies - expected).max() < 0.04


def test_determinism_with_seed():
    identity_ids = make_identity_ids(COUNTS)
    first = list(itertools.islice(iter(PKSampler(identity_ids, P, K, 4, seed=11)), 30))
    second = list(itertools.islice(iter(PKSampler(identity_ids, P, K, 4, seed=11)), 30))
    other = list(itertools.islice(iter(PKSampler(identity_ids, P, K, 4, seed=12)), 30))
    np.testing.assert_array_equal(np.stack(first), np.stack(second))
    assert not np.array_equal(np.stack(first), np.stack(other))
    unseeded = [list(itertools.islice(iter(PKSampler(identity_ids, P, K, 4)), 30))
                for _ in range(2)]
    assert not np.array_equal(np.stack(unseeded[0]), np.stack(unseeded[1]))


def test_impossible_batch_size_error_names_flags_and_max_p():
    identity_ids = make_identity_ids(COUNTS)  # 9 identities have >= 3 images, 6 have >= 6
    with pytest.raises(ValueError, match=r"--identity_num_per_batch.*at most 9.*--image_num_per"):
        PKSampler(identity_ids, identity_num_per_batch=10, image_num_per_identity=3)
    with pytest.raises(ValueError, match=r"at most 6 "):
        PKSampler(identity_ids, identity_num_per_batch=7, image_num_per_identity=6)
    with pytest.raises(ValueError, match="image_num_per_identity"):
        PKSampler(identity_ids, identity_num_per_batch=2, image_num_per_identity=0)
    PKSampler(identity_ids, identity_num_per_batch=9, image_num_per_identity=3)


def test_market_like_defaults_epoch_size():
    identity_ids = make_identity_ids([4, 5, 8, 20] * 10 + [2] * 5)
    sampler = PKSampler(identity_ids, 16, 4, steps_per_epoch=200, seed=0)
    epoch = sampler.next_epoch()
    assert epoch.shape == (200, 64)
    assert epoch.dtype == np.int64
