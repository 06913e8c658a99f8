r"""Low-level functions on bipartite user-item graphs.

Users are nodes ``0..U-1`` and items ``U..U+I-1`` of the homogeneous graph
that the symmetric propagation runs on. These functions are pure and
vectorised; the transforms in :mod:`pyg_mmrec.transforms` and the layers in
:mod:`pyg_mmrec.nn` build on them.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.utils import scatter


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
        edge_index (Tensor): ``[2, E]`` user-item edges (item ids from 0).
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
    num_nodes = num_users + num_items
    full_index = to_homogeneous(edge_index, num_users)
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), dtype=dtype,
                                 device=edge_index.device)
    weight = torch.cat([edge_weight, edge_weight]).to(dtype)
    if add_self_loops:
        loop = torch.arange(num_nodes, device=edge_index.device)
        full_index = torch.cat([full_index, loop.repeat(2, 1)], dim=1)
        weight = torch.cat([weight, weight.new_ones(num_nodes)])
    deg = scatter(weight, full_index[0], dim=0, dim_size=num_nodes,
                  reduce='sum')
    deg_inv_sqrt = deg.pow(-0.5)
    deg_inv_sqrt.masked_fill_(deg_inv_sqrt == float('inf'), 0.)
    weight = deg_inv_sqrt[full_index[0]] * weight * deg_inv_sqrt[full_index[1]]
    return full_index, weight


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
        edge_index (Tensor): ``[2, E]`` user-item edges (item ids from 0).
        num_users (int): Number of users :math:`U`.
        num_items (int): Number of items :math:`I`.
        dtype (torch.dtype): Dtype of the weights.

    Returns:
        ``(user_weight, item_weight)``, both ``[E]`` and aligned with
        :obj:`edge_index`: ``P[u, i] = user_weight[e]`` and
        ``Q[i, u] = item_weight[e]`` for edge ``e = (u, i)``.
    """
    ones = torch.ones(edge_index.size(1), dtype=dtype,
                      device=edge_index.device)
    deg_user = scatter(ones, edge_index[0], dim=0, dim_size=num_users)
    deg_item = scatter(ones, edge_index[1], dim=0, dim_size=num_items)
    return (deg_user.pow(-0.5)[edge_index[0]],
            deg_item.pow(-0.5)[edge_index[1]])


def csr_of(edge_index: Tensor, num_rows: int) -> Tuple[Tensor, Tensor]:
    r"""``(rowptr, col)`` of edges sorted by row (stable on column order)."""
    perm = torch.argsort(edge_index[0], stable=True)
    row, col = edge_index[0, perm], edge_index[1, perm]
    counts = torch.bincount(row, minlength=num_rows)
    rowptr = torch.zeros(num_rows + 1, dtype=torch.long,
                         device=edge_index.device)
    torch.cumsum(counts, 0, out=rowptr[1:])
    return rowptr, col


def csr_row_entries(rowptr: Tensor, col: Tensor,
                    index: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The entries of the rows :obj:`index` of the CSR matrix
    ``(rowptr, col)``, vectorised (no loop over rows).

    Returns:
        ``(ptr, row, col)``: the ``[B + 1]`` CSR row pointer of the gathered
        rows, and for each of their entries its position in :obj:`index`
        and its column.
    """
    start = rowptr[index]
    count = rowptr[index + 1] - start
    ptr = torch.zeros(index.numel() + 1, dtype=torch.long,
                      device=rowptr.device)
    torch.cumsum(count, 0, out=ptr[1:])
    total = int(ptr[-1])
    row = torch.repeat_interleave(
        torch.arange(index.numel(), device=rowptr.device), count,
        output_size=total)
    pos = start[row] + torch.arange(total, device=rowptr.device) - \
        ptr[:-1][row]
    return ptr, row, col[pos]
