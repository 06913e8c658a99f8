r"""Low-level functions on bipartite user-item graphs.

Users are nodes ``0..U-1`` and items ``U..U+I-1`` of the homogeneous graph
that the symmetric propagation runs on. These functions are pure and
vectorised; the transforms in :mod:`pyg_mmrec.transforms` and the layers in
:mod:`pyg_mmrec.nn` build on them.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.index import index2ptr
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import cumsum, degree


def check_edge_index_shape(edge_index: Tensor) -> None:
    r"""Raises :class:`ValueError` unless :obj:`edge_index` is ``[2, E]``
    (no device synchronisation: fit for every forward pass)."""
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"'edge_index' must have shape [2, E] (got "
                         f"{list(edge_index.shape)})")


def check_edge_index(edge_index: Tensor, num_src: int, num_dst: int,
                     edge_weight: Optional[Tensor] = None,
                     names: Tuple[str, str] = ('source', 'target'),
                     counts: Tuple[str, str] = ('source nodes',
                                                'target nodes')) -> None:
    r"""Raises :class:`ValueError` unless :obj:`edge_index` is an integer
    ``[2, E]`` tensor with ids in ``0..num_src-1`` (first row) and
    ``0..num_dst-1`` (second row) and :obj:`edge_weight` is ``[E]``.
    :obj:`names` and :obj:`counts` word the message (e.g. ``('user',
    'item')`` and ``('users', 'items')``)."""
    check_edge_index_shape(edge_index)
    if edge_index.dtype not in (torch.int32, torch.long):
        raise ValueError(f"'edge_index' must be an integer tensor (got "
                         f"{edge_index.dtype})")
    if edge_weight is not None and edge_weight.shape != (edge_index.size(1),):
        raise ValueError(f"'edge_weight' must have shape "
                         f"[{edge_index.size(1)}] (got "
                         f"{list(edge_weight.shape)})")
    if not edge_index.numel():
        return
    for row, num, name, count in zip(edge_index, (num_src, num_dst), names,
                                     counts):
        smallest, largest = (int(v) for v in torch.aminmax(row))
        if smallest < 0:
            raise ValueError(f"'edge_index' has negative {name} id "
                             f"{smallest}")
        if largest >= num:
            raise ValueError(f"'edge_index' has {name} id {largest} but "
                             f"there are only {num} {count}")


def check_user_item_edges(edge_index: Tensor, num_users: int,
                          num_items: int,
                          edge_weight: Optional[Tensor] = None,
                          distinct: bool = False) -> None:
    r""":func:`check_edge_index` of user-item edges (item ids from 0); with
    :obj:`distinct`, also refuses a user-item pair given twice: the
    interaction matrix :math:`\mathbf{R}` is binary, and a repeated edge
    would count twice in degrees and sums (``O(E log E)``)."""
    check_edge_index(edge_index, num_users, num_items, edge_weight,
                     names=('user', 'item'), counts=('users', 'items'))
    if not distinct:
        return
    repeated = repeated_pairs(edge_index, num_items)
    if repeated.size(1):
        raise ValueError(
            f"'edge_index' repeats {pairs_text(repeated)}; "
            f"interactions are binary: remove the duplicates first, e.g. "
            f"with torch_geometric.utils.coalesce")


def repeated_pairs(edge_index: Tensor, num_items: int) -> Tensor:
    r"""The user-item pairs :obj:`edge_index` holds more than once, as
    ``[2, R]`` sorted pairs, one per extra copy (``O(E log E)``)."""
    key = edge_index[0].long() * num_items + edge_index[1].long()
    return repeated_keys(key.sort()[0], num_items)


def repeated_keys(key: Tensor, num_items: int) -> Tensor:
    r""":func:`repeated_pairs` of user-item pairs given as their sorted
    ``[E]`` keys ``user * num_items + item`` (``O(E)``)."""
    repeated = key[1:][key[1:] == key[:-1]]
    return torch.stack([repeated // num_items, repeated % num_items])


def pairs_text(pairs: Tensor) -> str:
    r"""``'N user-item pairs (first: user u, item i)'`` for ``[2, N]``
    user-item pairs (e.g. of :func:`repeated_pairs`)."""
    count = pairs.size(1)
    user, item = (int(v) for v in pairs[:, 0])
    return (f"{count} user-item {'pair' if count == 1 else 'pairs'} "
            f"(first: user {user}, item {item})")


def to_homogeneous(edge_index: Tensor, num_users: int) -> Tensor:
    r"""Maps bipartite ``(user, item)`` edges to both directions of the
    homogeneous graph on ``U + I`` nodes (items offset by :obj:`num_users`).

    Returns:
        ``[2, 2E]``: first the user-to-item edges, then item-to-user.
    """
    user, item = edge_index[0], edge_index[1] + num_users
    return torch.stack([torch.cat([user, item]), torch.cat([item, user])])


def sym_norm_bipartite(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    edge_weight: Optional[Tensor] = None,
    add_self_loops: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tuple[Tensor, Tensor]:
    r"""The symmetrically normalised adjacency of the bipartite graph,
    :math:`\mathbf{A} = \mathbf{D}^{-1/2} \bar{\mathbf{A}}
    \mathbf{D}^{-1/2}` with
    :math:`\bar{\mathbf{A}} = [[0, \mathbf{R}], [\mathbf{R}^\top, 0]] +
    \mathbf{I}` (the identity only if :obj:`add_self_loops`), on ``U + I``
    nodes; degrees are taken from :math:`\bar{\mathbf{A}}`.

    Args:
        edge_index (Tensor): ``[2, E]`` distinct user-item edges (item ids
            from 0).
        num_users (int): Number of users ``U``.
        num_items (int): Number of items ``I``.
        edge_weight (Tensor, optional): ``[E]`` weights of :math:`\mathbf{R}`
            (default: all ones).
        add_self_loops (bool): Add the identity before normalising.
        dtype (torch.dtype): The dtype of the returned weights.

    Returns:
        ``(edge_index, edge_weight)`` of the homogeneous graph: ``2E`` edges
        (user to item, then item to user) followed by ``U + I`` self-loops if
        requested. The matrix is symmetric.
    """
    check_user_item_edges(edge_index, num_users, num_items, edge_weight,
                          distinct=True)
    # Degrees are summed in at least float32: half precision stops counting
    # at 2048 (bfloat16 at 256) and overflows past 65504.
    work = torch.promote_types(dtype, torch.float32)
    # PyG's GCN normalisation on the homogeneous graph is exactly this
    # matrix (its self-loops are appended after the 2E edges).
    if edge_weight is not None:
        edge_weight = torch.cat([edge_weight, edge_weight]).to(work)
    index, weight = gcn_norm(to_homogeneous(edge_index, num_users),
                             edge_weight, num_users + num_items,
                             add_self_loops=add_self_loops, dtype=work)
    return index, weight.to(dtype)


def one_sided_norm(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    dtype: torch.dtype = torch.float32,
) -> Tuple[Tensor, Tensor]:
    r"""Edge weights of MMSSL's one-sided normalised graphs
    :math:`\mathbf{P} = \mathbf{D}_u^{-1/2} \mathbf{R}` (users aggregate
    items) and :math:`\mathbf{Q} = \mathbf{D}_i^{-1/2} \mathbf{R}^\top` (items
    aggregate users).

    Args:
        edge_index (Tensor): ``[2, E]`` distinct user-item edges (item ids
            from 0).
        num_users (int): Number of users :math:`U`.
        num_items (int): Number of items :math:`I`.
        dtype (torch.dtype): Dtype of the weights.

    Returns:
        ``(user_weight, item_weight)``, both ``[E]`` and aligned with
        :obj:`edge_index`: ``P[u, i] = user_weight[e]`` and
        ``Q[i, u] = item_weight[e]`` for edge ``e = (u, i)``.
    """
    check_user_item_edges(edge_index, num_users, num_items, distinct=True)
    # In at least float32, as in sym_norm_bipartite.
    work = torch.promote_types(dtype, torch.float32)
    deg_user = degree(edge_index[0], num_users, dtype=work)
    deg_item = degree(edge_index[1], num_items, dtype=work)
    return (deg_user.pow(-0.5)[edge_index[0]].to(dtype),
            deg_item.pow(-0.5)[edge_index[1]].to(dtype))


def csr_of(edge_index: Tensor, num_rows: int) -> Tuple[Tensor, Tensor]:
    r"""``(rowptr, col)`` of edges sorted by row (stable on column order)."""
    perm = torch.argsort(edge_index[0], stable=True)
    row, col = edge_index[0, perm], edge_index[1, perm]
    return sorted_index2ptr(row, num_rows), col


def sorted_index2ptr(index: Tensor, size: int) -> Tensor:
    r"""PyG's :func:`~torch_geometric.index.index2ptr` of the sorted
    :obj:`index`, after checking that its ids lie in ``0..size-1``:
    :obj:`index2ptr` does not check and writes out of bounds on an id
    ``>= size`` (sorted ids make the check two reads)."""
    if index.numel() and (int(index[0]) < 0 or int(index[-1]) >= size):
        bad = int(index[0]) if int(index[0]) < 0 else int(index[-1])
        raise ValueError(f'row id {bad} is outside 0..{size - 1}')
    return index2ptr(index, size)


def unique_csr_rows(rowptr: Tensor, col: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The distinct rows of the CSR matrix ``(rowptr, col)`` with unit
    entries, as multisets of columns: the order of a row's entries does not
    matter, a repeated column does (it sums to an entry of 2).

    Returns:
        ``(first, inverse)``: the ``[R]`` ids of the first row with each
        distinct column set, ascending, and for every row the position in
        :obj:`first` of its column set, so that row ``r`` equals row
        ``first[inverse[r]]``.
    """
    num_rows = rowptr.numel() - 1
    device = rowptr.device
    if num_rows == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    degree = rowptr.diff()
    # Exact (no hashing): rows can only match rows of their own length, and
    # within one length the sorted column lists are compared as tuples.
    group = torch.empty(num_rows, dtype=torch.long, device=device)
    first_of_group = []
    for d in torch.unique(degree).tolist():
        rows = (degree == d).nonzero().view(-1)
        if d == 0:  # all empty rows are equal (unique() refuses 0 columns)
            inv = torch.zeros_like(rows)
        else:
            cols = col[rowptr[rows].view(-1, 1) +
                       torch.arange(d, device=device)].sort(dim=1).values
            inv = torch.unique(cols, dim=0, return_inverse=True)[1]
        first = torch.full((int(inv.max()) + 1, ), num_rows,
                           dtype=torch.long, device=device)
        first.scatter_reduce_(0, inv, rows, 'amin')
        group[rows] = first[inv]
        first_of_group.append(first)
    first = torch.cat(first_of_group).sort().values
    # group[r] is the id of row r's first row; number those ids 0..R-1.
    inverse = torch.searchsorted(first, group)
    return first, inverse


def csr_row_entries(rowptr: Tensor, col: Tensor, index: Tensor,
                    what: str = 'row') -> Tuple[Tensor, Tensor, Tensor]:
    r"""The entries of the rows :obj:`index` of the CSR matrix
    ``(rowptr, col)``, vectorised (no loop over rows). Raises
    :class:`ValueError` for an :obj:`index` that is not a 1-D integer tensor
    of rows, in words that call a row :obj:`what` (e.g. ``'user id'``).

    Returns:
        ``(ptr, row, col)``: the ``[B + 1]`` CSR row pointer of the gathered
        rows, and for each of their entries its position in :obj:`index`
        and its column.
    """
    if index.dim() != 1 or index.dtype not in (torch.int32, torch.long):
        raise ValueError(f"'index' must be a 1-D integer tensor of "
                         f"{what}s (got {index.dim()}-D {index.dtype})")
    num_rows = rowptr.numel() - 1
    # Checked, since a negative id would silently read another row from the
    # end of rowptr: the gathers use clamped ids, and the id range comes
    # back with the entry count, in the one transfer this function needs
    # anyway (it is called on every training and evaluation batch).
    safe = index.clamp(0, max(num_rows - 1, 0)) if num_rows else index[:0]
    start = rowptr[safe]
    count = rowptr[safe + 1] - start
    ptr = cumsum(count)
    if index.numel():
        total, smallest, largest = torch.stack(
            [ptr[-1].long(), *torch.aminmax(index.long())]).tolist()
        if smallest < 0 or largest >= num_rows:
            bad = smallest if smallest < 0 else largest
            raise ValueError(f"'index' holds {what} {bad}, outside the "
                             f"{num_rows} rows 0..{num_rows - 1} of "
                             f"'rowptr'")
    else:
        total = 0
    row = torch.repeat_interleave(
        torch.arange(index.numel(), device=rowptr.device), count,
        output_size=total)
    pos = start[row] + torch.arange(total, device=rowptr.device) - \
        ptr[:-1][row]
    return ptr, row, col[pos]
