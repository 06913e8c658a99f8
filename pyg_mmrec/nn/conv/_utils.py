r"""Input checks and dispatch shared by the propagation layers."""
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor

from pyg_mmrec.graph import check_edge_index_shape
from pyg_mmrec.nn.sparse import SparseAdj, adj_size, check_fused_size

AdjLike = Union[Adj, SparseAdj]


def check_features(*xs: Optional[Tensor],
                   names: Tuple[str, ...] = ()) -> None:
    r"""Raises unless every given node feature matrix is a 2-D
    floating-point tensor (the scatter path would fail inside PyG
    otherwise, or an adjacency passed in its place would be reported as a
    dtype mismatch). :obj:`names` name the arguments in the message."""
    for i, x in enumerate(xs):
        if x is None:
            continue
        what = f"'{names[i]}'" if i < len(names) else 'node features'
        if not isinstance(x, Tensor):
            raise TypeError(f'expected {what} as a tensor [N, F] (got '
                            f'{type(x).__name__})')
        if x.dim() != 2:
            raise ValueError(f'expected 2-D {what} [N, F] (got '
                             f'{x.dim()}-D)')
        if not x.is_floating_point():
            raise ValueError(f'expected floating-point {what} (got '
                             f'{x.dtype})')


def int64_index(edge_index: AdjLike) -> AdjLike:
    r"""An int32 :obj:`edge_index` (a plain tensor or an
    :class:`~torch_geometric.EdgeIndex`) as int64; other adjacencies as
    they are.

    The scatter path's backward gathers with the expanded target index,
    and PyTorch's CPU :obj:`gather` returns wrong values for an expanded
    int32 index (seen in torch 2.13), so gradients would be silently
    wrong.
    """
    if (isinstance(edge_index, Tensor) and edge_index.layout == torch.strided
            and edge_index.dtype == torch.int32):
        return edge_index.long()
    return edge_index


def check_weighted_sum(name: str, kwargs: Dict[str, Any]) -> None:
    r"""Refuses :class:`MessagePassing` options that would change what a
    weighted-sum layer computes.

    The fused paths (:obj:`message_and_aggregate`, :func:`fused_sparse_adj`)
    always compute the source-to-target sum
    :math:`\mathbf{A}^{\top} \mathbf{X}`, whereas :obj:`propagate`'s
    scatter path would honour :obj:`aggr` and :obj:`flow`: accepting other
    values would make the result depend on the adjacency type.
    """
    aggr = kwargs.get('aggr', 'add')
    if not isinstance(aggr, str) or aggr not in ('add', 'sum'):
        raise ValueError(f"{name} aggregates by weighted sum: aggr must be "
                         f"'add', got {aggr!r}")
    flow = kwargs.get('flow', 'source_to_target')
    if flow != 'source_to_target':
        raise ValueError(f"{name} propagates from edge_index[0] to "
                         f"edge_index[1]: flow must be 'source_to_target', "
                         f"got {flow!r}")


def check_adj(edge_index: AdjLike, edge_weight: OptTensor, num_src: int,
              num_dst: Optional[int] = None,
              dtype: Optional[torch.dtype] = None) -> None:
    r"""Rejects features that do not fit a sized adjacency (before any
    kernel sees them), an :obj:`edge_weight` that would be ignored or
    misaligned, and weights whose dtype differs from the features'
    :obj:`dtype` (the scatter path would promote the result, the sparse
    kernels fail with backend-specific errors)."""
    if isinstance(edge_index, Tensor) and not is_torch_sparse_tensor(
            edge_index):
        check_edge_index_shape(edge_index)
    check_fused_size(edge_index, num_src, num_dst)
    weight_dtype = _weight_dtype(edge_index, edge_weight)
    if dtype is not None and weight_dtype not in (None, dtype):
        raise ValueError(f"dtype mismatch: adjacency is {weight_dtype} but "
                         f"features are {dtype}")
    if edge_weight is None:
        return
    if (isinstance(edge_index, (SparseAdj, SparseTensor))
            or is_torch_sparse_tensor(edge_index)):
        raise ValueError(f"'edge_weight' must be None with a sparse "
                         f"adjacency ('{type(edge_index).__name__}'): store "
                         f"the weights in the adjacency itself")
    if edge_weight.dim() != 1 or edge_weight.numel() != edge_index.size(1):
        raise ValueError(f"'edge_weight' has shape "
                         f"{list(edge_weight.shape)} but 'edge_index' has "
                         f"{edge_index.size(1)} edges")


def _weight_dtype(edge_index: AdjLike,
                  edge_weight: OptTensor) -> Optional[torch.dtype]:
    if edge_weight is not None:
        return edge_weight.dtype
    if isinstance(edge_index, SparseAdj) or is_torch_sparse_tensor(
            edge_index):
        return edge_index.dtype
    if isinstance(edge_index, SparseTensor) and edge_index.has_value():
        return edge_index.dtype()
    return None


def _needs_propagate(conv: MessagePassing) -> bool:
    r"""Whether :obj:`conv` is being explained or has :obj:`propagate` or
    :obj:`message_and_aggregate` hooks, which only
    :meth:`MessagePassing.propagate` honours."""
    return bool(conv.explain or conv._propagate_forward_pre_hooks
                or conv._propagate_forward_hooks
                or conv._message_and_aggregate_forward_pre_hooks
                or conv._message_and_aggregate_forward_hooks)


def fused_sparse_adj(
    conv: MessagePassing,
    adj_t: SparseAdj,
    x: Union[Tensor, Tuple[Tensor, Optional[Tensor]]],
    size: Optional[Tuple[int, int]] = None,
) -> Tensor:
    r"""The fused step for a :class:`~pyg_mmrec.nn.sparse.SparseAdj`.

    A :class:`SparseAdj` goes straight to :obj:`conv.message_and_aggregate`
    rather than through :obj:`conv.propagate`: :obj:`propagate` only admits
    tensors and :class:`SparseTensor` as adjacency. The size checks that
    :obj:`propagate` would do are done here.

    Explanations (edge masks) and :obj:`propagate` /
    :obj:`message_and_aggregate` hooks need :obj:`propagate`: while any is
    in use, the adjacency goes through it as the column-sorted
    :class:`~torch_geometric.EdgeIndex` of
    :meth:`~pyg_mmrec.nn.sparse.SparseAdj.to_edge_index`, i.e. the path of
    the ``'edge_index'`` backend. Edge :math:`k` of an edge mask is then
    the :math:`k`-th stored non-zero (duplicate edges summed, sorted by
    target, then source). (PyG's :class:`~torch_geometric.explain.Explainer`
    itself needs a tensor :obj:`edge_index`: see :class:`SparseAdj`.)
    """
    if isinstance(x, Tensor):
        check_fused_size(adj_t, x.size(0))
    else:
        x_dst = x[1]
        check_fused_size(adj_t, x[0].size(0),
                         None if x_dst is None else x_dst.size(0))
    check_size(adj_t, size)
    if _needs_propagate(conv):
        edge_mask = conv._edge_mask if conv.explain else None
        if edge_mask is not None and edge_mask.numel() != adj_t.nnz():
            raise ValueError(f"the edge mask has {edge_mask.numel()} "
                             f"entries but the adjacency stores "
                             f"{adj_t.nnz()} edges (duplicates summed): "
                             f"mask the edges of 'SparseAdj.to_edge_index()'"
                             f" instead")
        edge_index, edge_weight = adj_t.to_edge_index()
        return conv.propagate(edge_index, x=x, edge_weight=edge_weight,
                              size=size)
    return conv.message_and_aggregate(adj_t, x, None)


def check_size(edge_index: AdjLike,
               size: Optional[Tuple[int, int]]) -> None:
    r"""Raises :class:`ValueError` if :obj:`size` contradicts the sizes an
    adjacency knows itself. :obj:`propagate` ignores :obj:`size` for sparse
    layouts and :class:`EdgeIndex`, so a contradiction would otherwise go
    unnoticed."""
    if size is None:
        return
    src, dst = adj_size(edge_index)
    if ((src is not None and size[0] is not None and src != size[0])
            or (dst is not None and size[1] is not None
                and dst != size[1])):
        raise ValueError(f"'size' {tuple(size)} does not match the "
                         f"adjacency (num_src, num_dst) = {(src, dst)}")


def sized_edge_index(edge_index: AdjLike, num_src: Optional[int],
                     num_dst: Optional[int]) -> AdjLike:
    r"""Fills in the sparse sizes an :class:`EdgeIndex` lacks from the
    features (and :obj:`size`); any other adjacency is returned as is.

    :obj:`propagate` and :meth:`EdgeIndex.matmul` take the number of nodes
    of an :class:`EdgeIndex` from the :class:`EdgeIndex` alone, ignoring
    :obj:`size` and the target features, and infer a missing one from the
    largest index: trailing nodes without edges would be dropped from the
    output (or fail to match the features). Sizes it has are kept (and
    checked against the features by :func:`check_adj`).
    """
    if not isinstance(edge_index, EdgeIndex):
        return edge_index
    num_rows, num_cols = edge_index.sparse_size()
    if ((num_rows is not None or num_src is None)
            and (num_cols is not None or num_dst is None)):
        return edge_index
    sized = EdgeIndex(
        edge_index.as_tensor(),
        sparse_size=(num_src if num_rows is None else num_rows,
                     num_dst if num_cols is None else num_cols),
        sort_order=edge_index.sort_order,
        is_undirected=edge_index.is_undirected,
    )
    try:
        # Sizes taken from the features, not from the ids: an id beyond
        # them (e.g. swapped source and target features) would make the
        # fused product read and write out of bounds. (An O(E) check with
        # a synchronisation, for an EdgeIndex made without sizes only.)
        return sized.validate()
    except ValueError as e:
        raise ValueError(f"the EdgeIndex has no sizes, and its ids do not "
                         f"fit those of the features ({num_src} source and "
                         f"{num_dst} target nodes): {e}") from None
