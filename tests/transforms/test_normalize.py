import re

import pytest
import torch
from torch.testing import assert_close
from torch_geometric.data import HeteroData
from torch_geometric.transforms import Compose, ToUndirected

from pyg_mmrec.transforms.normalize import OneSidedNorm, SymmetricNorm


def make_data(num_users=6, num_items=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    R = torch.rand(num_users, num_items, generator=gen) < 0.4
    R[torch.arange(num_users), torch.arange(num_users) % num_items] = True
    R[:, -1] = False  # an item nobody interacted with
    data = HeteroData()
    data['user'].num_nodes = num_users
    data['item'].num_nodes = num_items
    data['user', 'interacts', 'item'].edge_index = R.nonzero().t()
    data['user', 'interacts', 'item'].val_edge_index = torch.tensor([[0],
                                                                     [1]])
    return data, R.float()


def dense_A(R):
    U, I = R.shape
    A = torch.zeros(U + I, U + I)
    A[:U, U:], A[U:, :U] = R, R.t()
    A += torch.eye(U + I)
    d = A.sum(1).pow(-0.5)
    return d.view(-1, 1) * A * d.view(1, -1)


def to_dense(index, weight, n):
    return torch.zeros(n, n).index_put((index[0], index[1]), weight,
                                       accumulate=True)


def test_symmetric_norm():
    data, R = make_data()
    U, I = R.shape
    transform = SymmetricNorm()
    assert str(transform) == ("SymmetricNorm(edge_type=('user', 'interacts', "
                              "'item'), weight_attr=None, "
                              "add_self_loops=True)")
    # The options that change the output are in the repr, which PyG
    # compares to detect a changed pre_transform.
    assert 'weight_attr=\'rating\'' in str(SymmetricNorm(weight_attr='rating'))
    assert str(SymmetricNorm(dtype=torch.float64)).endswith(
        'add_self_loops=True, dtype=torch.float64)')
    out = transform(data)
    store = out['user', 'interacts', 'item']
    E = R.sum().int().item()
    assert store.adj_edge_index.shape == (2, 2 * E + U + I)
    assert_close(to_dense(store.adj_edge_index, store.adj_edge_weight, U + I),
                 dense_A(R))
    # Pure: the input is untouched, and edge_weight is not written.
    store_in = data['user', 'interacts', 'item']
    assert 'adj_edge_index' not in store_in
    assert 'edge_weight' not in store
    assert torch.equal(store.val_edge_index, store_in.val_edge_index)


def test_symmetric_norm_options():
    data, R = make_data(seed=1)
    U, I = R.shape
    store = data['user', 'interacts', 'item']
    store.w = torch.rand(store.edge_index.size(1)) + 0.5
    out = SymmetricNorm(weight_attr='w', add_self_loops=False)(data)
    Rw = torch.zeros(U, I).index_put(tuple(store.edge_index), store.w)
    A_bar = torch.zeros(U + I, U + I)
    A_bar[:U, U:], A_bar[U:, :U] = Rw, Rw.t()
    d = A_bar.sum(1).pow(-0.5).masked_fill(A_bar.sum(1) == 0, 0.)
    res = out['user', 'interacts', 'item']
    assert_close(to_dense(res.adj_edge_index, res.adj_edge_weight, U + I),
                 d.view(-1, 1) * A_bar * d.view(1, -1))


def test_one_sided_norm():
    data, R = make_data()
    transform = OneSidedNorm()
    assert str(transform) == (
        "OneSidedNorm(edge_type=('user', 'interacts', 'item'), "
        "rev_edge_type=('item', 'rev_interacts', 'user'))")
    assert str(OneSidedNorm(dtype=torch.float64)).endswith(
        "'user'), dtype=torch.float64)")
    out = transform(data)
    fwd = out['user', 'interacts', 'item']
    rev = out['item', 'rev_interacts', 'user']
    P = R.sum(1).pow(-0.5).view(-1, 1) * R
    Q = R.sum(0).clamp(min=1).pow(-0.5).view(-1, 1) * R.t()
    U, I = R.shape
    # Q: items aggregate users along user -> item edges.
    Q_out = torch.zeros(I, U).index_put((fwd.edge_index[1],
                                         fwd.edge_index[0]), fwd.edge_weight)
    assert_close(Q_out, Q)
    # P: users aggregate items along item -> user edges.
    assert torch.equal(rev.edge_index, fwd.edge_index.flip(0))
    P_out = torch.zeros(U, I).index_put((rev.edge_index[1],
                                         rev.edge_index[0]), rev.edge_weight)
    assert_close(P_out, P)
    assert 'edge_weight' not in data['user', 'interacts', 'item']
    assert ('item', 'rev_interacts', 'user') not in data.edge_types


def test_compose_with_pyg_transforms():
    data, R = make_data(seed=2)
    out = Compose([ToUndirected(), OneSidedNorm(), SymmetricNorm()])(data)
    store = out['user', 'interacts', 'item']
    rev = out['item', 'rev_interacts', 'user']
    assert torch.equal(rev.edge_index, store.edge_index.flip(0))
    assert rev.edge_weight.shape == store.edge_weight.shape
    U, I = R.shape
    assert_close(to_dense(store.adj_edge_index, store.adj_edge_weight, U + I),
                 dense_A(R))


def test_missing_edge_type():
    data, _ = make_data()
    with pytest.raises(ValueError, match=r"data has no 'edge_index' for edge "
                       r"type \('user', 'clicks', 'item'\)"):
        SymmetricNorm(edge_type=('user', 'clicks', 'item'))(data)
    with pytest.raises(ValueError, match="has no attribute 'w'"):
        SymmetricNorm(weight_attr='w')(data)
    with pytest.raises(ValueError, match="data has no 'edge_index'"):
        OneSidedNorm(edge_type=('user', 'clicks', 'item'))(data)


def test_edge_types_must_run_from_users_to_items():
    # An item-to-user type was read with item ids as user ids, and a
    # reverse type naming the training edges overwrote them with the
    # flipped (item, user) index.
    rev = ('item', 'rev_interacts', 'user')
    for make in (SymmetricNorm, OneSidedNorm):
        with pytest.raises(ValueError, match=re.escape(
                "edge_type must be a ('user', relation, 'item') edge type "
                f"(got {rev})")):
            make(edge_type=rev)
    with pytest.raises(ValueError, match=re.escape(
            "rev_edge_type must be a ('item', relation, 'user') edge type "
            "(got ('user', 'interacts', 'item'))")):
        OneSidedNorm(rev_edge_type=('user', 'interacts', 'item'))
    data, _ = make_data()
    out = OneSidedNorm(rev_edge_type=['item', 'back', 'user'])(data)
    assert torch.equal(out['item', 'back', 'user'].edge_index,
                       data['user', 'interacts', 'item'].edge_index.flip(0))


def test_to_undirected_runs_before_one_sided_norm_not_after():
    data, R = make_data(seed=3)
    fwd, rev = ('user', 'interacts', 'item'), ('item', 'rev_interacts', 'user')
    E = data[fwd].edge_index.size(1)
    data[fwd].edge_label = torch.arange(E)
    alone = OneSidedNorm()(data)
    # The documented order: OneSidedNorm rewrites what ToUndirected put on
    # the reverse type, in ToUndirected's edge order, so the edge-level
    # attributes ToUndirected copied stay aligned with P.
    out = Compose([ToUndirected(), OneSidedNorm()])(data)
    for edge_type in (fwd, rev):
        assert torch.equal(out[edge_type].edge_index,
                           alone[edge_type].edge_index)
        assert torch.equal(out[edge_type].edge_weight,
                           alone[edge_type].edge_weight)
    assert torch.equal(out[rev].edge_label, torch.arange(E))
    # The other order is the pitfall OneSidedNorm's docstring warns about:
    # ToUndirected copies Q over P. If PyG ever stops doing so, the
    # warning can go.
    bad = Compose([OneSidedNorm(), ToUndirected()])(data)
    assert torch.equal(bad[rev].edge_weight, alone[fwd].edge_weight)
    assert not torch.equal(bad[rev].edge_weight, alone[rev].edge_weight)


@pytest.mark.parametrize('transform', [SymmetricNorm(), OneSidedNorm()])
@pytest.mark.parametrize('edge, message', [
    # Unchecked, a user id past U became an item node (an item-item edge),
    # a negative item id the last user (a user-user edge).
    ((6, 0), 'has user id 6 but there are only 6 users'),
    ((0, -1), 'has negative item id -1'),
    ((0, 5), 'has item id 5 but there are only 5 items'),
])
def test_ids_out_of_range(transform, edge, message):
    data, _ = make_data()
    store = data['user', 'interacts', 'item']
    store.edge_index = torch.cat([store.edge_index,
                                  torch.tensor(edge).view(2, 1)], dim=1)
    with pytest.raises(ValueError, match=re.escape(
            f"edge type ('user', 'interacts', 'item'): 'edge_index' "
            f"{message}")):
        transform(data)


def test_weights_of_another_length():
    data, _ = make_data()
    store = data['user', 'interacts', 'item']
    store.w = torch.ones(store.edge_index.size(1) + 1)
    with pytest.raises(ValueError, match=re.escape(
            f"edge type ('user', 'interacts', 'item'): 'w' has shape "
            f"[{store.w.numel()}] but there are {store.w.numel() - 1} "
            f"edges")):
        SymmetricNorm(weight_attr='w')(data)
