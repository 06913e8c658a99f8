r"""The default :class:`~pyg_mmrec.nn.sparse.SparseAdj` path of the layers
against the other backends: explanations, hooks, higher-order gradients and
dtypes."""
import pytest
import torch
from torch.testing import assert_close

import torch_geometric.typing
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks

from pyg_mmrec.graph import sym_norm_bipartite
from pyg_mmrec.nn.conv import OneSidedNormConv, SymNormConv
from pyg_mmrec.nn.sparse import BACKENDS, sparse_matmul, to_adj

DT = torch.float64
STOCK_BACKENDS = [b for b in BACKENDS if b != 'sparse_tensor'
                  or torch_geometric.typing.WITH_TORCH_SPARSE]


def simple_graph(num_src=6, num_dst=5, seed=0):
    r"""Weighted edges without duplicates, in no particular order."""
    gen = torch.Generator().manual_seed(seed)
    dense = torch.rand(num_src, num_dst, generator=gen) < 0.5
    dense[0, 0] = True
    edge_index = dense.nonzero().t()
    perm = torch.randperm(edge_index.size(1), generator=gen)
    edge_index = edge_index[:, perm]
    weight = torch.rand(edge_index.size(1), generator=gen, dtype=DT) + 0.1
    return edge_index, weight


def edge_logits(edge_index):
    r"""A mask logit that depends on the edge only, not on its position."""
    return ((edge_index[0] * 7 + edge_index[1] * 3) % 5 - 2.).to(DT)


@pytest.mark.parametrize('bipartite', [False, True])
def test_sparse_adj_honours_explain_edge_mask(bipartite):
    num_src, num_dst = (6, 5) if bipartite else (6, 6)
    edge_index, weight = simple_graph(num_src, num_dst)
    conv = OneSidedNormConv() if bipartite else SymNormConv()
    x = torch.randn(num_src, 3, dtype=DT)
    x_in = (x, torch.empty(num_dst, 3, dtype=DT)) if bipartite else x
    masked = weight * edge_logits(edge_index).sigmoid()
    expected = torch.zeros(num_dst, num_src, dtype=DT).index_put(
        (edge_index[1], edge_index[0]), masked) @ x

    outs, grads = {}, {}
    for backend in ('scatter', 'sparse_adj'):
        adj, w = to_adj(edge_index, weight, (num_src, num_dst),
                        backend=backend)
        # The mask is over the edges the layer sees: for a SparseAdj, its
        # stored non-zeros.
        masked_edges = (edge_index if backend == 'scatter' else
                        adj.to_edge_index()[0].as_tensor())
        logits = edge_logits(masked_edges).requires_grad_()
        set_masks(conv, logits, masked_edges, apply_sigmoid=True)
        out = conv(x_in, adj, w)
        assert_close(out, expected)
        out.sum().backward()
        clear_masks(conv)
        outs[backend] = out
        # Explainers learn the mask: its gradient reaches every edge.
        key = masked_edges[0] * num_dst + masked_edges[1]
        grads[backend] = logits.grad[key.argsort()]
    assert_close(grads['sparse_adj'], grads['scatter'])

    # Without the mask the fused path is back.
    adj, _ = to_adj(edge_index, weight, (num_src, num_dst))
    unmasked = torch.zeros(num_dst, num_src, dtype=DT).index_put(
        (edge_index[1], edge_index[0]), weight) @ x
    assert_close(conv(x_in, adj), unmasked)


def test_sparse_adj_explain_mask_size_is_checked():
    edge_index = torch.tensor([[0, 0, 1], [1, 1, 0]])  # a duplicate
    adj, _ = to_adj(edge_index, None, 2)
    conv = SymNormConv()
    set_masks(conv, torch.zeros(3), edge_index)
    with pytest.raises(ValueError, match='the edge mask has 3 entries but '
                       'the adjacency stores 2 edges'):
        conv(torch.randn(2, 3), adj)


@pytest.mark.parametrize('backend', ['edge_index', 'sparse_adj'])
def test_sparse_adj_runs_propagate_hooks(backend):
    edge_index, weight = simple_graph(6, 6)
    adj, w = to_adj(edge_index, weight, 6, backend=backend)
    x = torch.randn(6, 3, dtype=DT)
    conv = SymNormConv()
    plain = conv(x, adj, w)
    calls = []
    handles = [
        conv.register_propagate_forward_pre_hook(
            lambda m, inputs: calls.append('propagate_pre')),
        conv.register_message_and_aggregate_forward_hook(
            lambda m, inputs, out: calls.append('message_and_aggregate')),
        # A hook may replace the output:
        conv.register_propagate_forward_hook(
            lambda m, inputs, out: 2 * out),
    ]
    assert_close(conv(x, adj, w), 2 * plain)
    assert calls == ['propagate_pre', 'message_and_aggregate']
    for handle in handles:
        handle.remove()
    assert_close(conv(x, adj, w), plain)


@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('trainable', [False, True])
def test_sparse_adj_double_backward_matches_scatter(symmetric, trainable):
    if symmetric:
        R = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
        edge_index, weight = sym_norm_bipartite(R.nonzero().t(), 4, 3,
                                                dtype=DT)
        num_nodes = 7
    else:
        edge_index, weight = simple_graph(6, 6)
        num_nodes = 6
    x0 = torch.randn(num_nodes, 3, dtype=DT)

    grads = {}
    for backend in ('scatter', 'sparse_adj'):
        x = x0.clone().requires_grad_()
        w = weight.clone().requires_grad_(trainable)
        adj, aw = to_adj(edge_index, w, num_nodes, backend=backend,
                         symmetric=symmetric)
        y = SymNormConv()(x, adj, aw).pow(3).sum()
        gx, = torch.autograd.grad(y, x, create_graph=True)
        # E.g. a gradient penalty:
        inputs = [x, w] if trainable else [x]
        grads[backend] = torch.autograd.grad(gx.pow(2).sum(), inputs)
    for a, b in zip(grads['sparse_adj'], grads['scatter']):
        assert_close(a, b)


def _has_cpu_spmm(dtype):
    # torch.sparse.mm(..., 'sum') on CPU gained float16 after torch 2.4.
    csr = torch.eye(2, dtype=dtype).to_sparse_csr()
    try:
        torch.sparse.mm(csr, torch.ones(2, 1, dtype=dtype), 'sum')
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize('backend', STOCK_BACKENDS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('trainable', [True, False])
def test_low_precision(backend, dtype, trainable):
    # (Fixed weights: PyG's EdgeIndex.matmul took MKL's CSR kernel, which
    # has no half-precision version on CPU.)
    if backend in ('auto', 'sparse_adj', 'csr') and \
            not _has_cpu_spmm(dtype):
        pytest.skip(f'this torch has no CPU CSR SpMM for {dtype}')
    edge_index, weight = simple_graph(6, 6)
    x = torch.randn(6, 4, dtype=dtype, requires_grad=True)
    w = weight.to(dtype).requires_grad_(trainable)
    adj, aw = to_adj(edge_index, w, 6, backend=backend)
    out = SymNormConv()(x, adj, aw)
    out.float().sum().backward()
    A = torch.zeros(6, 6).index_put((edge_index[1], edge_index[0]),
                                    w.detach().float())
    assert out.dtype == dtype
    assert_close(out.float(), A @ x.detach().float(), atol=0.05, rtol=0.05)
    # d(sum out)/dx_j = sum of column j of A.
    assert_close(x.grad.float(), A.sum(0).view(-1, 1).expand(6, 4),
                 atol=0.05, rtol=0.05)
    assert (w.grad is not None) == trainable


def test_half_edge_index_refuses_weights_of_another_dtype():
    # The CPU half-precision path of an EdgeIndex would promote to float32
    # where every other backend refuses.
    edge_index, weight = simple_graph(6, 6)
    adj, w = to_adj(edge_index, weight.float(), 6, backend='edge_index')
    x = torch.randn(6, 4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match='dtype mismatch: edge_weight is '
                       'torch.float32 but x is torch.bfloat16'):
        sparse_matmul(adj, x, w)


@pytest.mark.parametrize('backend', STOCK_BACKENDS)
def test_dtype_mismatch_is_refused(backend):
    # The scatter path used to promote, the sparse kernels failed with
    # their own errors.
    edge_index, weight = simple_graph(6, 5)
    adj, w = to_adj(edge_index, weight, (6, 5), backend=backend)
    x = torch.randn(6, 4)
    msg = 'dtype mismatch: adjacency is torch.float64 but features are ' \
          'torch.float32'
    with pytest.raises(ValueError, match=msg):
        OneSidedNormConv()((x, None), adj, w, size=(6, 5))
    sym_adj, sym_w = to_adj(edge_index, weight, 6, backend=backend)
    with pytest.raises(ValueError, match=msg):
        SymNormConv()(x, sym_adj, sym_w)
