r"""Shared fixtures: a tiny hand-written data set and writers for each
on-disk layout (DiffMM pickles, MMSSL JSON, tabular CSV/Parquet), all in
``tmp_path``."""
import copy
import json
import os
import pickle
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import scipy.sparse as sp

Edges = List[Tuple[int, int]]

# Four users, five items; every item and every user occurs in training.
NUM_USERS, NUM_ITEMS = 4, 5
TINY_SPLITS: Dict[str, Edges] = {
    'train': [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3), (3, 2), (3, 4)],
    'val': [(0, 2), (1, 3)],
    'test': [(2, 4), (3, 0)],
}
FEATURE_DIMS = {'visual': 3, 'acoustic': 2, 'textual': 4}
FEATURE_FILES = {'visual': 'image_feat.npy', 'acoustic': 'audio_feat.npy',
                 'textual': 'text_feat.npy'}
DIFFMM_NAMES = {'train': 'trnMat.pkl', 'val': 'valMat.pkl',
                'test': 'tstMat.pkl'}
MMSSL_NAMES = {'train': 'train.json', 'val': 'val.json', 'test': 'test.json'}
# The real data set lives beside the checkout (../shared), in CI too.
TIKTOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), '..', 'shared', 'datasets', 'tiktok-dev')


def tiny_features(modalities: Sequence[str] = ('visual', 'acoustic',
                                               'textual'),
                  num_items: int = NUM_ITEMS,
                  dtype=np.float32) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    return {
        m: rng.standard_normal((num_items, FEATURE_DIMS[m])).astype(dtype)
        for m in modalities
    }


def write_features(root: Path, features: Dict[str, np.ndarray]) -> None:
    for modality, array in features.items():
        np.save(root / FEATURE_FILES[modality], array)


def write_diffmm(root: Path, splits: Dict[str, Edges],
                 shapes: Optional[Dict[str, Tuple[int, int]]] = None,
                 protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    shapes = shapes or {}
    for split, name in DIFFMM_NAMES.items():
        if split not in splits:
            continue
        edges = np.asarray(splits[split], dtype=np.int64).reshape(-1, 2)
        shape = shapes.get(split, (NUM_USERS, NUM_ITEMS))
        mat = sp.coo_matrix(
            (np.ones(len(edges), dtype=np.float32), (edges[:, 0],
                                                     edges[:, 1])),
            shape=shape)
        with open(root / name, 'wb') as f:
            pickle.dump(mat, f, protocol=protocol)


def write_mmssl(root: Path, splits: Dict[str, Edges]) -> None:
    for split, name in MMSSL_NAMES.items():
        if split not in splits:
            continue
        obj: Dict[str, List[int]] = {}
        for user, item in splits[split]:
            obj.setdefault(str(user), []).append(int(item))
        with open(root / name, 'w') as f:
            json.dump(obj, f)


def write_tabular(root: Path, splits: Dict[str, Edges],
                  fmt: str = 'csv') -> Path:
    import pandas as pd
    rows = [(u, i, split) for split, edges in splits.items()
            for (u, i) in edges]
    frame = pd.DataFrame(rows, columns=['user', 'item', 'split'])
    frame = frame.astype({'user': 'int64', 'item': 'int64'})
    # Shuffle the rows: the reader must sort.
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    path = root / f'interactions.{fmt}'
    if fmt == 'csv':
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.fixture
def tiktok_root() -> str:
    r"""The shared TikTok data set: required in CI, skipped in a checkout
    that has no ``../shared`` beside it."""
    if not os.path.isdir(TIKTOK):
        message = f'the shared data set is not at {os.path.normpath(TIKTOK)}'
        if os.environ.get('CI') == 'true':
            pytest.fail(message)
        pytest.skip(message)
    return TIKTOK


@pytest.fixture
def tiny_splits() -> Dict[str, Edges]:
    r"""A fresh copy of the tiny data set's ``split -> [(user, item)]``
    (4 users, 5 items)."""
    return copy.deepcopy(TINY_SPLITS)


@pytest.fixture(name='tiny_features')
def tiny_features_fixture():
    r"""The function ``tiny_features(modalities, num_items, dtype)``."""
    return tiny_features


@pytest.fixture(name='listing')
def listing_fixture():
    r"""The function ``listing(path)``: every file under it, sorted."""
    return listing


@pytest.fixture
def make_dataset(tmp_path):
    r"""``make_dataset(layout, splits=None, features=None, name='ds',
    fmt='csv', shapes=None)`` writes a data set folder and returns it.
    ``layout`` is ``'diffmm'``, ``'mmssl'``, ``'tabular'`` (CSV) or
    ``'parquet'``."""
    def make(layout: str = 'diffmm', splits=None, features=None,
             name: str = 'ds', shapes=None) -> Path:
        root = tmp_path / name
        root.mkdir()
        splits = copy.deepcopy(TINY_SPLITS) if splits is None else splits
        features = tiny_features() if features is None else features
        if layout == 'diffmm':
            write_diffmm(root, splits, shapes)
        elif layout == 'mmssl':
            write_mmssl(root, splits)
        elif layout == 'tabular':
            write_tabular(root, splits, 'csv')
        elif layout == 'parquet':
            write_tabular(root, splits, 'parquet')
        else:
            raise ValueError(layout)
        write_features(root, features)
        return root

    return make


def listing(path: Path) -> List[str]:
    r"""Every file and folder under :obj:`path` (relative), sorted."""
    if not path.exists():
        return []
    return sorted(
        os.path.relpath(os.path.join(d, n), path)
        for d, dirs, files in os.walk(path) for n in dirs + files)


@pytest.fixture
def assert_rejected(tmp_path):
    r"""``assert_rejected(root, path, problem, layout=None)``: loading
    :obj:`root` through :class:`MultiModalRecDataset` raises a
    :class:`DatasetError` whose message is ``'<path>: <problem...>'``
    (:obj:`problem` is a regular expression), and leaves no cache behind
    and the raw folder unchanged. Returns the error."""
    from pyg_mmrec.data.dataset import MultiModalRecDataset
    from pyg_mmrec.errors import DatasetError

    def check(root: Path, path, problem: str,
              layout: Optional[str] = None) -> DatasetError:
        cache = tmp_path / 'cache'
        before = listing(root)
        with pytest.raises(DatasetError,
                           match='^' + re.escape(f'{path}: ') + problem) as e:
            MultiModalRecDataset(str(root), layout=layout,
                                 processed_dir=str(cache))
        assert e.value.path == str(path)
        assert not cache.exists(), listing(cache)
        assert listing(root) == before
        return e.value

    return check
