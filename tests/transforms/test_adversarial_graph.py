import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from pyg_mmrec.graph import csr_of
from pyg_mmrec.transforms.adversarial import (
    AdversarialGraph,
    gumbel_sharpen,
    num_generated_items,
    preference_rows,
    preference_topk_edges,
    projected_preference_rows,
    projected_real_rows,
    sparse_sharpening_is_exact,
)
from pyg_mmrec.transforms.normalize import OneSidedNorm

U, I, D = 6, 8, 3
EDGES = torch.tensor([[0, 0, 1, 2, 3, 3, 3, 5],
                      [1, 2, 0, 7, 2, 3, 6, 4]])


def dense_r() -> torch.Tensor:
    r = torch.zeros(U, I)
    r[EDGES[0], EDGES[1]] = 1
    return r


def test_preference_rows_match_dense_formula():
    torch.manual_seed(0)
    x = torch.randn(U, D, requires_grad=True)
    z = torch.randn(I, D, requires_grad=True)
    rowptr, col = csr_of(EDGES, U)
    index = torch.tensor([3, 0, 4])
    ref = F.normalize((x[index] @ z.t()) * (1 - dense_r()[index]), dim=1)
    for chunk in (None, 1, 3, 100):
        out = preference_rows(x[index], z, rowptr, col, index, chunk)
        assert torch.allclose(out, ref, atol=1e-6)
    out.sum().backward()
    assert x.grad is not None and z.grad is not None
    with pytest.raises(ValueError, match='user_emb has 2 rows but index has '
                       '3 users'):
        preference_rows(x[:2], z, rowptr, col, index)


@pytest.mark.parametrize('bad, text', [
    ([3, -2], "'index' holds user id -2, outside the 6 rows 0..5 of "
              "'rowptr'"),
    ([6, 0], "'index' holds user id 6, outside the 6 rows 0..5 of 'rowptr'"),
    ([3.0, 0.0], "'index' must be a 1-D integer tensor of user ids "
                 r"\(got 1-D torch.float32\)"),
])
def test_rows_refuse_user_ids_outside_the_csr(bad, text):
    # -2 would otherwise read user 5's training items from the end of
    # rowptr, silently.
    x, z, v = torch.randn(2, D), torch.randn(I, D), torch.randn(I, 5)
    rowptr, col = csr_of(EDGES, U)
    index = torch.tensor(bad)
    for rows in (
            lambda: preference_rows(x, z, rowptr, col, index),
            lambda: projected_preference_rows(x, z, v, rowptr, col, index),
            lambda: projected_real_rows(x, z, v, rowptr, col, index)):
        with pytest.raises(ValueError, match=text):
            rows()


def test_gumbel_sharpen_matches_formula_and_seed():
    torch.manual_seed(1)
    rows = (torch.rand(4, I) < 0.3).float()
    pref = F.normalize(torch.randn(4, I), dim=1)
    gen = torch.Generator().manual_seed(5)
    out = gumbel_sharpen(rows, pref, generator=gen)
    xi = torch.rand(4, I, generator=torch.Generator().manual_seed(5))
    g = -torch.log(-torch.log(xi))
    ref = torch.softmax((rows + 1e-5 * g) / 0.005, dim=1) + 100 * pref
    assert torch.allclose(out, F.normalize(ref, dim=1), atol=1e-6)
    again = gumbel_sharpen(rows, pref,
                           generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match='temperature must be > 0, got 0'):
        gumbel_sharpen(rows, pref, temperature=0)


def test_num_generated_items():
    assert num_generated_items(6710, 1e-4) == 1
    assert num_generated_items(30000, 1e-4) == 3
    assert num_generated_items(8, 0.3) == 3
    # Exact: 0.07 * 100 is 7.000000000000001 in floating point.
    assert num_generated_items(100, 0.07) == 7
    assert num_generated_items(1000, 0.001) == 1
    assert num_generated_items(100, 0.071) == 8
    assert num_generated_items(10, 1.0) == 10
    for rate in (0, 1.01):
        with pytest.raises(ValueError,
                           match=rf'rate must be in \(0, 1\], got {rate}'):
            num_generated_items(8, rate)


def tiny_data() -> HeteroData:
    data = HeteroData()
    data['user'].num_nodes = U
    data['item'].num_nodes = I
    data['item'].visual = torch.randn(I, 4)
    data['item'].textual = torch.randn(I, 2)
    data['user', 'interacts', 'item'].edge_index = EDGES
    return data


@pytest.mark.parametrize('rate', [1e-4, 0.3])
def test_transform_equals_naive_loop(rate):
    torch.manual_seed(2)
    user = {'visual': torch.randn(U, D), 'textual': torch.randn(U, D)}
    item = {'visual': torch.randn(I, D), 'textual': torch.randn(I, D)}
    data = tiny_data()
    transform = AdversarialGraph(user, item, rate=rate, batch_size=4)
    assert repr(transform) == (f'AdversarialGraph(modalities=[visual, '
                               f"textual], rate={rate}, "
                               f"relation='adversarial')")
    out = transform(data)
    k = max(1, math.ceil(rate * I))
    r = dense_r()
    for name in user:
        edges = []
        for u in range(U):
            s = F.normalize((user[name][u] @ item[name].t()) * (1 - r[u]),
                            dim=0)
            edges += [(u, i) for i in s.topk(k).indices.tolist()]
        ref = torch.tensor(edges).t()
        store = out['user', f'adversarial_{name}', 'item']
        assert torch.equal(store.edge_index, ref)
        # OneSidedNorm's source -> target layout: items aggregate users
        # with Q = D_i^-1/2 R_m^T, users aggregate items (reverse edges)
        # with P = D_u^-1/2 R_m.
        deg_u = torch.bincount(ref[0], minlength=U).float()
        deg_i = torch.bincount(ref[1], minlength=I).float()
        assert torch.allclose(store.edge_weight, deg_i[ref[1]].pow(-0.5))
        rev = out['item', f'rev_adversarial_{name}', 'user']
        assert transform.rev_edge_type(name) == rev._key
        assert torch.equal(rev.edge_index, ref.flip(0))
        assert torch.allclose(rev.edge_weight, deg_u[ref[0]].pow(-0.5))
        assert set(store.keys()) == {'edge_index', 'edge_weight'}
        assert set(rev.keys()) == {'edge_index', 'edge_weight'}
    assert ('user', 'adversarial_visual', 'item') not in data.edge_types


def test_transform_writes_onesidednorms_layout():
    # A generated graph is stored exactly as OneSidedNorm stores the
    # training graph, so a PyG layer reads either the same way.
    torch.manual_seed(4)
    user = {'visual': torch.randn(U, D)}
    item = {'visual': torch.randn(I, D)}
    transform = AdversarialGraph(user, item, rate=0.3, relation='gen')
    out = transform(tiny_data())
    fwd, rev = transform.edge_type('visual'), transform.rev_edge_type('visual')
    ref = HeteroData()
    ref['user'].num_nodes, ref['item'].num_nodes = U, I
    ref[fwd].edge_index = out[fwd].edge_index
    ref = OneSidedNorm(fwd)(ref)
    assert OneSidedNorm(fwd).rev_edge_type == rev
    for edge_type in (fwd, rev):
        for key in ('edge_index', 'edge_weight'):
            assert torch.equal(out[edge_type][key], ref[edge_type][key])
    # P and Q are the propagation operators their names say.
    P = torch.zeros(U, I).index_put((out[rev].edge_index[1],
                                     out[rev].edge_index[0]),
                                    out[rev].edge_weight)
    R = torch.zeros(U, I).index_put(tuple(out[fwd].edge_index),
                                    torch.tensor(1.0))
    torch.testing.assert_close(P, R / R.sum(1, keepdim=True).sqrt())


def test_topk_edges_batches_agree_and_bad_input():
    torch.manual_seed(3)
    x, z = torch.randn(U, D), torch.randn(I, D)
    ref = preference_topk_edges(x, z, EDGES, U, I, 0.3, batch_size=100)
    assert torch.equal(preference_topk_edges(x, z, EDGES, U, I, 0.3, 1), ref)
    with pytest.raises(ValueError, match=r'need user_emb \[6, d\] and '
                       r'item_emb \[8, d\], got \[5, 3\]'):
        preference_topk_edges(x[:5], z, EDGES, U, I)
    user = {'visual': x}
    with pytest.raises(ValueError, match=r'must name the same modalities, '
                       r'got \[visual\] and \[acoustic\]'):
        AdversarialGraph(user, {'acoustic': z})
    with pytest.raises(ValueError, match=r'rate must be in \(0, 1\], got 2'):
        AdversarialGraph(user, {'visual': z}, rate=2)
    with pytest.raises(ValueError, match="no item features for modality "
                       r"'acoustic' \(data has: visual, textual\)"):
        AdversarialGraph({'acoustic': x}, {'acoustic': z})(tiny_data())
    # Training edges are checked as DiffusionGraph checks them: item -1
    # used to mask item I - 1 silently.
    data = tiny_data()
    data['user', 'interacts', 'item'].edge_index = torch.tensor(
        [[0, 1], [1, -1]])
    with pytest.raises(ValueError, match="modality 'visual': 'edge_index' "
                       "has negative item id -1"):
        AdversarialGraph(user, {'visual': z})(data)
    with pytest.raises(ValueError, match="'edge_index' repeats 1 user-item "
                       r"pair \(first: user 0, item 1\)"):
        preference_topk_edges(x, z, EDGES[:, [0, 0, 1]], U, I)


def test_projected_rows_equal_the_projected_dense_rows():
    torch.manual_seed(0)
    # float32: the sharpened rows are exactly sparse there (not in float64).
    x = torch.randn(U, D, requires_grad=True)
    z = torch.randn(I, D, requires_grad=True)
    v = torch.randn(I, 5, requires_grad=True)
    rowptr, col = csr_of(EDGES, U)
    index = torch.tensor([3, 0, 5, 1])
    dense = preference_rows(x[index], z, rowptr, col, index)
    out, norm = projected_preference_rows(x[index], z, v, rowptr, col, index)
    torch.testing.assert_close(out, dense @ v)
    masked = (x[index] @ z.t()) * (1 - dense_r()[index])
    torch.testing.assert_close(norm, masked.norm(dim=1))
    # Same gradients in all three inputs.
    grads = torch.autograd.grad((out * out.detach().sin()).sum(), (x, z, v))
    ref = torch.autograd.grad(((dense @ v) * out.detach().sin()).sum(),
                              (x, z, v))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    # The real rows, with and without Gumbel noise (eta = 0 makes the two
    # draws, over different entries, irrelevant).
    for eta, kappa in ((0.0, 0.0), (0.0, 0.5), (0.0, 100.0)):
        dense_real = gumbel_sharpen(dense_r()[index],
                                    dense.detach(), eta, 0.005, kappa)
        real = projected_real_rows(x[index], z, v, rowptr, col, index, eta,
                                   0.005, kappa)
        torch.testing.assert_close(real, dense_real @ v)
    # With noise: the Gumbel draws are for the batch's training entries
    # only, user by user in CSR order, so the rows are rebuilt from the same
    # draws. eta = 0.005 makes the noise as large as the logits' spread
    # (and still keeps the sharpened rows exactly sparse in float32).
    eta = 0.005
    assert sparse_sharpening_is_exact(eta, 0.005)
    entries = [col[rowptr[u]:rowptr[u + 1]] for u in index.tolist()]
    xi = torch.rand(sum(e.numel() for e in entries),
                    generator=torch.Generator().manual_seed(3))
    gumbel = (-torch.log(-torch.log(xi))).split([e.numel() for e in entries])
    sharp = torch.zeros(index.numel(), I)
    for b, (items, g) in enumerate(zip(entries, gumbel)):
        sharp[b, items] = torch.softmax((1.0 + eta * g) / 0.005, dim=0)
    assert sharp[0].max() > 0.5  # 3 items: noise-free it would be 1/3 each
    for kappa in (0.0, 0.5):
        expected = F.normalize(sharp + kappa * dense.detach(), dim=1) @ v
        noisy = projected_real_rows(
            x[index], z, v, rowptr, col, index, eta, 0.005, kappa,
            generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(noisy, expected)


def test_sparse_sharpening_condition_under_flush_to_zero():
    # A compiled extension may switch the process to flush-to-zero, where
    # the smallest subnormal float64 is computed as 0 (math.log(0) raised).
    if not torch.set_flush_denormal(True):
        pytest.skip('this CPU cannot flush denormals')
    try:
        assert not sparse_sharpening_is_exact(1e-5, 0.005, torch.float64)
        assert sparse_sharpening_is_exact(1e-5, 0.005)
    finally:
        torch.set_flush_denormal(False)


def test_sparse_sharpening_condition_and_errors():
    assert sparse_sharpening_is_exact(1e-5, 0.005)  # MMSSL's setting
    assert not sparse_sharpening_is_exact(1e-5, 0.05)  # margin 20 < 104
    assert not sparse_sharpening_is_exact(1e-5, 0.005, torch.float64)
    # Where it fails, the dense rows do have mass outside the training items.
    row = torch.tensor([[1.0, 0.0, 0.0]])
    soft = gumbel_sharpen(row, torch.zeros(1, 3), 1e-5, 0.05, 0.0)
    assert soft[0, 1] > 0
    x, z, v = torch.randn(U, D), torch.randn(I, D), torch.randn(I, 2)
    rowptr, col = csr_of(EDGES, U)
    with pytest.raises(ValueError, match='not sparse for eta=1e-05, '
                       'temperature=0.05'):
        projected_real_rows(x[:1], z, v, rowptr, col, torch.tensor([0]),
                            1e-5, 0.05)
    with pytest.raises(ValueError, match='needs a training item'):
        projected_real_rows(x[:1], z, v, rowptr, col, torch.tensor([4]))
    with pytest.raises(ValueError, match='one row per item'):
        projected_preference_rows(x[:1], z, v[:3], rowptr, col,
                                  torch.tensor([0]))
