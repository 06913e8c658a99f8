r"""Properties of the random, leave-one-out and temporal splits."""
from fractions import Fraction

import numpy as np
import pytest

from pyg_mmrec.errors import ConfigError
from pyg_mmrec.prepare import resolve_cold_items, split_interactions, \
    split_sizes
from pyg_mmrec.prepare.split import TEST, TRAIN, VAL


def random_interactions(seed, num_users=50, num_items=40, max_per_user=25):
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(num_users):
        k = int(rng.integers(1, max_per_user + 1))
        chosen = rng.choice(num_items, size=min(k, num_items), replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
        # Few distinct timestamps: ties must be handled too.
        times += rng.integers(0, 8, size=len(chosen)).tolist()
    perm = rng.permutation(len(users))
    return (np.array(users)[perm], np.array(items)[perm],
            np.array(times)[perm])


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('ratios', [(8, 1, 1), (0.7, 0.2, 0.1), (1, 1, 1)])
def test_random_split_ratios_within_one_per_user(seed, ratios):
    users, items, _ = random_interactions(seed)
    codes = split_interactions(users, items, 'random', ratios, seed=seed)
    total = Fraction(sum(Fraction(repr(float(r))) for r in ratios))
    shares = [Fraction(repr(float(r))) / total for r in ratios]
    for u in np.unique(users):
        mine = codes[users == u]
        n = mine.size
        assert (mine == TRAIN).sum() >= 1  # no user lost
        for code, share in zip((TRAIN, VAL, TEST), shares):
            assert abs(int((mine == code).sum()) - n * share) <= 1, (u, code)


def test_random_split_is_seeded():
    users, items, _ = random_interactions(0)
    a = split_interactions(users, items, 'random', (8, 1, 1), seed=3)
    b = split_interactions(users, items, 'random', (8, 1, 1), seed=3)
    c = split_interactions(users, items, 'random', (8, 1, 1), seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_sizes_exact_rounding():
    # 5 * 0.1 is 0.5 exactly and rounds up: 0.1 in floating point is not
    # below 1/10 here.
    train, val, test = split_sizes(np.array([1, 2, 5, 10, 15]), 'random',
                                   (0.8, 0.1, 0.1))
    assert train.tolist() == [1, 2, 3, 8, 11]
    assert val.tolist() == [0, 0, 1, 1, 2]
    assert test.tolist() == [0, 0, 1, 1, 2]
    train, val, test = split_sizes(np.array([1, 2, 3, 4]), 'loo')
    assert (train.tolist(), val.tolist(), test.tolist()) == \
        ([1, 1, 1, 2], [0, 0, 1, 1], [0, 1, 1, 1])


@pytest.mark.parametrize('seed', range(4))
def test_leave_one_out(seed):
    users, items, _ = random_interactions(seed)
    codes = split_interactions(users, items, 'loo', seed=seed)
    for u in np.unique(users):
        mine = codes[users == u]
        n = mine.size
        assert (mine == TEST).sum() == (1 if n >= 2 else 0)
        assert (mine == VAL).sum() == (1 if n >= 3 else 0)
        assert (mine == TRAIN).sum() == n - (n >= 2) - (n >= 3)


@pytest.mark.parametrize('seed', range(6))
def test_temporal_order_respected(seed):
    users, items, times = random_interactions(seed)
    codes = split_interactions(users, items, 'temporal', (8, 1, 1),
                               seed=seed, timestamps=times)
    for u in np.unique(users):
        mine, t = codes[users == u], times[users == u]
        assert (mine == TRAIN).sum() >= 1
        parts = [t[mine == c] for c in (TRAIN, VAL, TEST)]
        for earlier, later in ((parts[0], parts[1]), (parts[1], parts[2]),
                               (parts[0], parts[2])):
            if earlier.size and later.size:
                assert earlier.max() <= later.min()
    # Same counts as the random split: only the order differs.
    random_codes = split_interactions(users, items, 'random', (8, 1, 1))
    for c in (TRAIN, VAL, TEST):
        assert np.bincount(users[codes == c], minlength=50).tolist() == \
            np.bincount(users[random_codes == c], minlength=50).tolist()


def test_temporal_needs_timestamps():
    with pytest.raises(ConfigError, match='timestamp'):
        split_interactions(np.zeros(3), np.zeros(3), 'temporal')


@pytest.mark.parametrize('method', ['random', 'loo'])
def test_swap_keeps_held_out_items_in_training(method):
    # Every item but one is popular; each user also has one unique item.
    # Whenever a unique item is drawn for val/test it must be swapped.
    users, items = [], []
    for u in range(30):
        for i in range(8):
            users.append(u)
            items.append(i)
        users.append(u)
        items.append(100 + u)
    users, items = np.array(users), np.array(items)
    for seed in range(5):
        codes = split_interactions(users, items, method, (6, 2, 2),
                                   seed=seed)
        train_items = set(items[codes == TRAIN].tolist())
        assert set(items[codes != TRAIN].tolist()) <= train_items
        ref = split_interactions(users, items, method, (6, 2, 2), seed=seed)
        assert np.array_equal(codes, ref)
        # Per-user counts are those of split_sizes: swaps do not move them.
        sizes = split_sizes(np.bincount(users), method, (6, 2, 2))
        for code, size in zip((TRAIN, VAL, TEST), sizes):
            assert np.bincount(users[codes == code],
                               minlength=30).tolist() == size.tolist()


def test_resolve_cold_items():
    items = np.array([0, 1, 1, 2, 2])
    codes = np.array([TRAIN, TEST, VAL, TRAIN, TEST], dtype=np.int8)
    keep, new, n = resolve_cold_items(items, codes, 'drop')
    assert keep.tolist() == [True, False, False, True, True] and n == 2
    assert new.tolist() == codes.tolist()
    keep, new, n = resolve_cold_items(items, codes, 'train')
    assert keep.all() and n == 2
    assert new.tolist() == [TRAIN, TRAIN, TRAIN, TRAIN, TEST]
    with pytest.raises(ConfigError, match="--cold-items must be one of"):
        resolve_cold_items(items, codes, 'keep')


def test_bad_ratios():
    for ratios, match in (((1, 1), 'three values'),
                          ((1, 0, 1), 'positive validation and test'),
                          ((0, 1, 1), 'positive training share'),
                          ((1, -1, 1), 'non-negative')):
        with pytest.raises(ConfigError, match=match):
            split_interactions(np.zeros(2), np.zeros(2), 'random', ratios)
