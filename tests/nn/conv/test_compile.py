r"""The layers under :func:`torch.compile` (PyG is moving from TorchScript to
it): compiled and eager calls agree in output and gradients on the plain
``edge_index`` path and on the library's default fused adjacency.

The scatter path compiles into one graph. The fused path builds a sparse
CSR tensor, which :func:`torch.compile` does not support: it breaks the
graph there and runs the sparse product eagerly, with the same result."""
import pytest
import torch
from torch.testing import assert_close

from pyg_mmrec.graph import one_sided_norm, sym_norm_bipartite
from pyg_mmrec.nn.conv import (
    ModalityAwareConv,
    OneSidedNormConv,
    SymNormConv,
)
from pyg_mmrec.nn.sparse import to_adj

# EdgeIndex and SparseTensor adjacencies do not compile with this PyTorch
# (their fake-tensor kernels fail for PyG's own LGConv too).
BACKENDS = ['scatter', 'sparse_adj']
U, I, C = 6, 4, 8


def interactions() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    R = torch.rand(U, I, generator=gen) < 0.5
    R[torch.arange(U), torch.arange(U) % I] = True
    return R.nonzero().t()


def compare(fn, make_inputs, *graph):
    r"""Eager vs. compiled :obj:`fn`: outputs and input gradients."""
    eager_inputs, compiled_inputs = make_inputs(), make_inputs()
    eager = fn(*eager_inputs, *graph)
    compiled = torch.compile(fn)(*compiled_inputs, *graph)
    grad = torch.randn_like(eager)
    eager.backward(grad)
    compiled.backward(grad)
    assert_close(compiled, eager)
    for a, b in zip(compiled_inputs, eager_inputs):
        if b.requires_grad:
            assert_close(a.grad, b.grad)


def leaves(*sizes):
    def make():
        gen = torch.Generator().manual_seed(1)
        return [torch.randn(n, C, generator=gen).requires_grad_()
                for n in sizes]
    return make


@pytest.mark.parametrize('backend', BACKENDS)
def test_compile_sym_norm_conv(backend):
    index, weight = sym_norm_bipartite(interactions(), U, I)
    adj, w = to_adj(index, weight, U + I, backend=backend, symmetric=True)
    compare(SymNormConv(), leaves(U + I), adj, w)


@pytest.mark.parametrize('backend', BACKENDS)
def test_compile_one_sided_norm_conv(backend):
    edge_index = interactions()
    user_w, _ = one_sided_norm(edge_index, U, I)
    adj, w = to_adj(edge_index.flip(0), user_w, (I, U), backend=backend)

    def make():
        item, user = leaves(I, U)()
        return [item, user.detach()]  # targets only fix the size

    def pair_conv(x_item, x_user, adj, w):
        return OneSidedNormConv()((x_item, x_user), adj, w)

    compare(pair_conv, make, adj, w)


@pytest.mark.parametrize('backend', BACKENDS)
def test_compile_modality_aware_conv(backend):
    index, weight = sym_norm_bipartite(interactions(), U, I)
    adj, w = to_adj(index, weight, U + I, backend=backend, symmetric=True)
    top1 = torch.stack([torch.arange(U), torch.arange(U) % I])
    g_index, g_weight = sym_norm_bipartite(top1, U, I)
    gen, gw = to_adj(g_index, g_weight, U + I, backend=backend)
    compare(ModalityAwareConv(lambda_adj=0.2), leaves(U, I, I), adj, gen, w,
            gw)


def test_scatter_path_compiles_without_graph_breaks():
    index, weight = sym_norm_bipartite(interactions(), U, I)
    x = torch.randn(U + I, C)
    cases = [(SymNormConv(), (x, index, weight)),
             (ModalityAwareConv(), (x[:U], x[U:], x[U:], index, index,
                                    weight, weight))]
    for conv, args in cases:
        torch._dynamo.reset()
        explained = torch._dynamo.explain(conv)(*args)
        assert explained.graph_count == 1, explained.break_reasons
        assert explained.graph_break_count == 0
