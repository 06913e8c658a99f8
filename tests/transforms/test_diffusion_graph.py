
import pytest
import torch
from torch_geometric.data import HeteroData

from pyg_mmrec.graph import csr_of
from pyg_mmrec.nn.denoiser import Denoiser
from pyg_mmrec.nn.diffusion import GaussianDiffusion
from pyg_mmrec.transforms.diffusion_graph import (
    DiffusionGraph,
    diffusion_topk_edges,
    interaction_rows,
)

U, I = 7, 9
EDGES = torch.tensor([[0, 0, 1, 2, 2, 2, 4, 5, 6, 6],
                      [1, 4, 0, 2, 3, 8, 5, 5, 0, 7]])


def tiny_data() -> HeteroData:
    data = HeteroData()
    data['user'].num_nodes = U
    data['item'].num_nodes = I
    data['item'].visual = torch.randn(I, 3)
    data['item'].acoustic = torch.randn(I, 2)
    data['user', 'interacts', 'item'].edge_index = EDGES
    return data


def denoisers():
    torch.manual_seed(0)
    return {'visual': Denoiser(I, hidden_channels=6),
            'acoustic': Denoiser(I, hidden_channels=6)}


def test_interaction_rows_match_loop():
    rowptr, col = csr_of(EDGES, U)
    index = torch.tensor([6, 0, 3, 2, 0])
    dense = interaction_rows(rowptr, col, index, I)
    ref = torch.zeros(5, I)
    for b, u in enumerate(index.tolist()):
        for e in range(EDGES.size(1)):
            if EDGES[0, e] == u:
                ref[b, EDGES[1, e]] = 1
    assert torch.equal(dense, ref)
    csr = interaction_rows(rowptr, col, index, I, layout=torch.sparse_csr)
    assert torch.equal(csr.to_dense(), ref)
    with pytest.raises(ValueError, match='layout must be torch.strided or'):
        interaction_rows(rowptr, col, index, I, layout=torch.sparse_coo)
    # A negative user read another user's row from the end of rowptr; an
    # item id beyond num_items made an invalid sparse matrix, whose
    # products read out of bounds (a segfault).
    for layout in (torch.strided, torch.sparse_csr):
        with pytest.raises(ValueError, match=r"'index' holds user id -2, "
                           r"outside the 7 rows 0..6 of 'rowptr'"):
            interaction_rows(rowptr, col, torch.tensor([0, -2]), I,
                             layout=layout)
        with pytest.raises(ValueError, match=r"'col' holds item id 8, "
                           r"outside the 5 items 0..4"):
            interaction_rows(rowptr, col, index, 5, layout=layout)
    with pytest.raises(ValueError, match=r"'index' must be a 1-D integer "
                       r"tensor of user ids \(got 2-D torch.int64\)"):
        interaction_rows(rowptr, col, index.view(1, -1), I)


def naive_edges(diff, den, k):
    # One user at a time through the literal T-step reverse process.
    edges = []
    for u in range(U):
        row = torch.zeros(1, I)
        for e in range(EDGES.size(1)):
            if EDGES[0, e] == u:
                row[0, EDGES[1, e]] = 1
        out = diff.reverse(den.eval(), row)[0]
        for i in out.topk(k).indices.tolist():
            edges.append((u, i))
    return torch.tensor(edges).t()


@pytest.mark.parametrize('k', [1, 3])
def test_transform_equals_naive_loop(k):
    diff, dens = GaussianDiffusion(), denoisers()
    data = tiny_data()
    out = DiffusionGraph(diff, dens, k=k, batch_size=3)(data)
    assert all(den.training for den in dens.values())  # mode restored
    for name, den in dens.items():
        store = out['user', f'diffusion_{name}', 'item']
        ref = naive_edges(diff, den, k)
        assert torch.equal(store.edge_index, ref)
        # Normalised like A: dense D^-1/2 ([[0, R], [R^T, 0]] + I) D^-1/2.
        adj = torch.eye(U + I)
        adj[ref[0], ref[1] + U] = 1
        adj[ref[1] + U, ref[0]] = 1
        dinv = adj.sum(1).pow(-0.5)
        norm = dinv.view(-1, 1) * adj * dinv.view(1, -1)
        got = torch.zeros(U + I, U + I)
        got[store.adj_edge_index[0], store.adj_edge_index[1]] = \
            store.adj_edge_weight
        assert torch.allclose(got, norm, atol=1e-6)
        assert torch.allclose(store.edge_weight, norm[ref[0], ref[1] + U])
    # BaseTransform works on a copy.
    assert ('user', 'diffusion_visual', 'item') not in data.edge_types


def test_process_runs_once_per_distinct_row(monkeypatch):
    # Users 4 and 5 have the same items: one run serves both.
    diff, den = GaussianDiffusion(), denoisers()['visual']
    seen = []
    real = GaussianDiffusion.reverse_topk

    def counting(self, denoiser, rows, k, **kwargs):
        seen.append(rows.to_dense())
        return real(self, denoiser, rows, k, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, 'reverse_topk', counting)
    out = diffusion_topk_edges(diff, den, EDGES, U, I, 2, batch_size=4)
    rows = torch.cat(seen)
    assert rows.size(0) == U - 1
    assert len({tuple(r.tolist()) for r in rows}) == U - 1
    assert torch.equal(out[1].view(U, 2)[4], out[1].view(U, 2)[5])


def test_rows_reach_the_process_in_item_order(monkeypatch):
    # The first layer sums a row's entries in storage order, and users with
    # the same items share one run: so rows are put in item order first,
    # and the edges do not depend on the order of the input edges.
    diff, den = GaussianDiffusion(), denoisers()['visual']
    ref = diffusion_topk_edges(diff, den, EDGES, U, I, 2)
    real = GaussianDiffusion.reverse_topk

    def checking(self, denoiser, rows, k, **kwargs):
        crow, col = rows.crow_indices(), rows.col_indices()
        for r in range(rows.size(0)):
            entries = col[crow[r]:crow[r + 1]]
            assert torch.equal(entries, entries.sort().values)
        return real(self, denoiser, rows, k, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, 'reverse_topk', checking)
    perm = torch.randperm(EDGES.size(1), generator=torch.Generator()
                          .manual_seed(0))
    for edges in (EDGES[:, perm], EDGES.flip(1), EDGES.int()):
        assert torch.equal(diffusion_topk_edges(diff, den, edges, U, I, 2),
                           ref)


def test_screening_and_batches_do_not_change_edges():
    diff, dens = GaussianDiffusion(), denoisers()
    den = dens['visual']
    ref = diffusion_topk_edges(diff, den, EDGES, U, I, 2, batch_size=100,
                               screen_dtype=None)
    for bs, screen in [(1, torch.bfloat16), (4, 'auto')]:
        out = diffusion_topk_edges(diff, den, EDGES, U, I, 2, bs, screen)
        assert torch.equal(out, ref)


def test_keep_rate_drop_is_seeded_and_rescaled():
    diff, dens = GaussianDiffusion(), denoisers()
    data = tiny_data()
    full = DiffusionGraph(diff, dens)(data)
    outs = [DiffusionGraph(diff, dens, keep_rate=0.5,
                           generator=torch.Generator().manual_seed(7))(data)
            for _ in range(2)]
    key = ('user', 'diffusion_visual', 'item')
    a, b = outs[0][key], outs[1][key]
    assert torch.equal(a.adj_edge_index, b.adj_edge_index)
    assert torch.equal(a.adj_edge_weight, b.adj_edge_weight)
    # Kept entries are a subset of the full graph with weights scaled by 2.
    n = U + I
    ref = torch.zeros(n, n)
    ref[full[key].adj_edge_index[0], full[key].adj_edge_index[1]] = \
        full[key].adj_edge_weight
    kept = ref[a.adj_edge_index[0], a.adj_edge_index[1]]
    assert torch.allclose(a.adj_edge_weight, kept / 0.5)
    assert 0 < a.adj_edge_weight.numel() < full[key].adj_edge_weight.numel()
    # The raw top-k edges are not dropped.
    assert torch.equal(a.edge_index, full[key].edge_index)
    # Mask drawn from the generator: the same draws reproduce it.
    gen = torch.Generator().manual_seed(7)
    mask = torch.rand(full[key].adj_edge_weight.numel(), generator=gen) < 0.5
    assert torch.equal(a.adj_edge_index, full[key].adj_edge_index[:, mask])


def test_bad_input():
    diff, dens = GaussianDiffusion(), denoisers()
    for rate in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError,
                           match=rf'keep_rate must be in \(0, 1\], got '
                           rf'{rate}'):
            DiffusionGraph(diff, dens, keep_rate=rate)
    with pytest.raises(ValueError, match='k must be an integer >= 1, got 0'):
        DiffusionGraph(diff, dens, k=0)
    with pytest.raises(ValueError, match=r'k must be at most the number of '
                       r'items \(9\), got 10'):
        diffusion_topk_edges(diff, dens['visual'], EDGES, U, I, k=10)
    with pytest.raises(ValueError, match='denoisers must name at least one'):
        DiffusionGraph(diff, {})
    # A denoiser of another width used to score past the last item (an
    # index error later) or ignore the last items.
    with pytest.raises(ValueError, match="modality 'visual': the denoiser "
                       f"scores {I + 1} items but the graph has {I}"):
        DiffusionGraph(diff, {'visual': Denoiser(I + 1, hidden_channels=4)}
                       )(tiny_data())
    for width in (I - 2, I + 2):
        with pytest.raises(ValueError, match=f'the denoiser scores {width} '
                           f'items but the graph has {I}'):
            diffusion_topk_edges(diff, Denoiser(width, hidden_channels=4),
                                 EDGES, U, I)
    bad = EDGES.clone()
    bad[1, 0] = I
    with pytest.raises(ValueError, match=f"'edge_index' has item id {I} but "
                       f"there are only {I} items"):
        diffusion_topk_edges(diff, dens['visual'], bad, U, I)
    # A repeated pair summed to 2 in the sparse rows the process starts
    # from, while the denoisers were trained on binary rows.
    with pytest.raises(ValueError, match="'edge_index' repeats 1 user-item "
                       "pair"):
        diffusion_topk_edges(diff, dens['visual'],
                             torch.cat([EDGES, EDGES[:, :1]], dim=1), U, I)
    with pytest.raises(ValueError, match="no item features for modality "
                       r"'textual' \(data has: visual, acoustic\)"):
        DiffusionGraph(diff, {'textual': dens['visual']})(tiny_data())
    assert repr(DiffusionGraph(diff, dens, relation='gen')).endswith(
        "k=1, keep_rate=1.0, relation='gen')")


def test_repr_names_every_option_that_changes_the_output():
    # PyG compares a data set's pre_transform repr to its cached one and
    # warns when they differ: hidden_dtype makes the graphs approximate, so
    # two transforms differing in it must not share a repr.
    diff, dens = GaussianDiffusion(), denoisers()
    exact = DiffusionGraph(diff, dens)
    low = DiffusionGraph(diff, dens, hidden_dtype=torch.bfloat16)
    assert repr(exact) != repr(low)
    assert repr(low).endswith('hidden_dtype=torch.bfloat16)')


@pytest.mark.parametrize('avx512_bf16,amx,expected', [
    (True, False, torch.bfloat16), (False, True, torch.bfloat16),
    (False, False, None)])
def test_default_screen_dtype_follows_native_bf16(monkeypatch, avx512_bf16,
                                                  amx, expected):
    from pyg_mmrec.transforms.diffusion_graph import default_screen_dtype
    # raising=False: torch 2.4 has neither probe.
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported',
                        lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx,
                        raising=False)
    assert default_screen_dtype(torch.device('cpu')) is expected


@pytest.mark.parametrize('capability, expected', [
    ((6, 0), None), ((7, 5), None), ((8, 0), torch.bfloat16),
    ((9, 0), torch.bfloat16)])
def test_bf16_screen_only_on_gpus_with_bf16_tensor_cores(
        monkeypatch, capability, expected):
    # Pascal (6.x) fails bf16 GEMMs in cuBLAS and Turing (7.5) emulates
    # them slower than float32.
    from pyg_mmrec.transforms.diffusion_graph import default_screen_dtype
    monkeypatch.setattr(torch.cuda, 'get_device_capability',
                        lambda device=None: capability)
    assert default_screen_dtype(torch.device('cuda')) is expected
