r"""Bipartite graph functions against dense matrix math."""
import re

import pytest
import torch

from pyg_mmrec.graph import (
    csr_of,
    one_sided_norm,
    sym_norm_bipartite,
    to_homogeneous,
    unique_csr_rows,
)

U, I = 4, 5
# User 3 and item 4 are isolated (degree 0).
EDGES = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2],
                      [0, 1, 3, 1, 2, 0, 2, 3]])


def _dense(index, weight, n):
    out = torch.zeros(n, n, dtype=torch.float64)
    out.index_put_((index[0], index[1]), weight.double(), accumulate=True)
    return out


def _expected_sym(edge_weight, self_loops):
    R = torch.zeros(U, I, dtype=torch.float64)
    R[EDGES[0], EDGES[1]] = edge_weight
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[:U, U:] = R
    A[U:, :U] = R.t()
    if self_loops:
        A = A + torch.eye(U + I, dtype=torch.float64)
    deg = A.sum(1)
    d = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    return d.view(-1, 1) * A * d.view(1, -1)


@pytest.mark.parametrize('self_loops', [True, False])
@pytest.mark.parametrize('weighted', [False, True])
def test_sym_norm_bipartite_matches_dense(self_loops, weighted):
    weight = (torch.arange(1, EDGES.size(1) + 1, dtype=torch.float64) / 3
              if weighted else torch.ones(EDGES.size(1),
                                          dtype=torch.float64))
    index, value = sym_norm_bipartite(
        EDGES, U, I, edge_weight=weight.float() if weighted else None,
        add_self_loops=self_loops)
    assert value.dtype == torch.float32
    assert index.size(1) == 2 * EDGES.size(1) + (U + I if self_loops else 0)
    got = _dense(index, value, U + I)
    expected = _expected_sym(weight, self_loops)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got, got.t(), atol=1e-7)
    assert bool(torch.isfinite(value).all())  # isolated nodes give 0


def test_sym_norm_bipartite_dtype_and_layout():
    index, value = sym_norm_bipartite(EDGES, U, I, add_self_loops=False,
                                      dtype=torch.float64)
    assert value.dtype == torch.float64
    E = EDGES.size(1)
    # User-to-item edges first, then item-to-user, items offset by U.
    assert torch.equal(index[:, :E], torch.stack([EDGES[0], EDGES[1] + U]))
    assert torch.equal(index[:, E:], torch.stack([EDGES[1] + U, EDGES[0]]))
    assert torch.equal(to_homogeneous(EDGES, U), index)


def test_one_sided_norm_matches_dense():
    user_weight, item_weight = one_sided_norm(EDGES, U, I)
    R = torch.zeros(U, I, dtype=torch.float64)
    R[EDGES[0], EDGES[1]] = 1.0
    du, di = R.sum(1), R.sum(0)

    def inv(d):
        return torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))

    P = inv(du).view(-1, 1) * R            # D_u^-1/2 R
    Q = inv(di).view(-1, 1) * R.t()        # D_i^-1/2 R^T
    P_got = torch.zeros(U, I, dtype=torch.float64)
    P_got[EDGES[0], EDGES[1]] = user_weight.double()
    Q_got = torch.zeros(I, U, dtype=torch.float64)
    Q_got[EDGES[1], EDGES[0]] = item_weight.double()
    assert torch.allclose(P_got, P, atol=1e-6)
    assert torch.allclose(Q_got, Q, atol=1e-6)
    # And as operators: P @ X aggregates items into users.
    X = torch.randn(I, 3, dtype=torch.float64)
    assert torch.allclose(P_got @ X, P @ X, atol=1e-6)


def test_csr_of():
    edges = torch.tensor([[2, 0, 2, 1, 0], [4, 1, 0, 3, 2]])
    rowptr, col = csr_of(edges, 4)
    assert rowptr.tolist() == [0, 2, 3, 5, 5]
    assert col.tolist() == [1, 2, 3, 4, 0]  # stable within each row


@pytest.mark.parametrize('rows,message', [
    ([0, 4], 'row id 4 is outside 0..3'),
    ([-1, 2], 'row id -1 is outside 0..3'),
])
def test_csr_of_refuses_rows_out_of_range(rows, message):
    # The row pointer is built by a kernel that does not check its input
    # (an id past the end corrupted the heap); before that, bincount
    # silently grew the pointer past num_rows + 1.
    edges = torch.tensor([rows, [0, 1]])
    with pytest.raises(ValueError, match=re.escape(message)):
        csr_of(edges, 4)


def test_unique_csr_rows_matches_sets():
    # Few items, so that many rows repeat; repeated and reordered entries
    # within a row, and empty rows.
    gen = torch.Generator().manual_seed(0)
    num_rows = 60
    row = torch.randint(0, num_rows - 5, (150, ), generator=gen)
    col = torch.randint(0, 3, (150, ), generator=gen)
    rowptr, cols = csr_of(torch.stack([row, col]), num_rows)
    first, inverse = unique_csr_rows(rowptr, cols)
    entries = [cols[rowptr[r]:rowptr[r + 1]].tolist()
               for r in range(num_rows)]
    # Rows with the same column list up to order (repeats count: merging
    # them is not needed for correctness) share a group...
    key = [tuple(sorted(e)) for e in entries]
    expected_first = sorted({min(r for r in range(num_rows) if key[r] == k)
                             for k in set(key)})
    assert first.tolist() == expected_first
    # ... and every row maps to the first row with its key.
    for r in range(num_rows):
        assert key[first[inverse[r]]] == key[r]
    assert inverse[num_rows - 1] == inverse[num_rows - 2]  # empty rows


def test_unique_csr_rows_of_no_rows():
    first, inverse = unique_csr_rows(torch.zeros(1, dtype=torch.long),
                                     torch.zeros(0, dtype=torch.long))
    assert first.numel() == 0 and inverse.numel() == 0


def test_repeated_user_item_pairs_are_refused():
    # R is binary: a repeated edge counted twice in the degrees and sums
    # (0.667 instead of 0.5 for A[u0, i1] of this graph), with no notice.
    edges = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 1, 0, 2]])
    problem = re.escape("'edge_index' repeats 2 user-item pairs (first: "
                        "user 0, item 1); interactions are binary: remove "
                        "the duplicates first, e.g. with "
                        "torch_geometric.utils.coalesce")
    with pytest.raises(ValueError, match=problem):
        sym_norm_bipartite(edges, 2, 3)
    with pytest.raises(ValueError, match=problem):
        one_sided_norm(edges, 2, 3)
    # The same pairs once each are fine, in any order.
    sym_norm_bipartite(edges[:, [4, 1, 0]], 2, 3)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_weights_count_degrees_in_float32(dtype):
    # One user with 3000 items: float16 stops counting at 2048 and bfloat16
    # at 256, so degrees summed in the weights' dtype were wrong.
    num_items = 3000
    edges = torch.stack([torch.zeros(num_items, dtype=torch.long),
                         torch.arange(num_items)])
    _, weight = sym_norm_bipartite(edges, 1, num_items, dtype=dtype)
    expected = (1.0 / torch.tensor((num_items + 1) * 2.0).sqrt()).to(dtype)
    assert weight.dtype == dtype and torch.equal(weight[0], expected)
    user_weight, _ = one_sided_norm(edges, 1, num_items, dtype=dtype)
    assert torch.equal(user_weight[0],
                       torch.tensor(num_items ** -0.5).to(dtype))
