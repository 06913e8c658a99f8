import re

import pytest
import torch
from torch.testing import assert_close

import torch_geometric.typing
from torch_geometric import EdgeIndex

from pyg_mmrec.graph import one_sided_norm
from pyg_mmrec.nn.conv.one_sided_norm_conv import OneSidedNormConv
from pyg_mmrec.nn.sparse import to_adj

DT = torch.float64
BACKENDS = ['scatter', 'coo', 'csr', 'edge_index', 'sparse_adj']
if torch_geometric.typing.WITH_TORCH_SPARSE:
    BACKENDS.append('sparse_tensor')


def interactions(num_users=7, num_items=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    R = (torch.rand(num_users, num_items, generator=gen) < 0.5).to(DT)
    R[torch.arange(num_users), torch.arange(num_users) % num_items] = 1.
    return R


def weighted_graph():
    r"""``R``, its edges and their one-sided weights (``P``, ``Q``)."""
    R = interactions()
    edge_index = R.nonzero().t()
    user_w, item_w = one_sided_norm(edge_index, *R.shape, dtype=DT)
    return R, edge_index, user_w, item_w


def dense_PQ(R):
    P = R.sum(1).pow(-0.5).view(-1, 1) * R  # D_u^{-1/2} R
    Q = R.sum(0).pow(-0.5).view(-1, 1) * R.t()  # D_i^{-1/2} R^T
    return P, Q


@pytest.mark.parametrize('backend', BACKENDS)
def test_one_sided_norm_conv_matches_dense(backend):
    R, edge_index, user_w, item_w = weighted_graph()
    U, I = R.shape
    P, Q = dense_PQ(R)

    # P: items (sources) -> users (targets); Q: users -> items.
    adj_p, w_p = to_adj(edge_index.flip(0), user_w, (I, U), backend=backend)
    adj_q, w_q = to_adj(edge_index, item_w, (U, I), backend=backend)

    conv = OneSidedNormConv()
    assert str(conv) == 'OneSidedNormConv()'
    x_user = torch.randn(U, 5, dtype=DT, requires_grad=True)
    x_item = torch.randn(I, 5, dtype=DT, requires_grad=True)
    # Two MMSSL layers: u = P i, then i' = Q u.
    u = conv((x_item, x_user), adj_p, w_p)
    i = conv((u, x_item), adj_q, w_q)
    assert u.shape == (U, 5) and i.shape == (I, 5)
    loss = (u * torch.linspace(-1, 1, 5, dtype=DT)).sum() + i.pow(2).sum()
    loss.backward()

    x_item_ref = x_item.detach().clone().requires_grad_()
    u_ref = P @ x_item_ref
    i_ref = Q @ u_ref
    loss_ref = (u_ref * torch.linspace(-1, 1, 5, dtype=DT)).sum() + \
        i_ref.pow(2).sum()
    loss_ref.backward()
    assert_close(u, u_ref)
    assert_close(i, i_ref)
    assert_close(x_item.grad, x_item_ref.grad)
    assert x_user.grad is None  # targets only fix the size


@pytest.mark.parametrize('backend', ['scatter', 'sparse_adj'])
def test_one_sided_norm_conv_source_only(backend):
    R = interactions(seed=3)
    U, I = R.shape
    edge_index = R.nonzero().t()
    user_w, _ = one_sided_norm(edge_index, U, I, dtype=DT)
    adj, w = to_adj(edge_index.flip(0), user_w, (I, U), backend=backend)
    x_item = torch.randn(I, 3, dtype=DT)
    P, _ = dense_PQ(R)
    conv = OneSidedNormConv()
    if backend == 'scatter':
        with pytest.raises(ValueError, match='the number of target nodes is '
                           'unknown'):
            conv(x_item, adj, w)
        out = conv(x_item, adj, w, size=(I, U))
    else:
        out = conv(x_item, adj)
    assert_close(out, P @ x_item)


def test_one_sided_norm_conv_bad_input():
    R, edge_index, user_w, _ = weighted_graph()
    U, I = R.shape
    adj, _ = to_adj(edge_index.flip(0), user_w, (I, U))
    conv = OneSidedNormConv()
    x_user = torch.randn(U, 3, dtype=DT)
    x_item = torch.randn(I, 3, dtype=DT)
    with pytest.raises(ValueError, match='adjacency expects 4 source nodes '
                       'but the features have 7 rows'):
        conv((x_user, x_item), adj)
    with pytest.raises(ValueError, match='adjacency has 7 target nodes but '
                       'the target features have 4 rows'):
        conv((x_item, x_item), adj)
    with pytest.raises(ValueError, match=r"'size' \(7, 4\) does not match"):
        conv((x_item, x_user), adj, size=(U, I))


@pytest.mark.parametrize('sort_order', [None, 'col'])
@pytest.mark.parametrize('sparse_size', [None, (4, None), (None, 5)])
@pytest.mark.parametrize('targets', ['size', 'x_dst'])
def test_one_sided_norm_conv_unsized_edge_index(sort_order, sparse_size,
                                                targets):
    # Source 3 and targets 3 and 4 have no edges: an `EdgeIndex` without
    # sizes would infer 3 sources and 3 targets from its largest indices.
    edge_index = torch.tensor([[0, 1, 2, 0], [0, 1, 1, 2]])  # col-sorted
    weight = torch.rand(4, dtype=DT)
    ei = EdgeIndex(edge_index, sparse_size=sparse_size, sort_order=sort_order)
    x_src = torch.randn(4, 2, dtype=DT, requires_grad=True)
    A = torch.zeros(5, 4, dtype=DT).index_put(
        (edge_index[1], edge_index[0]), weight)  # num_dst x num_src

    conv = OneSidedNormConv()
    if targets == 'size':
        out = conv(x_src, ei, weight, size=(4, 5))
    else:
        out = conv((x_src, torch.randn(5, 2, dtype=DT)), ei, weight)
    assert out.shape == (5, 2)
    assert_close(out, A @ x_src)
    assert_close(out, conv(x_src, edge_index, weight, size=(4, 5)))
    grad = torch.randn_like(out)
    out.backward(grad)
    assert_close(x_src.grad, A.t() @ grad)
    assert ei.sparse_size() == (sparse_size or (None, None))  # unmodified


@pytest.mark.parametrize('backend', BACKENDS)
def test_one_sided_norm_conv_size_must_match_adjacency(backend):
    R, edge_index, user_w, _ = weighted_graph()
    U, I = R.shape
    adj, w = to_adj(edge_index.flip(0), user_w, (I, U), backend=backend)
    x_item = torch.randn(I, 3, dtype=DT)
    conv = OneSidedNormConv()
    if backend == 'scatter':  # PyG's own check on the target features
        with pytest.raises(ValueError, match='expected size 8'):
            conv((x_item, torch.randn(U, 3, dtype=DT)), adj, w,
                 size=(I, U + 1))
    else:
        with pytest.raises(ValueError, match=re.escape(
                f"'size' {(I, U + 1)} does not match the adjacency "
                f"(num_src, num_dst) = {(I, U)}")):
            conv(x_item, adj, w, size=(I, U + 1))
    assert conv(x_item, adj, w, size=(I, U)).shape == (U, 3)


def test_one_dimensional_features_are_refused():
    edge_index = torch.tensor([[0, 1, 2], [0, 1, 1]])
    with pytest.raises(ValueError, match=r'expected 2-D node features '
                       r'\[N, F\] \(got 1-D\)'):
        OneSidedNormConv()((torch.randn(3), torch.randn(2, 4)), edge_index)
    with pytest.raises(ValueError, match=r'got 3-D'):
        OneSidedNormConv()((torch.randn(3, 4), torch.randn(2, 4, 1)),
                           edge_index)


def test_swapped_source_and_target_features_are_named():
    # 4 users -> 10 items, and 12 users -> 3 items; given as (x_item,
    # x_user), PyG reported an "invalid 'dim_size'" or an index beyond the
    # sources, without the likely cause.
    hint = (r"'edge_index' holds ids beyond the source or target nodes: are "
            r"'x' given as \(x_src, x_dst\) in the order of the rows of "
            r"'edge_index' \(source, target\)\? \(")
    edge_index = torch.tensor([[0, 1, 2, 3], [0, 5, 1, 9]])
    x_user, x_item = torch.randn(4, 3), torch.randn(10, 3)
    assert OneSidedNormConv()((x_user, x_item), edge_index).shape == (10, 3)
    with pytest.raises(ValueError, match=hint + "Encountered invalid "
                       "'dim_size'"):
        OneSidedNormConv()((x_item, x_user), edge_index)
    edge_index = torch.tensor([[0, 5, 11], [0, 2, 1]])
    x_user, x_item = torch.randn(12, 3), torch.randn(3, 3)
    assert OneSidedNormConv()((x_user, x_item), edge_index).shape == (3, 3)
    with pytest.raises(IndexError, match=hint + "Found indices in "
                       "'edge_index' that are larger than 2"):
        OneSidedNormConv()((x_item, x_user), edge_index)
    # With 'size', the sizes may be what is wrong.
    with pytest.raises(ValueError, match=r"are 'x' and 'size' given in the "
                       r"order of the rows"):
        OneSidedNormConv()(x_user, edge_index, size=(12, 2))


def test_edge_index_without_sizes_is_checked_against_the_features():
    # Its sizes come from the features; with swapped features, the fused
    # product read and wrote out of bounds (the process aborted).
    edge_index = torch.tensor([[0, 1, 2, 3], [0, 5, 1, 9]])
    perm = edge_index[1].argsort()
    adj = EdgeIndex(edge_index[:, perm], sort_order='col')
    x_user, x_item = torch.randn(4, 3), torch.randn(10, 3)
    weight = torch.rand(4)[perm]
    out = OneSidedNormConv()((x_user, x_item), adj, weight)
    ref = OneSidedNormConv()((x_user, x_item), edge_index[:, perm], weight)
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match=r"the EdgeIndex has no sizes, and "
                       r"its ids do not fit those of the features \(10 "
                       r"source and 4 target nodes\): 'EdgeIndex' contains "
                       r"larger indices than its number of columns"):
        OneSidedNormConv()((x_item, x_user), adj, weight)


@pytest.mark.parametrize('size', [None, (5, None), (None, None)])
def test_sources_alone_need_the_number_of_targets(size):
    # With 'size' but no number of targets, the output had as many rows
    # as x_src on the scatter path, and as the largest target id + 1 on a
    # column-sorted EdgeIndex.
    edge_index = torch.tensor([[0, 3, 4], [0, 1, 1]])
    x = torch.randn(5, 3)
    for adj in (edge_index, EdgeIndex(edge_index, sort_order='col')):
        with pytest.raises(ValueError, match=r"the number of target nodes "
                           r"is unknown: pass 'x' as \(x_src, x_dst\) or "
                           r"give it as 'size\[1\]'"):
            OneSidedNormConv()(x, adj, size=size)
    out = OneSidedNormConv()(x, edge_index, size=(5, 2))
    assert_close(out, torch.stack([x[0], x[3] + x[4]]))
