r"""k-core filtering against a brute-force reference."""
import numpy as np
import pandas as pd
import pytest

from pyg_mmrec.prepare import kcore_filter, kcore_mask, prepare


def brute_force_kcore(pairs, user_k, item_k):
    r"""Removes one node below its threshold at a time until none is left;
    the k-core is unique, so the removal order does not matter."""
    edges = set(pairs)
    while True:
        user_deg, item_deg = {}, {}
        for u, i in edges:
            user_deg[u] = user_deg.get(u, 0) + 1
            item_deg[i] = item_deg.get(i, 0) + 1
        bad_user = next((u for u, d in sorted(user_deg.items())
                         if d < user_k), None)
        if bad_user is not None:
            edges = {(u, i) for u, i in edges if u != bad_user}
            continue
        bad_item = next((i for i, d in sorted(item_deg.items())
                         if d < item_k), None)
        if bad_item is not None:
            edges = {(u, i) for u, i in edges if i != bad_item}
            continue
        return edges


@pytest.mark.parametrize('seed', range(12))
def test_kcore_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_users = int(rng.integers(5, 40))
    num_items = int(rng.integers(5, 40))
    density = rng.uniform(0.05, 0.5)
    dense = rng.random((num_users, num_items)) < density
    users, items = np.nonzero(dense)
    # Sparse, non-contiguous raw ids: the filter must not assume 0..n-1.
    users = users * 13 + 5
    items = items * 101 - 50
    perm = rng.permutation(users.size)
    users, items = users[perm], items[perm]
    user_k, item_k = int(rng.integers(0, 6)), int(rng.integers(0, 6))

    mask = kcore_mask(users, items, user_k, item_k)
    expected = brute_force_kcore(zip(users.tolist(), items.tolist()),
                                 user_k, item_k)
    assert set(zip(users[mask].tolist(), items[mask].tolist())) == expected
    fu, fi = kcore_filter(users, items, user_k, item_k)
    assert set(zip(fu.tolist(), fi.tolist())) == expected


def test_kcore_cascade():
    # Removing user 2 (1 item) leaves item 1 with one user, which must then
    # go too, which leaves user 1 below k: only the 2x2 block survives.
    pairs = [(0, 0), (0, 2), (3, 0), (3, 2), (1, 1), (1, 2), (2, 1)]
    users, items = map(np.array, zip(*pairs))
    mask = kcore_mask(users, items, 2, 2)
    kept = set(zip(users[mask].tolist(), items[mask].tolist()))
    assert kept == {(0, 0), (0, 2), (3, 0), (3, 2)}
    assert kept == brute_force_kcore(pairs, 2, 2)


def test_kcore_empty_and_disabled():
    assert kcore_mask(np.zeros(0), np.zeros(0), 5, 5).shape == (0,)
    users, items = np.array([0, 1]), np.array([0, 1])
    assert kcore_mask(users, items, 1, 0).all()
    assert not kcore_mask(users, items, 2, 1).any()


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_prepare_keeps_exactly_the_kcore(tmp_path, seed):
    rng = np.random.default_rng(seed)
    dense = rng.random((30, 25)) < 0.25
    users, items = np.nonzero(dense)
    pd.DataFrame({'user': users, 'item': items}).to_csv(
        tmp_path / 'inter.csv', index=False)
    pd.DataFrame({'item': np.arange(25)}).to_csv(tmp_path / 'items.csv',
                                                 index=False)
    np.save(tmp_path / 'f.npy', np.ones((25, 2), np.float32))
    # cold_items='train' keeps every interaction of the core.
    result = prepare(str(tmp_path / 'inter.csv'), str(tmp_path / 'items.csv'),
                     str(tmp_path / 'out'), user_k=4, item_k=3,
                     cold_items='train', features={'visual':
                                                   str(tmp_path / 'f.npy')})
    out = pd.read_csv(tmp_path / 'out' / 'interactions.csv')
    user_map = pd.read_csv(tmp_path / 'out' / 'users.csv')
    item_map = pd.read_csv(tmp_path / 'out' / 'items.csv')
    raw = set(zip(user_map['raw_id'].to_numpy()[out['user']].tolist(),
                  item_map['raw_id'].to_numpy()[out['item']].tolist()))
    assert raw == brute_force_kcore(zip(users.tolist(), items.tolist()), 4, 3)
    assert result.summary['kcore_removed'] == users.size - len(raw)
