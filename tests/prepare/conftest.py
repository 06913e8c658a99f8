r"""Small raw tables for the ``pyg_mmrec.prepare`` tests."""
import os
from typing import Dict

import numpy as np
import pandas as pd
import pytest


def _make_tables(folder: str, num_users: int = 40, num_items: int = 30,
                 seed: int = 0, min_per_user: int = 4,
                 max_per_user: int = 12) -> Dict[str, str]:
    r"""Writes ``inter.csv`` (uid, iid, stars, ts with raw ids offset so that
    remapping is visible), ``items.csv`` (iid, title, image) and ``vis.npy``
    (one row per item table row) into :obj:`folder`."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        k = int(rng.integers(min_per_user, max_per_user + 1))
        for i in rng.choice(num_items, size=min(k, num_items),
                            replace=False):
            rows.append((1000 + u, 7 * int(i), int(rng.integers(1, 6)),
                         int(rng.integers(0, 10**6))))
    inter = pd.DataFrame(rows, columns=['uid', 'iid', 'stars', 'ts'])
    # Item table in a shuffled order: features must follow the id column,
    # not the row order of the interactions.
    order = rng.permutation(num_items)
    items = pd.DataFrame({
        'iid': 7 * order,
        'title': [f'item number {i}' for i in order],
        'image': [f'images/{i}.jpg' for i in order],
    })
    paths = {name: os.path.join(folder, name)
             for name in ('inter.csv', 'items.csv', 'vis.npy')}
    inter.to_csv(paths['inter.csv'], index=False)
    items.to_csv(paths['items.csv'], index=False)
    # Row r of vis.npy encodes the raw id of row r, so tests can check the
    # alignment: feature[0] == raw item id.
    vis = np.stack([7.0 * order, np.ones(num_items)], axis=1)
    np.save(paths['vis.npy'], vis.astype(np.float32))
    return paths


@pytest.fixture
def tables(tmp_path) -> Dict[str, str]:
    src = tmp_path / 'src'
    src.mkdir()
    return _make_tables(str(src))


@pytest.fixture
def make_tables():
    r"""The table factory (fixtures, not imports: works in every pytest
    import mode)."""
    return _make_tables


@pytest.fixture
def tree():
    return _tree


def _tree(folder) -> Dict[str, bytes]:
    r"""Relative path -> bytes of every file under :obj:`folder`."""
    out = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out
