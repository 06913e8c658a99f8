r"""The weighted sum shared by the propagation layers, and its step on the
homogeneous user-item graph."""
from typing import Union

from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor

from pyg_mmrec.nn.conv._utils import (
    check_weighted_sum,
    fused_sparse_adj,
    int64_index,
    sized_edge_index,
)
from pyg_mmrec.nn.sparse import SparseAdj, sparse_matmul


class WeightedSumConv(MessagePassing):
    r"""Base of the layers whose every propagation is a weighted sum
    :math:`\mathbf{x}^{\prime}_i = \sum_j w_{ji} \mathbf{x}_j`: the option
    checks and :meth:`message`. It has no :meth:`forward`, so that each
    layer keeps the signature of its own update rule.

    :obj:`aggr` must be :obj:`"add"` and :obj:`flow`
    :obj:`"source_to_target"`: the fused paths always sum from
    :obj:`edge_index[0]` to :obj:`edge_index[1]`.
    """
    SUPPORTS_FUSED_EDGE_INDEX = True

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault('aggr', 'add')
        check_weighted_sum(self.__class__.__name__, kwargs)
        super().__init__(**kwargs)

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j


class HomogeneousSumConv(WeightedSumConv):
    r"""A :class:`WeightedSumConv` on one node set (the ``U + I`` users and
    items): :meth:`weighted_sum` is one step :math:`\mathbf{A}
    \mathbf{x}`, on the scatter path for a plain :obj:`edge_index` and the
    fused SpMM path for a sparse adjacency."""
    def weighted_sum(self, x: Tensor, edge_index: Union[Adj, SparseAdj],
                     edge_weight: OptTensor = None) -> Tensor:
        r"""One step :math:`\mathbf{A} \mathbf{x}` (the caller checks the
        adjacency against :obj:`x`)."""
        if isinstance(edge_index, SparseAdj):
            return fused_sparse_adj(self, edge_index, x)
        edge_index = sized_edge_index(int64_index(edge_index), x.size(0),
                                      x.size(0))
        # propagate_type: (x: Tensor, edge_weight: OptTensor)
        return self.propagate(edge_index, x=x, edge_weight=edge_weight)

    def message_and_aggregate(self, edge_index: Union[Adj, SparseAdj],
                              x: Tensor, edge_weight: OptTensor) -> Tensor:
        return sparse_matmul(edge_index, x, edge_weight)
