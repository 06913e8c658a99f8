from typing import Optional, Tuple, Union

from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.typing import Adj, OptPairTensor, OptTensor
from torch_geometric.utils import is_torch_sparse_tensor

from pyg_mmrec.nn.conv._utils import (
    check_adj,
    check_features,
    check_size,
    fused_sparse_adj,
    int64_index,
    sized_edge_index,
)
from pyg_mmrec.nn.conv._weighted_sum import WeightedSumConv
from pyg_mmrec.nn.sparse import SparseAdj, sparse_matmul


class OneSidedNormConv(WeightedSumConv):
    r"""Bipartite propagation with one-sided normalisation (MMSSL's
    :math:`\mathbf{P}` and :math:`\mathbf{Q}`): each target node sums its
    neighbours' features scaled by the inverse square root of its *own*
    degree,

    .. math::
        \mathbf{x}^{\prime}_i = \frac{1}{\sqrt{d_i}}
        \sum_{j \in \mathcal{N}(i)} e_{j,i} \, \mathbf{x}_j ,

    so that users aggregating items compute
    :math:`\mathbf{P}\mathbf{X}_{item}` with
    :math:`\mathbf{P} = \mathbf{D}_u^{-1/2} \mathbf{R}`, and items aggregating
    users compute :math:`\mathbf{Q}\mathbf{X}_{user}` with
    :math:`\mathbf{Q} = \mathbf{D}_i^{-1/2} \mathbf{R}^\top`.

    The weights :math:`d_i^{-1/2} e_{j,i}` are passed in as
    :obj:`edge_weight` (or stored in the sparse adjacency); they are
    computed once by :class:`pyg_mmrec.transforms.OneSidedNorm` or
    :func:`pyg_mmrec.graph.one_sided_norm`. Messages flow from
    :obj:`edge_index[0]` (sources, e.g. items for :math:`\mathbf{P}`) to
    :obj:`edge_index[1]` (targets, e.g. users); a sparse adjacency is the
    ``num_dst x num_src`` matrix (:math:`\mathbf{P}` itself for users).

    Args:
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`. The update rule
            is a weighted sum from :obj:`edge_index[0]` to
            :obj:`edge_index[1]` on every path: :obj:`aggr` must be
            :obj:`"add"` and :obj:`flow` :obj:`"source_to_target"`.

    Shapes:
        - **input:**
          source features :math:`(|\mathcal{V}_s|, F)` or a tuple
          :math:`((|\mathcal{V}_s|, F), (|\mathcal{V}_t|, *))` whose target
          part only fixes the number of targets (it may be :obj:`None`),
          edge indices :math:`(2, |\mathcal{E}|)` with edge weights
          :math:`(|\mathcal{E}|)`, or a sparse ``num_dst x num_src``
          adjacency, or a column-sorted :class:`~torch_geometric.EdgeIndex`
          with edge weights
        - **output:** target features :math:`(|\mathcal{V}_t|, F)`
    """
    def forward(
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Union[Adj, SparseAdj],
        edge_weight: OptTensor = None,
        size: Optional[Tuple[int, int]] = None,
    ) -> Tensor:
        if isinstance(x, Tensor):
            # A single tensor means "sources only"; the number of targets
            # then comes from the adjacency or `size` (never from `x`,
            # since users and items differ in number).
            x = (x, None)
        if ((size is None or size[1] is None) and x[1] is None
                and isinstance(edge_index, Tensor)
                and not _is_sized(edge_index)):
            raise ValueError("the number of target nodes is unknown: pass "
                             "'x' as (x_src, x_dst) or give it as 'size[1]'")
        check_features(*x)
        num_src = x[0].size(0)
        num_dst = None if x[1] is None else x[1].size(0)
        # `propagate` ignores `size` for sparse layouts and `EdgeIndex`, and
        # the target features too for an `EdgeIndex`: check `size` against
        # the adjacency, and give an `EdgeIndex` the sizes it lacks, so that
        # targets without edges keep their (zero) rows.
        check_size(edge_index, size)
        edge_index = sized_edge_index(
            int64_index(edge_index),
            num_src if size is None or size[0] is None else size[0],
            num_dst if size is None or size[1] is None else size[1],
        )
        check_adj(edge_index, edge_weight, num_src, num_dst, x[0].dtype)
        if isinstance(edge_index, SparseAdj):
            return fused_sparse_adj(self, edge_index, x, size)
        try:
            # propagate_type: (x: OptPairTensor, edge_weight: OptTensor)
            return self.propagate(edge_index, x=x, edge_weight=edge_weight,
                                  size=size)
        except (IndexError, ValueError) as e:
            # Ids are not checked up front (that would synchronise with the
            # device on every call). PyG's eager CPU checks catch an id
            # beyond the sources or targets, but do not say the likely
            # cause. (Compiled or on CUDA, torch reports it instead.)
            text = str(e)
            if ("Found indices in 'edge_index'" not in text
                    and "invalid 'dim_size'" not in text):
                raise
            given = ("'x' given as (x_src, x_dst)" if size is None
                     and x[1] is not None else "'x' and 'size' given")
            raise type(e)(
                f"'edge_index' holds ids beyond the source or target nodes: "
                f"are {given} in the order of the rows of 'edge_index' "
                f"(source, target)? ({text})") from None

    def message_and_aggregate(self, edge_index: Union[Adj, SparseAdj],
                              x: OptPairTensor,
                              edge_weight: OptTensor) -> Tensor:
        return sparse_matmul(edge_index, x[0], edge_weight)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'


def _is_sized(edge_index: Tensor) -> bool:
    r"""Whether a tensor adjacency knows its number of targets itself
    (sparse layouts do; an :class:`EdgeIndex` does if it has a size)."""
    if isinstance(edge_index, EdgeIndex):
        return edge_index.num_cols is not None
    return is_torch_sparse_tensor(edge_index)
