r"""Loading each layout into the HeteroData contract, and the processed
cache (reuse, invalidation)."""
import itertools
import os
import json
import pickle
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pyg_mmrec.data import dataset as dataset_module
from pyg_mmrec.data.dataset import MultiModalRecDataset
from pyg_mmrec.data.hetero import (
    INTERACTS,
    item_modalities,
    num_users_items,
    split_edge_index,
)
from pyg_mmrec.data.readers import read_dataset
from pyg_mmrec.errors import DatasetError

NUM_USERS, NUM_ITEMS = 4, 5  # the tiny data set of conftest.py
LAYOUTS = ['diffmm', 'mmssl', 'tabular', 'parquet']
MODALITY_SUBSETS = [
    subset for r in (1, 2, 3)
    for subset in itertools.combinations(('visual', 'acoustic', 'textual'), r)
]


def _edges(tensor):
    return [tuple(e) for e in tensor.t().tolist()]


def _check_exact(data, splits, features):
    assert num_users_items(data) == (NUM_USERS, NUM_ITEMS)
    for split in ('train', 'val', 'test'):
        index = split_edge_index(data, split)
        assert index.dtype == torch.long
        # Exactly the input, sorted by (user, item).
        assert _edges(index) == sorted(splits[split])
    assert item_modalities(data) == [
        m for m in ('visual', 'acoustic', 'textual') if m in features
    ]
    for modality, array in features.items():
        value = data['item'][modality]
        assert value.dtype == torch.float32
        assert torch.equal(value,
                           torch.from_numpy(array.astype(np.float32)))


@pytest.mark.parametrize('layout', LAYOUTS)
def test_each_layout_loads_exactly(make_dataset, tiny_splits, tiny_features,
                                   tmp_path, layout):
    features = tiny_features()
    root = make_dataset(layout, tiny_splits, features)
    dataset = MultiModalRecDataset(str(root),
                                   processed_dir=str(tmp_path / 'cache'))
    assert dataset.layout == {'parquet': 'tabular'}.get(layout, layout)
    assert len(dataset) == 1
    assert (dataset.num_users, dataset.num_items) == (NUM_USERS, NUM_ITEMS)
    _check_exact(dataset[0], tiny_splits, features)
    assert dataset.notes == []


@pytest.mark.parametrize('modalities', MODALITY_SUBSETS,
                         ids=['+'.join(m) for m in MODALITY_SUBSETS])
def test_any_subset_of_modalities(make_dataset, tiny_splits, tiny_features,
                                  modalities):
    features = tiny_features(modalities)
    root = make_dataset('mmssl', tiny_splits, features)
    raw = read_dataset(str(root))
    assert sorted(raw.features) == sorted(modalities)
    from pyg_mmrec.data.dataset import to_hetero_data
    _check_exact(to_hetero_data(raw), tiny_splits, features)


@pytest.mark.parametrize('dtype', [np.float16, np.float64])
def test_diffmm_non_float32_features(make_dataset, tiny_splits,
                                     tiny_features, tmp_path, dtype):
    features = tiny_features(('visual', 'acoustic'), dtype=dtype)
    root = make_dataset('diffmm', tiny_splits, features)
    data = MultiModalRecDataset(str(root),
                                processed_dir=str(tmp_path / 'c'))[0]
    _check_exact(data, tiny_splits, features)


def test_diffmm_interaction_values_and_orientation(make_dataset,
                                                   tiny_features, tmp_path):
    r"""Non-binary values count as interactions, the matrix is user x item,
    and entries of any order come out sorted."""
    root = make_dataset('diffmm')
    train = [(3, 4), (0, 1), (2, 0), (1, 2), (0, 0), (3, 2), (2, 3), (1, 1)]
    rows, cols = zip(*train)
    mat = sp.coo_matrix((np.arange(1, 9, dtype=np.float64) * 0.5,
                         (rows, cols)), shape=(NUM_USERS, NUM_ITEMS))
    with open(root / 'trnMat.pkl', 'wb') as f:
        pickle.dump(mat.tocsr(), f)
    data = MultiModalRecDataset(str(root),
                                processed_dir=str(tmp_path / 'c'))[0]
    assert _edges(data[INTERACTS].edge_index) == sorted(train)


def test_tiktok_dev(tmp_path, tiktok_root):
    dataset = MultiModalRecDataset(tiktok_root, processed_dir=str(tmp_path))
    data = dataset[0]
    assert dataset.layout == 'diffmm'
    assert num_users_items(data) == (9308, 6710)
    assert split_edge_index(data, 'train').size(1) == 59541
    assert split_edge_index(data, 'val').size(1) == 1525
    assert split_edge_index(data, 'test').size(1) == 1526
    assert item_modalities(data) == ['visual', 'acoustic']
    for modality in ('visual', 'acoustic'):
        assert data['item'][modality].shape == (6710, 128)
        assert data['item'][modality].dtype == torch.float32
    expected = np.load(os.path.join(tiktok_root, 'image_feat.npy'))
    assert torch.equal(data['item'].visual,
                       torch.from_numpy(expected.astype(np.float32)))
    train = split_edge_index(data, 'train')
    key = train[0] * 6710 + train[1]
    assert bool((key[1:] > key[:-1]).all())  # sorted, no duplicates
    # Nothing was removed: no duplicates, and no held-out pair repeats a
    # training (or, for test, validation) pair.
    assert dataset.notes == []


# Cache #######################################################################


def _cached_files(cache):
    return sorted(n for n in os.listdir(cache) if n.startswith('data_'))


def test_cache_is_reused(make_dataset, tmp_path, monkeypatch):
    root = make_dataset('mmssl')
    cache = tmp_path / 'cache'
    first = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    assert len(_cached_files(cache)) == 1

    def fail(*args, **kwargs):
        raise AssertionError('raw files read again despite a valid cache')

    monkeypatch.setattr(dataset_module, 'read_dataset', fail)
    second = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    for split in ('train', 'val', 'test'):
        assert torch.equal(split_edge_index(first, split),
                           split_edge_index(second, split))
    assert torch.equal(first['item'].textual, second['item'].textual)
    # ... unless a reload is forced.
    with pytest.raises(AssertionError, match='raw files read again'):
        MultiModalRecDataset(str(root), processed_dir=str(cache),
                             force_reload=True)


def _bump_mtime(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_cache_invalidated_by_new_mtime(make_dataset, tmp_path,
                                        monkeypatch):
    root = make_dataset('diffmm')
    cache = tmp_path / 'cache'
    MultiModalRecDataset(str(root), processed_dir=str(cache))
    calls = []
    real = dataset_module.read_dataset
    monkeypatch.setattr(dataset_module, 'read_dataset',
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    _bump_mtime(root / 'audio_feat.npy')  # same content, new mtime
    MultiModalRecDataset(str(root), processed_dir=str(cache))
    assert len(calls) == 1
    MultiModalRecDataset(str(root), processed_dir=str(cache))
    assert len(calls) == 1  # the new cache entry is reused


@pytest.mark.parametrize('layout', ['mmssl', 'tabular'])
def test_cache_invalidated_by_new_content(make_dataset, tiny_splits,
                                          tmp_path, layout):
    root = make_dataset(layout, tiny_splits)
    cache = tmp_path / 'cache'
    before = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    assert _edges(split_edge_index(before, 'val')) == sorted(
        tiny_splits['val'])
    # Rewrite the interactions with one more validation edge.
    if layout == 'mmssl':
        path = root / 'val.json'
        obj = json.loads(path.read_text())
        obj['0'].append(4)
        path.write_text(json.dumps(obj))
    else:
        import pandas as pd
        path = root / 'interactions.csv'
        frame = pd.read_csv(path)
        frame.loc[len(frame)] = [0, 4, 'val']
        frame.to_csv(path, index=False)
    after = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    assert _edges(split_edge_index(after, 'val')) == sorted(
        tiny_splits['val'] + [(0, 4)])
    # The cache of the old files is removed, not left to pile up.
    assert len(_cached_files(cache)) == 1


def test_cache_invalidated_by_rewrite_with_restored_mtime(make_dataset,
                                                          tmp_path):
    # Same size, modification time set back (as `cp -p` or `touch -r` do):
    # the change time still tells the rewrite apart.
    root = make_dataset('diffmm')
    cache = tmp_path / 'cache'
    path = root / 'image_feat.npy'
    before = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    st = os.stat(path)
    np.save(path, -np.load(path))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    after = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    assert torch.equal(after['item'].visual, -before['item'].visual)


def test_features_added_later_are_picked_up(make_dataset, tiny_features,
                                            tmp_path):
    root = make_dataset('diffmm', features=tiny_features(('visual', )))
    cache = tmp_path / 'cache'
    data = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    assert item_modalities(data) == ['visual']
    np.save(root / 'text_feat.npy', tiny_features(('textual', ))['textual'])
    data = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    assert item_modalities(data) == ['visual', 'textual']
    os.remove(root / 'image_feat.npy')
    data = MultiModalRecDataset(str(root), processed_dir=str(cache))[0]
    assert item_modalities(data) == ['textual']


def test_cache_written_atomically(make_dataset, tmp_path):
    root = make_dataset('diffmm')
    cache = tmp_path / 'cache'
    MultiModalRecDataset(str(root), processed_dir=str(cache))
    assert not [n for n in os.listdir(cache) if n.endswith('.tmp')]


def test_cache_keyed_by_version_of_the_checks(make_dataset, tmp_path,
                                              monkeypatch):
    r"""A cache written before a check was added (of data it now rejects
    or cleans) is not reused."""
    root = make_dataset('mmssl')
    cache = tmp_path / 'cache'
    MultiModalRecDataset(str(root), processed_dir=str(cache))
    monkeypatch.setattr(dataset_module, 'CACHE_VERSION',
                        dataset_module.CACHE_VERSION + 1)
    calls = []
    real = dataset_module.read_dataset
    monkeypatch.setattr(dataset_module, 'read_dataset',
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    MultiModalRecDataset(str(root), processed_dir=str(cache))
    assert len(calls) == 1
    assert len(_cached_files(cache)) == 1


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes({'truncated': data[:len(data) // 2], 'empty': b'',
                      'garbage': b'\x00not a torch file\xff' * 9}[how])


@pytest.mark.parametrize('where,name,how', [
    ('cache', name, how)
    for name in ('data', 'pre_transform.pt', 'pre_filter.pt')
    for how in ('truncated', 'empty', 'garbage')
] + [('root', 'data', 'truncated'), ('root', 'pre_filter.pt', 'truncated')])
def test_unreadable_cache_is_rebuilt(make_dataset, tiny_splits,
                                     tiny_features, tmp_path, monkeypatch,
                                     where, name, how):
    r"""The processed cache is derived data: one that cannot be read (an
    interrupted copy, a full disk) is rebuilt from the raw files, with a
    warning, in the cache folder as in root/processed."""
    features = tiny_features()
    root = make_dataset('diffmm', tiny_splits, features)
    cache = tmp_path / 'cache' if where == 'cache' else root / 'processed'
    processed_dir = str(cache) if where == 'cache' else None
    MultiModalRecDataset(str(root), processed_dir=processed_dir)
    path = cache / (_cached_files(cache)[0] if name == 'data' else name)
    _damage(path, how)
    with pytest.warns(UserWarning, match='^' + re.escape(
            f'{path}: the processed cache cannot be read (') + '.*' +
            re.escape('); rebuilding it from the raw files') + '$'):
        dataset = MultiModalRecDataset(str(root), processed_dir=processed_dir)
    _check_exact(dataset[0], tiny_splits, features)
    assert sorted(os.listdir(cache)) == sorted(
        _cached_files(cache) + ['pre_filter.pt', 'pre_transform.pt'])

    # The rebuilt cache is whole: it is reused, without a warning.
    def fail(*args, **kwargs):
        raise AssertionError('raw files read again despite a valid cache')

    monkeypatch.setattr(dataset_module, 'read_dataset', fail)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        dataset = MultiModalRecDataset(str(root), processed_dir=processed_dir)
    _check_exact(dataset[0], tiny_splits, features)


def test_read_only_data_set_caches_under_the_user_cache(
        tmp_path, monkeypatch):
    from pyg_mmrec.data.dataset import _default_processed_dir
    root = tmp_path / 'shared'
    root.mkdir()
    assert _default_processed_dir(str(root)) == str(root / 'processed')
    root.chmod(0o555)
    try:
        monkeypatch.setenv('PYG_MMREC_CACHE', str(tmp_path / 'mine'))
        cached = _default_processed_dir(str(root))
        assert cached.startswith(str(tmp_path / 'mine' / 'shared-'))
        # An empty value means unset, not the current folder.
        monkeypatch.setenv('PYG_MMREC_CACHE', '')
        monkeypatch.setenv('HOME', str(tmp_path / 'home'))
        assert _default_processed_dir(str(root)).startswith(
            str(tmp_path / 'home' / '.cache' / 'pyg_mmrec' / 'shared-'))
    finally:
        root.chmod(0o755)


@pytest.mark.parametrize('where', ['cache_under_a_file', 'processed_file'])
def test_unwritable_cache_folder_is_one_error(make_dataset, tmp_path,
                                              where):
    # PyG creates the cache folder itself; the OSError of a path blocked by
    # a file used to escape as a traceback from info, train, evaluate, ...
    from pyg_mmrec.errors import OutputError
    root = make_dataset('mmssl')
    if where == 'cache_under_a_file':
        blocker = tmp_path / 'cache_file'
        cache = blocker / 'sub'
        kwargs = dict(processed_dir=str(cache))
    else:
        blocker = cache = root / 'processed'
        kwargs = {}
    blocker.write_text('not a folder')
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(OutputError) as info:
        MultiModalRecDataset(str(root), **kwargs)
    assert str(info.value) == (
        f'{cache}: the processed cache cannot be written: {blocker} is a '
        f'file, not a folder')
    assert sorted(p.name for p in root.iterdir()) == before
    assert blocker.read_text() == 'not a folder'


def test_cache_whose_parent_cannot_be_made_is_one_error(make_dataset,
                                                        tmp_path,
                                                        monkeypatch):
    # PYG_MMREC_CACHE under a read-only folder: the PermissionError names
    # the parent makedirs could not make, which was not recognised as the
    # cache's and escaped as a traceback. (As root, a chmod would not stop
    # makedirs: refuse it here instead.)
    from pyg_mmrec.errors import OutputError
    root = make_dataset('mmssl')
    parent = tmp_path / 'readonly' / 'made'
    cache = parent / 'cache'
    makedirs = os.makedirs

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(parent)):
            raise PermissionError(13, 'Permission denied', str(parent))
        return makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, 'makedirs', refuse)
    with pytest.raises(OutputError, match=re.escape(
            f'{cache}: the processed cache cannot be written')):
        MultiModalRecDataset(str(root), processed_dir=str(cache))


def test_unknown_layout_is_named(make_dataset):
    # It was reported as a missing interactions.csv of the tabular layout.
    root = make_dataset('diffmm')
    with pytest.raises(DatasetError, match=re.escape(
            f"{root}: unknown layout 'bogus' (expected one of diffmm, "
            f"mmssl, tabular)")):
        MultiModalRecDataset(str(root), layout='bogus')
    assert not (root / 'processed').exists()
