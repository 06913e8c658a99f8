import pytest
import torch
from torch.testing import assert_close

import torch_geometric.typing

from pyg_mmrec.graph import sym_norm_bipartite
from pyg_mmrec.nn.conv.modality_aware_conv import ModalityAwareConv
from pyg_mmrec.nn.sparse import to_adj

DT = torch.float64
BACKENDS = ['scatter', 'coo', 'csr', 'edge_index', 'sparse_adj']
if torch_geometric.typing.WITH_TORCH_SPARSE:
    BACKENDS.append('sparse_tensor')


def graphs(num_users=5, num_items=4, seed=1):
    r"""A (symmetric) and a generated G_m with dropped entries (so G_m is
    not symmetric), as homogeneous (edge_index, weight) and dense."""
    gen = torch.Generator().manual_seed(seed)
    U, I = num_users, num_items
    R = torch.rand(U, I, generator=gen) < 0.5
    R[0, 0] = True
    a_index, a_weight = sym_norm_bipartite(R.nonzero().t(), U, I, dtype=DT)
    top1 = torch.randint(I, (U, ), generator=gen)
    g_index, g_weight = sym_norm_bipartite(
        torch.stack([torch.arange(U), top1]), U, I, dtype=DT)
    keep = torch.rand(g_weight.numel(), generator=gen) < 0.7
    g_index, g_weight = g_index[:, keep], g_weight[keep] / 0.7

    def dense(index, weight):
        return torch.zeros(U + I, U + I, dtype=DT).index_put(
            (index[1], index[0]), weight, accumulate=True)

    return (a_index, a_weight, dense(a_index, a_weight), g_index, g_weight,
            dense(g_index, g_weight))


def reference(A, G, E_u, E_i, p, lambda_adj):
    U = E_u.size(0)
    s = A @ torch.cat([E_u, p])
    s = s + A @ torch.cat([s[:U], E_i])
    return s + lambda_adj * (G @ torch.cat([E_u, E_i]))


@pytest.mark.parametrize('backend', BACKENDS)
def test_modality_aware_conv_matches_dense(backend):
    U, I, F = 5, 4, 6
    a_index, a_weight, A, g_index, g_weight, G = graphs(U, I)
    assert not torch.equal(G, G.t())  # exercises the non-symmetric backward
    adj, w = to_adj(a_index, a_weight, U + I, backend=backend, symmetric=True)
    gen, gw = to_adj(g_index, g_weight, U + I, backend=backend)

    conv = ModalityAwareConv(lambda_adj=0.3)
    assert str(conv) == 'ModalityAwareConv(lambda_adj=0.3)'
    inputs = [torch.randn(n, F, dtype=DT, requires_grad=True)
              for n in (U, I, I)]
    out = conv(*inputs, adj, gen, w, gw)
    grad = torch.randn_like(out)
    out.backward(grad)

    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out_ref = reference(A, G, *ref_inputs, 0.3)
    out_ref.backward(grad)
    assert_close(out, out_ref)
    for t, t_ref in zip(inputs, ref_inputs):
        assert_close(t.grad, t_ref.grad)


def test_modality_aware_conv_default_weight():
    U, I = 5, 4
    a_index, a_weight, A, g_index, g_weight, G = graphs(U, I, seed=2)
    E_u, E_i, p = (torch.randn(n, 3, dtype=DT) for n in (U, I, I))
    conv = ModalityAwareConv()
    assert conv.lambda_adj == 0.2
    out = conv(E_u, E_i, p, a_index, g_index, a_weight, g_weight)
    assert_close(out, reference(A, G, E_u, E_i, p, 0.2))


def test_modality_aware_conv_bad_input():
    U, I = 5, 4
    a_index, a_weight, _, g_index, g_weight, _ = graphs(U, I)
    adj, _ = to_adj(a_index, a_weight, U + I, symmetric=True)
    gen, _ = to_adj(g_index, g_weight, U + I)
    conv = ModalityAwareConv()
    E_u, E_i = torch.randn(U, 3, dtype=DT), torch.randn(I, 3, dtype=DT)
    with pytest.raises(ValueError, match=r"'item_feat' has shape \[4, 2\] "
                       r"but 'item_emb' has shape \[4, 3\]"):
        conv(E_u, E_i, torch.randn(I, 2, dtype=DT), adj, gen)
    with pytest.raises(ValueError, match="'user_emb' has 2 channels but "
                       "'item_emb' has 3"):
        conv(torch.randn(U, 2, dtype=DT), E_i, E_i, adj, gen)
    # The scatter path returned float64 for float64 features only.
    with pytest.raises(ValueError, match="'user_emb', 'item_emb' and "
                       "'item_feat' must share one dtype"):
        conv(E_u.float(), E_i.float(), E_i, a_index, g_index,
             a_weight.float(), g_weight.float())
    with pytest.raises(ValueError, match='adjacency expects 9 source nodes '
                       'but the features have 8 rows'):
        conv(E_u[:-1], E_i, E_i, adj, gen)
    with pytest.raises(ValueError, match="'edge_weight' must be None"):
        conv(E_u, E_i, E_i, adj, gen, None, g_weight)
    # A PyG-style call (x, edge_index, ...) was reported as a dtype
    # mismatch between the adjacency and the features.
    x = torch.cat([E_u, E_i])
    with pytest.raises(ValueError, match=r"expected 2-D 'item_feat' \[N, F\] "
                       r"\(got 1-D\)"):
        conv(x, E_i, torch.ones(I, dtype=DT), adj, gen)
    with pytest.raises(ValueError, match="expected floating-point 'item_emb' "
                       r"\(got torch.int64\)"):
        conv(x, a_index, E_i, adj, gen)
    with pytest.raises(TypeError, match="expected 'user_emb' as a tensor "
                       r"\[N, F\] \(got tuple\)"):
        conv((E_u, E_i), E_i, E_i, adj, gen)
