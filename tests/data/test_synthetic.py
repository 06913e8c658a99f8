r"""The synthetic generator: determinism, split invariants, validation."""
import pytest
import torch

from pyg_mmrec.data.hetero import INTERACTS, item_modalities, split_edge_index
from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.errors import ConfigError

SMALL = dict(num_users=200, num_items=100)


def _keys(data, split):
    index = split_edge_index(data, split)
    return index[0] * data['item'].num_nodes + index[1]


def _tensors(data):
    out = {}
    for store in data.stores:
        for key, value in store.items():
            if isinstance(value, torch.Tensor):
                out[(getattr(store, '_key', None), key)] = value
    return out


def test_same_seed_same_data():
    a = make_synthetic(SyntheticConfig(seed=3, **SMALL))
    b = make_synthetic(SyntheticConfig(seed=3, **SMALL))
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    assert len(ta) == 3 + 3  # three edge sets, three modalities
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def test_data_does_not_depend_on_the_global_rng():
    # Everything is drawn from the config's own generator: the global RNG
    # in another state (or consumed by the caller) changes nothing.
    torch.manual_seed(11)
    a = make_synthetic(SyntheticConfig(seed=3, **SMALL))
    torch.manual_seed(12)
    torch.rand(5)
    b = make_synthetic(SyntheticConfig(seed=3, **SMALL))
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys() and len(ta) == 6
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def test_different_seeds_differ():
    a = make_synthetic(SyntheticConfig(seed=0, **SMALL))
    b = make_synthetic(SyntheticConfig(seed=1, **SMALL))
    assert not torch.equal(a['item'].visual, b['item'].visual)
    assert not torch.equal(_keys(a, 'train'), _keys(b, 'train'))


def test_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make_synthetic(SyntheticConfig(**SMALL))
    assert torch.equal(torch.rand(3), expected)


CONFIGS = [
    SyntheticConfig(**SMALL),
    SyntheticConfig(**SMALL, seed=7, mean_degree=3),
    SyntheticConfig(num_users=50, num_items=8, mean_degree=5, seed=2),
    SyntheticConfig(num_users=300, num_items=60, val_ratio=0.3,
                    test_ratio=0.3, seed=5),
    SyntheticConfig(),
]


@pytest.mark.parametrize('config', CONFIGS)
def test_split_invariants(config):
    data = make_synthetic(config)
    num_users, num_items = config.num_users, config.num_items
    assert data['user'].num_nodes == num_users
    assert data['item'].num_nodes == num_items
    keys = {}
    for split in ('train', 'val', 'test'):
        index = split_edge_index(data, split)
        assert index.dtype == torch.long
        assert index.min() >= 0
        assert bool((index[0] < num_users).all())
        assert bool((index[1] < num_items).all())
        key = _keys(data, split)
        # Sorted by (user, item), no duplicates.
        assert bool((key[1:] > key[:-1]).all()), split
        keys[split] = set(key.tolist())
        assert keys[split], split
    # No edge in two splits.
    assert not keys['train'] & keys['val']
    assert not keys['train'] & keys['test']
    assert not keys['val'] & keys['test']
    # Every user has a training edge.
    train = split_edge_index(data, 'train')
    assert bool((torch.bincount(train[0], minlength=num_users) > 0).all())
    # Held-out items occur in training.
    train_items = set(train[1].tolist())
    for split in ('val', 'test'):
        assert set(split_edge_index(data, split)[1].tolist()) <= train_items
    # Features: float32, one row per item, the configured modalities.
    assert item_modalities(data) == list(config.modalities)
    for modality in config.modalities:
        value = data['item'][modality]
        assert value.dtype == torch.float32
        assert value.shape == (num_items, config.feature_dim)
        assert bool(torch.isfinite(value).all())


def test_every_user_keeps_a_training_edge_for_any_valid_ratios():
    config = SyntheticConfig(num_users=300, num_items=50, mean_degree=4,
                             val_ratio=0.15, test_ratio=0.5)
    train = split_edge_index(make_synthetic(config), 'train')
    assert bool((torch.bincount(train[0], minlength=300) > 0).all())


def test_default_split_proportions():
    data = make_synthetic()
    sizes = {s: split_edge_index(data, s).size(1)
             for s in ('train', 'val', 'test')}
    total = sum(sizes.values())
    assert 0.08 < sizes['val'] / total < 0.15
    assert 0.15 < sizes['test'] / total < 0.25
    assert 8 < total / 1500 < 12  # mean degree about 10


def test_modality_subset():
    data = make_synthetic(SyntheticConfig(modalities=('textual', ),
                                          feature_dim=5, **SMALL))
    assert item_modalities(data) == ['textual']
    assert data['item'].textual.shape == (100, 5)
    assert INTERACTS in data.edge_types


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_users=1), 'at least 2 users and 2 items'),
    (dict(num_items=1), 'at least 2 users and 2 items'),
    (dict(mean_degree=2.5), 'mean_degree must lie in \\[3, num_items\\)'),
    (dict(num_items=10, mean_degree=10), 'mean_degree must lie in'),
    (dict(modalities=('visual', 'smell')), 'non-empty subset'),
    (dict(modalities=()), 'non-empty subset'),
    (dict(modalities=('visual', 'textual', 'visual')),
     "list 'visual' more than once"),
    (dict(val_ratio=0.0), 'positive and sum to less than 0.7'),
    (dict(test_ratio=-0.1), 'positive and sum to less than 0.7'),
    (dict(val_ratio=0.35, test_ratio=0.35), 'sum to less than 0.7'),
    # Sizes must be integers (they used to fail inside torch.randn).
    (dict(num_users=12.5), '^num_users must be an integer, got 12.5$'),
    (dict(num_items=100.0), '^num_items must be an integer, got 100.0$'),
    (dict(num_factors=2.5), '^num_factors must be an integer, got 2.5$'),
    (dict(feature_dim=True), '^feature_dim must be an integer, got True$'),
    (dict(seed=1.5), '^seed must be an integer, got 1.5$'),
    (dict(num_factors=0), '^num_factors must be >= 1, got 0$'),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticConfig(**kwargs)


@pytest.mark.parametrize('users,items,split', [(2, 4, 'validation'),
                                               (2, 5, 'test')])
def test_too_small_for_held_out_splits(users, items, split):
    # Every held-out edge was moved back to training: evaluation would
    # have reported 0.0 on an empty split.
    with pytest.raises(ConfigError, match=f'the synthetic data set has no '
                       f'{split} interactions with {users} users and '
                       f'{items} items'):
        make_synthetic(SyntheticConfig(num_users=users, num_items=items,
                                       mean_degree=3))
