import pytest
import torch
from torch.testing import assert_close

import torch_geometric.typing
from torch_geometric import EdgeIndex
from torch_geometric.nn import LGConv
from torch_geometric.testing import withPackage

from pyg_mmrec.graph import sym_norm_bipartite
from pyg_mmrec.nn.conv.sym_norm_conv import SymNormConv
from pyg_mmrec.nn.sparse import to_adj

DT = torch.float64
BACKENDS = ['scatter', 'coo', 'csr', 'edge_index', 'sparse_adj']
if torch_geometric.typing.WITH_TORCH_SPARSE:
    BACKENDS.append('sparse_tensor')


def bipartite(num_users=6, num_items=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    R = (torch.rand(num_users, num_items, generator=gen) < 0.4).to(DT)
    R[0, 0] = 1.
    R[:, 1] = 0.  # an item without users: degree 1 from its self-loop
    return R


def dense_A(R):
    U, I = R.shape
    A_bar = torch.zeros(U + I, U + I, dtype=DT)
    A_bar[:U, U:] = R
    A_bar[U:, :U] = R.t()
    A_bar += torch.eye(U + I, dtype=DT)
    d = A_bar.sum(1).pow(-0.5)
    return d.view(-1, 1) * A_bar * d.view(1, -1)


@pytest.mark.parametrize('backend', BACKENDS)
def test_sym_norm_conv_matches_dense(backend):
    R = bipartite()
    U, I = R.shape
    edge_index, weight = sym_norm_bipartite(R.nonzero().t(), U, I, dtype=DT)
    weight.requires_grad_()
    adj, w = to_adj(edge_index, weight, U + I, backend=backend,
                    symmetric=True)

    conv = SymNormConv()
    assert str(conv) == 'SymNormConv()'
    x = torch.randn(U + I, 8, dtype=DT, requires_grad=True)
    out = conv(x, adj, w)
    grad = torch.randn_like(out)
    out.backward(grad)

    A = dense_A(R)
    x_ref = x.detach().clone().requires_grad_()
    out_ref = A @ x_ref
    out_ref.backward(grad)
    assert_close(out, out_ref)
    assert_close(x.grad, x_ref.grad)

    # The gradient w.r.t. the edge weights, against the dense matrix built
    # from the same weights.
    w_ref = weight.detach().clone().requires_grad_()
    A_w = torch.zeros(U + I, U + I, dtype=DT).index_put(
        (edge_index[1], edge_index[0]), w_ref, accumulate=True)
    (A_w @ x.detach()).backward(grad)
    assert_close(weight.grad, w_ref.grad)


def test_sym_norm_conv_equals_lgconv_and_layers_sum():
    R = bipartite(seed=1)
    U, I = R.shape
    edge_index, weight = sym_norm_bipartite(R.nonzero().t(), U, I, dtype=DT)
    x = torch.randn(U + I, 4, dtype=DT)
    conv = SymNormConv()
    lg = LGConv(normalize=False)
    assert_close(conv(x, edge_index, weight), lg(x, edge_index, weight))

    # Three layers summed LightGCN-style, fused default vs dense:
    adj, _ = to_adj(edge_index, weight, U + I, symmetric=True)
    A = dense_A(R)
    h, out, h_ref, out_ref = x, x, x, x
    for _ in range(3):
        h, h_ref = conv(h, adj), A @ h_ref
        out, out_ref = out + h, out_ref + h_ref
    assert_close(out, out_ref)


@withPackage('torch_sparse')
def test_sym_norm_conv_sparse_tensor_explicit():
    from torch_geometric.typing import SparseTensor
    R = bipartite(seed=2)
    U, I = R.shape
    edge_index, weight = sym_norm_bipartite(R.nonzero().t(), U, I, dtype=DT)
    adj = SparseTensor(row=edge_index[1], col=edge_index[0], value=weight,
                       sparse_sizes=(U + I, U + I))
    x = torch.randn(U + I, 4, dtype=DT)
    assert_close(SymNormConv()(x, adj.t()), dense_A(R) @ x)


def test_sym_norm_conv_bad_input():
    R = bipartite()
    U, I = R.shape
    edge_index, weight = sym_norm_bipartite(R.nonzero().t(), U, I, dtype=DT)
    conv = SymNormConv()
    x = torch.randn(U + I, 4, dtype=DT)
    adj, _ = to_adj(edge_index, weight, U + I, symmetric=True)
    with pytest.raises(ValueError, match='adjacency expects 10 source nodes '
                       'but the features have 9 rows'):
        conv(x[:-1], adj)
    with pytest.raises(ValueError, match="'edge_weight' must be None with "
                       "a sparse adjacency \\('SparseAdj'\\): store the "
                       "weights in the adjacency itself"):
        conv(x, adj, weight)
    # An IndexError from inside PyG, when a weight was given.
    with pytest.raises(ValueError, match=r"'edge_index' must have shape "
                       r"\[2, E\] \(got \[3\]\)"):
        conv(x, torch.tensor([0, 1, 2]), weight[:3])
    csr, _ = to_adj(edge_index, weight, U + I, backend='csr')
    with pytest.raises(ValueError, match="'edge_weight' must be None"):
        conv(x, csr, weight)
    with pytest.raises(ValueError, match=r"'edge_weight' has shape \[3\] but "
                       r"'edge_index' has \d+ edges"):
        conv(x, edge_index, weight[:3])
    with pytest.raises(ValueError, match='adjacency expects 10 source nodes'):
        conv(x[:-1], csr)


def test_sym_norm_conv_unsorted_edge_index_takes_scatter_path():
    R = bipartite(seed=3)
    U, I = R.shape
    edge_index, weight = sym_norm_bipartite(R.nonzero().t(), U, I, dtype=DT)
    ei = EdgeIndex(edge_index, sparse_size=(U + I, U + I))
    assert not ei.is_sorted
    x = torch.randn(U + I, 4, dtype=DT)
    assert_close(SymNormConv()(x, ei, weight), dense_A(R) @ x)


@pytest.mark.parametrize('sort_order', [None, 'col', 'row'])
def test_sym_norm_conv_unsized_edge_index_keeps_isolated_nodes(sort_order):
    # Without sizes, an `EdgeIndex` infers its number of nodes from the
    # largest index; the features fix it instead.
    edge_index = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])  # col-sorted
    if sort_order == 'row':
        edge_index = edge_index.flip(0)
    weight = torch.rand(4, dtype=DT)
    ei = EdgeIndex(edge_index, sort_order=sort_order)
    x = torch.randn(5, 3, dtype=DT)  # nodes 3 and 4 have no edges
    A = torch.zeros(5, 5, dtype=DT).index_put(
        (edge_index[1], edge_index[0]), weight)
    out = SymNormConv()(x, ei, weight)
    assert_close(out, A @ x)
    assert_close(out, SymNormConv()(x, edge_index, weight))
    assert ei.num_rows is None  # the caller's `EdgeIndex` is not modified


@pytest.mark.parametrize('backend', BACKENDS)
def test_one_dimensional_features_are_refused(backend):
    # The scatter path failed with an IndexError from inside PyG.
    R = bipartite()
    U, I = R.shape
    edge_index, weight = sym_norm_bipartite(R.nonzero().t(), U, I, dtype=DT)
    adj, w = to_adj(edge_index, weight, U + I, backend=backend,
                    symmetric=True)
    with pytest.raises(ValueError, match=r'expected 2-D node features '
                       r'\[N, F\] \(got 1-D\)'):
        SymNormConv()(torch.randn(U + I, dtype=DT), adj, w)
    with pytest.raises(ValueError, match='expected floating-point node '
                       r'features \(got torch.int64\)'):
        SymNormConv()(torch.ones(U + I, 3, dtype=torch.long), adj, w)
    # A bipartite (x_user, x_item) pair failed with an AttributeError.
    with pytest.raises(TypeError, match=r'pass x = torch.cat\(\[x_user, '
                       r'x_item\]\) \(got a tuple; OneSidedNormConv'):
        SymNormConv()((torch.randn(U, 3, dtype=DT),
                       torch.randn(I, 3, dtype=DT)), adj, w)
