r"""Input checks and dispatch shared by the propagation layers."""
from typing import Optional, Tuple, Union

from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor

from pyg_mmrec.nn.sparse import SparseAdj, check_fused_size

AdjLike = Union[Adj, SparseAdj]


def check_adj(edge_index: AdjLike, edge_weight: OptTensor, num_src: int,
              num_dst: Optional[int] = None) -> None:
    r"""Rejects features that do not fit a sized adjacency (before any
    kernel sees them) and an :obj:`edge_weight` that would be ignored or
    misaligned."""
    check_fused_size(edge_index, num_src, num_dst)
    if edge_weight is None:
        return
    if (isinstance(edge_index, (SparseAdj, SparseTensor))
            or is_torch_sparse_tensor(edge_index)):
        raise ValueError(f"'edge_weight' must be None when the adjacency "
                         f"stores its own weights (got "
                         f"'{type(edge_index).__name__}')")
    if edge_weight.dim() != 1 or edge_weight.numel() != edge_index.size(1):
        raise ValueError(f"'edge_weight' has shape "
                         f"{list(edge_weight.shape)} but 'edge_index' has "
                         f"{edge_index.size(1)} edges")


def fused_sparse_adj(
    conv: MessagePassing,
    adj_t: SparseAdj,
    x: Union[Tensor, Tuple[Tensor, Optional[Tensor]]],
    size: Optional[Tuple[int, int]] = None,
) -> Tensor:
    r"""The fused step for a :class:`~pyg_mmrec.nn.sparse.SparseAdj`.

    A :class:`SparseAdj` goes straight to :obj:`conv.message_and_aggregate`
    rather than through :obj:`conv.propagate`: :obj:`propagate` only admits
    tensors and :class:`SparseTensor` as adjacency, and has nothing to add
    for an adjacency that is always fused. The size checks that
    :obj:`propagate` would do are done here.
    """
    if isinstance(x, Tensor):
        check_fused_size(adj_t, x.size(0))
    else:
        x_dst = x[1]
        check_fused_size(adj_t, x[0].size(0),
                         None if x_dst is None else x_dst.size(0))
    if size is not None and tuple(size) != adj_t.size()[::-1]:
        raise ValueError(f"'size' {tuple(size)} does not match the "
                         f"adjacency (num_src, num_dst) = "
                         f"{adj_t.size()[::-1]}")
    return conv.message_and_aggregate(adj_t, x, None)
