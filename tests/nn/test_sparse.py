import re

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.testing import assert_close

import torch_geometric.typing
from torch_geometric import EdgeIndex
from torch_geometric.testing import withPackage

from pyg_mmrec.graph import sym_norm_bipartite
from pyg_mmrec.nn.sparse import (
    BACKENDS,
    DEFAULT_BACKEND,
    SparseAdj,
    resolve_backend,
    sparse_matmul,
    sym_norm_adj,
    to_adj,
)

DT = torch.float64


def random_graph(num_src=7, num_dst=5, num_edges=15, seed=0):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(num_src, (num_edges, ), generator=gen)
    dst = torch.randint(num_dst, (num_edges, ), generator=gen)
    weight = torch.rand(num_edges, generator=gen, dtype=DT) + 0.1
    return torch.stack([src, dst]), weight


def dense_adj_t(edge_index, weight, num_src, num_dst):
    r"""Dense A^T (targets x sources); duplicates summed, differentiable."""
    out = weight.new_zeros(num_dst, num_src)
    return out.index_put((edge_index[1], edge_index[0]), weight,
                         accumulate=True)


def sym_graph(num_users=4, num_items=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    R = torch.rand(num_users, num_items, generator=gen) < 0.5
    R[0, 0] = True  # at least one edge
    return sym_norm_bipartite(R.nonzero().t(), num_users, num_items,
                              dtype=DT)


def stock_backends():
    out = ['scatter', 'coo', 'csr', 'edge_index', 'sparse_adj', 'auto']
    if torch_geometric.typing.WITH_TORCH_SPARSE:
        out.append('sparse_tensor')
    return out


def test_resolve_backend():
    assert resolve_backend('auto') == DEFAULT_BACKEND == 'sparse_adj'
    assert set(stock_backends()) <= set(BACKENDS)
    with pytest.raises(ValueError, match="unknown backend 'dense'"):
        resolve_backend('dense')


@pytest.mark.skipif(torch_geometric.typing.WITH_TORCH_SPARSE,
                    reason='torch-sparse is installed')
def test_sparse_tensor_backend_needs_torch_sparse():
    edge_index, weight = random_graph()
    with pytest.raises(ImportError, match="needs the 'torch-sparse'"):
        to_adj(edge_index, weight, (7, 5), backend='sparse_tensor')


@pytest.mark.parametrize('backend', stock_backends())
def test_to_adj_matches_dense(backend):
    num_src, num_dst = 7, 5
    edge_index, weight = random_graph(num_src, num_dst)
    x = torch.randn(num_src, 3, dtype=DT)
    adj, w = to_adj(edge_index, weight, (num_src, num_dst), backend=backend)
    if backend in ('scatter', 'edge_index'):
        assert w is not None and w.shape == weight.shape
    else:
        assert w is None
    if backend == 'edge_index':
        assert isinstance(adj, EdgeIndex) and adj.is_sorted_by_col
    expected = dense_adj_t(edge_index, weight, num_src, num_dst) @ x
    if backend == 'scatter':
        out = torch.zeros(num_dst, 3, dtype=DT).index_add_(
            0, adj[1], w.view(-1, 1) * x[adj[0]])
    else:
        out = sparse_matmul(adj, x, w)
    assert_close(out, expected)


def test_sparse_adj_structure():
    edge_index = torch.tensor([[0, 2, 2, 1, 2], [1, 0, 0, 1, 1]])
    weight = torch.tensor([1., 2., 3., 4., 5.], dtype=DT)
    adj = SparseAdj.from_edge_index(edge_index, weight, (3, 2))
    # Rows are targets, duplicates (2 -> 0 twice) are summed:
    assert adj.size() == (2, 3) and adj.nnz() == 4
    assert adj.rowptr.tolist() == [0, 1, 4]
    assert adj.col.tolist() == [2, 0, 1, 2]
    assert adj.value.tolist() == [5., 1., 4., 5.]
    assert adj.rowptr.dtype == adj.col.dtype == torch.int32
    assert_close(adj.to_dense(), dense_adj_t(edge_index, weight, 3, 2))
    assert_close(adj.t().to_dense(), dense_adj_t(edge_index, weight, 3, 2).t())
    assert_close(adj.t().t().to_dense(), adj.to_dense())
    assert str(adj) == ('SparseAdj(size=(2, 3), nnz=4, symmetric=False, '
                        'dtype=torch.float64, device=cpu)')
    moved = adj.to(torch.float32)
    assert moved.dtype == torch.float32 and moved.size() == (2, 3)
    # The cast keeps the values and the transpose cached by adj.t() above.
    dense = dense_adj_t(edge_index, weight, 3, 2).float()
    assert_close(moved.to_dense(), dense)
    assert_close(moved.t().to_dense(), dense.t())
    x = torch.randn(2, 4)
    assert_close(moved.t().matmul(x), dense.t() @ x)


def test_sparse_adj_follows_data_cuda_and_cpu(monkeypatch):
    # PyG's data.cuda()/.cpu() call .cuda()/.cpu() on every attribute and
    # silently keep objects without them in place: the adjacency stayed on
    # the CPU while the features moved. 'meta' stands in for the GPU.
    from torch_geometric.data import HeteroData
    edge_index, weight = sym_graph()[:2]
    adj = SparseAdj.from_edge_index(edge_index, weight, (7, 7))
    adj.t()  # cache a transpose too
    data = HeteroData()
    data['user'].x = torch.randn(3, 2)
    data['user', 'to', 'user'].adj_t = adj
    monkeypatch.setattr(torch.Tensor, 'cuda',
                        lambda self, device=None, non_blocking=False:
                        self.to('meta'))
    moved = data.cuda()['user', 'to', 'user'].adj_t
    assert isinstance(moved, SparseAdj)
    assert moved.device.type == 'meta' and moved.rowptr.device.type == 'meta'
    with pytest.raises(ValueError, match=r'device mismatch: adjacency is on '
                       r'meta but features are on cpu \(move both'):
        moved.matmul(torch.randn(7, 2, dtype=DT))
    # .cpu() is delegated the same way (here to 'meta' as well).
    monkeypatch.setattr(torch.Tensor, 'cpu', lambda self: self.to('meta'))
    assert data.cpu()['user', 'to', 'user'].adj_t.device.type == 'meta'


def graph_of(symmetric, small=False):
    r"""``(edge_index, weight, size)`` of a symmetric square graph or a
    random rectangular one."""
    if symmetric:
        edge_index, weight = sym_graph(3, 2) if small else sym_graph()
        n = int(edge_index.max()) + 1
        return edge_index, weight, (n, n)
    if small:
        return (*random_graph(4, 3, 8), (4, 3))
    return (*random_graph(), (7, 5))


@pytest.mark.parametrize('symmetric', [False, True])
def test_sparse_adj_matches_dense_forward_backward(symmetric):
    edge_index, weight, size = graph_of(symmetric)
    weight = weight.requires_grad_()
    adj = SparseAdj.from_edge_index(edge_index, weight, size, symmetric)
    x = torch.randn(size[0], 4, dtype=DT, requires_grad=True)
    out = adj.matmul(x)
    grad = torch.randn_like(out)
    out.backward(grad)

    x_ref = x.detach().clone().requires_grad_()
    w_ref = weight.detach().clone().requires_grad_()
    out_ref = dense_adj_t(edge_index, w_ref, *size) @ x_ref
    out_ref.backward(grad)
    assert_close(out, out_ref)
    assert_close(x.grad, x_ref.grad)
    assert_close(weight.grad, w_ref.grad)


@pytest.mark.parametrize('check', [gradcheck, gradgradcheck])
@pytest.mark.parametrize('symmetric', [False, True])
def test_sparse_adj_gradcheck(symmetric, check):
    # gradgradcheck: the backward pass is itself differentiable (it used to
    # be once_differentiable, unlike the other backends).
    edge_index, weight, size = graph_of(symmetric, small=True)
    weight = weight.requires_grad_()
    x = torch.randn(size[0], 2, dtype=DT, requires_grad=True)

    def fn(w, x):
        # Rebuilding inside makes the check cover the coalesce step too.
        adj = SparseAdj.from_edge_index(edge_index, w, size, symmetric,
                                        check_symmetric=False)
        return adj.matmul(x)

    assert check(fn, (weight, x))

    adj = SparseAdj.from_edge_index(edge_index, weight.detach(), size,
                                    symmetric)
    assert check(adj.matmul, (x, ))  # cached-CSR path (constant values)


def test_sparse_adj_symmetric_backward_reuses_matrix():
    edge_index, weight = sym_graph()
    n = int(edge_index.max()) + 1
    adj = SparseAdj.from_edge_index(edge_index, weight, n, symmetric=True)
    x = torch.randn(n, 3, dtype=DT, requires_grad=True)
    adj.matmul(x).sum().backward()
    assert adj._t is None  # no transpose was ever built
    assert adj.csr_t() is adj.csr()


def test_symmetric_flag_is_checked():
    edge_index, weight = sym_graph()
    n = int(edge_index.max()) + 1
    bad_weight = weight.clone()
    bad_weight[0] += 1.0  # one direction of an edge only
    with pytest.raises(ValueError, match='the values are not symmetric'):
        to_adj(edge_index, bad_weight, n, symmetric=True)
    # Entry by entry: a tolerance scaled by the largest value accepted
    # small entries five times their mirror, or a large diagonal hid them.
    pair = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r'the values are not symmetric '
                       r'\(entry \(0, 1\) is 5e-07, entry \(1, 0\) '
                       r'1e-07\)'):
        to_adj(pair, torch.tensor([1e-7, 5e-7], dtype=DT), 2, symmetric=True)
    with pytest.raises(ValueError, match=r'entry \(0, 1\) is 3, entry '
                       r'\(1, 0\) 1\)'):
        to_adj(torch.tensor([[0, 1, 2], [1, 0, 2]]),
               torch.tensor([1., 3., 1e7]), 3, symmetric=True)
    with pytest.raises(ValueError, match='the values are not symmetric'):
        to_adj(pair, torch.tensor([float('nan')] * 2), 2, symmetric=True)
    # Rounding differences stay within the default tolerance.
    to_adj(pair, torch.tensor([1.0, 1.0 + 2**-23]), 2, symmetric=True)
    one_way = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match='sparsity pattern is not symmetric'):
        to_adj(one_way, None, 3, symmetric=True)
    with pytest.raises(ValueError, match='must be square'):
        to_adj(one_way, None, (3, 4), symmetric=True)
    # Stated but unchecked: trusted (the caller's responsibility).
    adj, _ = to_adj(one_way, None, 3, symmetric=True, check_symmetric=False)
    assert adj.symmetric


def test_to_adj_bad_input():
    edge_index, weight = random_graph()
    with pytest.raises(ValueError, match=r"'edge_weight' must have shape "
                       r"\[15\] \(got \[14\]\)"):
        to_adj(edge_index, weight[:-1], (7, 5))
    with pytest.raises(ValueError, match="'edge_index' has target id 4 but "
                       "there are only 3 target nodes"):
        to_adj(edge_index, weight, (7, 3))
    with pytest.raises(ValueError, match="'edge_index' has source id 6 but "
                       "there are only 2 source nodes"):
        to_adj(edge_index, weight, (2, 5))
    with pytest.raises(ValueError, match=r"must have shape \[2, E\]"):
        to_adj(edge_index.t(), None, 7)
    # A float size was truncated, a negative one failed later, and integer
    # weights made an integer matrix.
    for size in ((7, 5.5), -1, (7, -5), (7, ), 7.0):
        with pytest.raises(ValueError, match=re.escape(
                'size must be a number of nodes or a pair (num_src, '
                f'num_dst) of them, non-negative integers (got {size!r})')):
            to_adj(edge_index, weight, size)
    for size in (torch.Size([7, 5]), torch.tensor([7, 5]), [7, 5],
                 (torch.tensor(7), 5)):
        assert to_adj(edge_index, weight, size)[0].size() == (5, 7)
    for size in (True, (7, True), torch.tensor([7])):
        with pytest.raises(ValueError, match='size must be a number of '
                           'nodes or a pair'):
            to_adj(edge_index, weight, size)
    with pytest.raises(ValueError, match='dtype must be a floating-point '
                       r'type \(got torch.int64\)'):
        SparseAdj.from_edge_index(edge_index, None, (7, 5), dtype=torch.long)
    for backend in stock_backends():
        with pytest.raises(ValueError, match=r"'edge_weight' must be "
                           r"floating-point \(got torch.int64\)"):
            to_adj(edge_index, torch.ones(15, dtype=torch.long), (7, 5),
                   backend=backend)
    with pytest.raises(ValueError, match="'edge_weight' must be floating"):
        SparseAdj.from_edge_index(edge_index,
                                  torch.ones(15, dtype=torch.long), (7, 5))
    adj, _ = to_adj(edge_index, weight, (7, 5))
    with pytest.raises(ValueError, match='with features of 5 rows'):
        adj.matmul(torch.randn(5, 2, dtype=DT))
    with pytest.raises(ValueError, match='dtype mismatch'):
        adj.matmul(torch.randn(7, 2))

    # Fused products of every kind check the rows of x: torch_sparse's
    # kernel (behind a weighted EdgeIndex that needs gradients) read
    # beyond them (garbage, or a segfault on large graphs).
    weight = weight.clone().requires_grad_()
    for backend in [b for b in stock_backends()
                    if b not in ('scatter', 'auto', 'sparse_adj')]:
        adj, w = to_adj(edge_index, weight, (7, 5), backend=backend)
        with pytest.raises(ValueError, match='adjacency expects 7 source '
                           'nodes but the features have 2 rows'):
            sparse_matmul(adj, torch.randn(2, 3, dtype=DT), w)
    # Also without sizes, where the largest source id decides.
    perm = edge_index[1].argsort()
    unsized = EdgeIndex(edge_index[:, perm], sort_order='col')
    with pytest.raises(ValueError, match='adjacency has source id 6 but the '
                       'features have 2 rows'):
        sparse_matmul(unsized, torch.randn(2, 3, dtype=DT), weight[perm])


def test_empty_graph():
    edge_index = torch.empty(2, 0, dtype=torch.long)
    adj, _ = to_adj(edge_index, None, (3, 2))
    x = torch.randn(3, 4, requires_grad=True)
    out = adj.matmul(x)
    assert_close(out, torch.zeros(2, 4))
    out.sum().backward()
    assert_close(x.grad, torch.zeros(3, 4))


@withPackage('torch_sparse')
def test_sparse_tensor_backend():
    from torch_geometric.typing import SparseTensor
    edge_index, weight = random_graph()
    adj, w = to_adj(edge_index, weight, (7, 5), backend='sparse_tensor')
    assert isinstance(adj, SparseTensor) and w is None
    assert_close(adj.to_dense(), dense_adj_t(edge_index, weight, 7, 5))


def test_sym_norm_adj_is_symmetric_by_construction():
    edge_index = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 0]])
    adj, w = sym_norm_adj(edge_index, 3, 2, dtype=DT)
    assert w is None and adj.symmetric and adj.size() == (5, 5)
    adj.check_symmetric()  # the statement holds
    A_bar = torch.eye(5, dtype=DT)
    A_bar[edge_index[0], edge_index[1] + 3] = 1.
    A_bar[edge_index[1] + 3, edge_index[0]] = 1.
    d = A_bar.sum(1).pow(-0.5)
    assert_close(adj.to_dense(), d.view(-1, 1) * A_bar * d.view(1, -1))
    ei, w = sym_norm_adj(edge_index, 3, 2, backend='scatter')
    assert ei.size(1) == w.numel() == 2 * 4 + 5


@pytest.mark.parametrize('backend', stock_backends())
def test_int32_edge_index_on_more_than_46340_nodes(backend):
    # Sort keys like `target * num_nodes + source` overflow int32 here: the
    # 'edge_index' backend mis-sorted, the others failed in `coalesce`.
    n = 50_000
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(n, (40, ), generator=gen)
    dst = torch.randint(n, (40, ), generator=gen)
    src[:2], dst[:2] = torch.tensor([0, n - 1]), torch.tensor([n - 1, 0])
    edge_index = torch.stack([src, dst])
    weight = torch.rand(40, generator=gen, dtype=DT)
    x = torch.randn(n, 2, dtype=DT, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    expected = torch.zeros(n, 2, dtype=DT).index_add(
        0, dst, weight.view(-1, 1) * x_ref[src])
    grad = torch.randn(n, 2, dtype=DT)
    expected.backward(grad)

    adj, w = to_adj(edge_index.int(), weight, n, backend=backend)
    if backend == 'scatter':
        out = torch.zeros(n, 2, dtype=DT).index_add(
            0, adj[1], w.view(-1, 1) * x[adj[0]])
    else:
        out = sparse_matmul(adj, x, w)
    out.backward(grad)  # the transpose is sorted by such a key, too
    assert_close(out, expected)
    assert_close(x.grad, x_ref.grad)


def test_int32_edge_index_symmetric_check_on_many_nodes():
    n = 50_000
    edge_index = torch.tensor([[0, n - 1, 5, 7], [n - 1, 0, 7, 5]])
    adj, _ = to_adj(edge_index.int(), None, n, symmetric=True)
    x = torch.randn(n, 3)
    assert_close(adj.matmul(x)[[0, n - 1, 5, 7]], x[[n - 1, 0, 7, 5]])


@pytest.mark.parametrize('symmetric', [False, True])
def test_sparse_adj_caches_follow_value(symmetric):
    edge_index, weight, size = graph_of(symmetric)
    adj = SparseAdj.from_edge_index(edge_index, weight, size, symmetric)
    x = torch.randn(size[0], 3, dtype=DT, requires_grad=True)
    grad = torch.randn(size[1], 3, dtype=DT)

    def check():
        x.grad = None
        out = adj.matmul(x)
        out.backward(grad)
        dense = adj.to_dense()
        assert_close(out, dense @ x.detach())
        assert_close(x.grad, dense.t() @ grad)

    check()  # builds the CSR caches
    adj.value.mul_(2.)  # in place
    check()
    adj.value = adj.value * 3.  # reassigned
    check()
    adj.value[1:] = 0.  # in place, through a view
    check()

    # Reassigned between forward and backward: the backward pass belongs
    # to the matrix the forward pass multiplied with.
    x.grad = None
    dense = adj.to_dense()
    out = adj.matmul(x)
    adj.value = torch.rand_like(adj.value)
    out.backward(grad)
    assert_close(x.grad, dense.t() @ grad)

    # Values of another length were read out of bounds (an abort or a
    # segfault), or their tail was silently ignored.
    nnz = adj.nnz()
    kept = adj.value
    for wrong in (kept[:2], torch.cat([kept, kept])):
        adj.value = wrong
        with pytest.raises(ValueError, match=rf"'value' must have shape "
                           rf"\[{nnz}\], one per stored non-zero \(got "
                           rf"\[{wrong.numel()}\]\)"):
            adj.matmul(x)
        with pytest.raises(ValueError, match=r"'value' must have shape"):
            adj.csr_t(wrong)
    adj.value = kept
    with pytest.raises(ValueError, match=r"'value' must have shape"):
        adj.csr(kept[:2])


def test_sparse_adj_copies():
    import copy
    import io
    import pickle

    from torch_geometric.data import HeteroData
    edge_index, weight = random_graph()
    adj = SparseAdj.from_edge_index(edge_index, weight, (7, 5))
    x = torch.randn(7, 3, dtype=DT, requires_grad=True)
    expected = adj.matmul(x)
    expected.sum().backward()  # caches `torch.sparse_csr` tensors
    assert adj._csr is not None and adj._csr_t is not None
    data = HeteroData()
    data['n'].x = x.detach()
    data['n', 'e', 'n'].adj_t = adj

    copies = [
        data.clone(),
        copy.deepcopy(data),
        pickle.loads(pickle.dumps(data)),
    ]
    buffer = io.BytesIO()
    torch.save(data, buffer)
    buffer.seek(0)
    copies.append(torch.load(buffer, weights_only=False))
    for out in copies:
        copied = out['n', 'e', 'n'].adj_t
        assert isinstance(copied, SparseAdj) and copied is not adj
        assert copied.value.data_ptr() != adj.value.data_ptr()
        assert_close(copied.matmul(x), expected)
        copied.value.zero_()  # independent of the original
        assert_close(copied.matmul(x), torch.zeros_like(expected))
    assert_close(adj.matmul(x), expected)

    # Tensor semantics of the other methods `HeteroData.apply` calls (which
    # replaces the attributes of `data` itself):
    detached = data.detach()['n', 'e', 'n'].adj_t
    assert detached is not adj
    assert detached.value.data_ptr() == adj.value.data_ptr()
    adj = detached
    assert data.contiguous()['n', 'e', 'n'].adj_t is adj  # already is
    assert data.share_memory_()['n', 'e', 'n'].adj_t is adj
    assert adj.value.is_shared() and adj.rowptr.is_shared()
    assert_close(adj.matmul(x), expected)

    w = weight.clone().requires_grad_()
    adj = SparseAdj.from_edge_index(edge_index, w, (7, 5))
    cloned = adj.clone()  # differentiable, as `Tensor.clone`
    cloned.matmul(x.detach()).sum().backward()
    assert w.grad is not None
    assert not adj.detach().value.requires_grad
    assert adj.detach_() is adj and not adj.value.requires_grad
    assert adj.requires_grad_() is adj and adj.value.requires_grad


@pytest.mark.parametrize('rowptr,col,size,problem', [
    # An id out of range read out of bounds (a segfault for large ones).
    ([0, 1, 2], [0, 3], (2, 3), r'0 <= col_indices < ncols'),
    ([0, 3, 1, 3], [0, 1, 2], (3, 3), r'crow_indices\[\.\.\., 1:\] - '
     r'crow_indices\[\.\.\., :-1\]'),
    ([0, 1, 3], [0, -5, 1], (2, 3), r'0 <= col_indices < ncols'),
    ([0, 2, 3], [1, 0, 2], (2, 3), 'are sorted and distinct'),
    ([0, 2, 3], [1, 1, 2], (2, 3), 'are sorted and distinct'),
    ([1, 2, 3], [0, 1, 2], (2, 3), r'crow_indices\[\.\.\., 0\] == 0'),
    ([0, 2], [0, 1, 2], (1, 3), r"'col' \(3\) and 'value' \(4\) "
     r"differ"),
    ([0, 1, 3], [0, 1, 2], (3, 3), "'rowptr' has 3 entries but the matrix "
     "has 3 rows"),
])
def test_sparse_adj_refuses_invalid_csr_arrays(rowptr, col, size, problem):
    value = torch.ones(4 if 'value' in problem else len(col))
    with pytest.raises(ValueError, match=problem):
        SparseAdj(torch.tensor(rowptr), torch.tensor(col), value, size)
    if 'value' not in problem and 'entries' not in problem:
        with pytest.raises(ValueError, match='^invalid CSR arrays: '):
            SparseAdj(torch.tensor(rowptr), torch.tensor(col), value, size)


def test_sparse_adj_refuses_arrays_of_other_types():
    # int32 rowptr with int64 col passed, then failed inside torch.
    with pytest.raises(ValueError, match='must have the same dtype'):
        SparseAdj(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0]),
                  torch.ones(1), (1, 1))
    with pytest.raises(ValueError, match=r"'col' must be a 1-D int32 or "
                       r"int64 tensor \(got 1-D torch.float32\)"):
        SparseAdj(torch.tensor([0, 1]), torch.tensor([0.]), torch.ones(1),
                  (1, 1))
    with pytest.raises(ValueError, match=r"'value' must be a 1-D "
                       r"floating-point tensor \(got 1-D torch.int64\)"):
        SparseAdj(torch.tensor([0, 1]), torch.tensor([0]),
                  torch.tensor([1]), (1, 1))
    # A valid matrix from raw arrays multiplies as its dense form.
    adj = SparseAdj(torch.tensor([0, 2, 2, 3]), torch.tensor([0, 2, 1]),
                    torch.tensor([1., 2., 3.]), (3, 3))
    dense = torch.tensor([[1., 0., 2.], [0., 0., 0.], [0., 3., 0.]])
    x = torch.randn(3, 2)
    assert torch.allclose(adj.matmul(x), dense @ x)
    assert torch.allclose(adj.t().matmul(x), dense.t() @ x)


def test_empty_symmetric_matrix():
    # An empty matrix is symmetric; the check took the max of no values.
    adj, _ = to_adj(torch.zeros(2, 0, dtype=torch.long), None, 5,
                    symmetric=True)
    assert adj.nnz() == 0 and adj.symmetric
    assert torch.equal(adj.matmul(torch.ones(5, 2)), torch.zeros(5, 2))


def test_sparse_adj_row():
    edge_index, weight = random_graph()
    adj = SparseAdj.from_edge_index(edge_index.int(), weight, (7, 5))
    assert adj.row().dtype == torch.long
    row = adj.row()
    adj._row = None  # rebuilt from `rowptr`
    assert torch.equal(adj.row(), row)
    assert torch.equal(row, adj.to_dense().nonzero()[:, 0])
