r"""int32 edge indices on the scatter path: the backward of `scatter_add`
gathers with an expanded index, which torch 2.13's CPU `gather` gets wrong
for int32, so every layer casts such indices to int64 first."""
import pytest
import torch
from torch.testing import assert_close
from torch_geometric import EdgeIndex

from pyg_mmrec.nn import ModalityAwareConv, OneSidedNormConv, SymNormConv

DT = torch.float64


def _edges(num_nodes=7, num_edges=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    weight = torch.rand(num_edges, dtype=DT, generator=gen)
    return edge_index, weight


def _forms(edge_index, num_src, num_dst):
    # The adjacency forms that reach the scatter path or PyG's own
    # EdgeIndex kernels, each with int32 indices.
    int32 = edge_index.int()
    yield 'plain', int32, None
    yield 'edge_index', EdgeIndex(int32, sparse_size=(num_src, num_dst)), None
    sorted_, perm = EdgeIndex(int32, sparse_size=(num_src, num_dst)
                              ).sort_by('col')
    yield 'edge_index_by_col', sorted_, perm


def _dense(edge_index, weight, num_src, num_dst):
    # M[dst, src] = sum of the weights of the edges src -> dst.
    return torch.zeros(num_dst, num_src, dtype=DT).index_put(
        (edge_index[1], edge_index[0]), weight, accumulate=True)


@pytest.mark.parametrize('form', ['plain', 'edge_index', 'edge_index_by_col'])
def test_sym_norm_conv_int32_gradients(form):
    edge_index, weight = _edges()
    _, adj, perm = [f for f in _forms(edge_index, 7, 7) if f[0] == form][0]
    w = weight if perm is None else weight[perm]
    x = torch.randn(7, 3, dtype=DT, requires_grad=True)
    grad = torch.randn(7, 3, dtype=DT)
    SymNormConv()(x, adj, w).backward(grad)
    M = _dense(edge_index, weight, 7, 7)
    assert_close(x.grad, M.t() @ grad)


@pytest.mark.parametrize('form', ['plain', 'edge_index', 'edge_index_by_col'])
def test_one_sided_norm_conv_int32_gradients(form):
    edge_index, weight = _edges()
    edge_index[1] %= 4  # 7 sources, 4 targets
    _, adj, perm = [f for f in _forms(edge_index, 7, 4) if f[0] == form][0]
    w = weight if perm is None else weight[perm]
    x_src = torch.randn(7, 3, dtype=DT, requires_grad=True)
    x_dst = torch.randn(4, 3, dtype=DT)
    grad = torch.randn(4, 3, dtype=DT)
    OneSidedNormConv()((x_src, x_dst), adj, w).backward(grad)
    M = _dense(edge_index, weight, 7, 4)
    assert_close(x_src.grad, M.t() @ grad)


def test_modality_aware_conv_int32_equals_int64():
    edge_index, weight = _edges(num_nodes=9, num_edges=24, seed=1)
    gen_index, gen_weight = _edges(num_nodes=9, num_edges=10, seed=2)
    grads = []
    for dtype in (torch.int64, torch.int32):
        torch.manual_seed(0)
        user, item, feat = (torch.randn(n, 3, dtype=DT, requires_grad=True)
                            for n in (5, 4, 4))
        out = ModalityAwareConv()(user, item, feat, edge_index.to(dtype),
                                  gen_index.to(dtype), weight, gen_weight)
        out.backward(torch.ones_like(out))
        grads.append([t.grad for t in (user, item, feat)])
    for a, b in zip(*grads):
        assert_close(a, b)
