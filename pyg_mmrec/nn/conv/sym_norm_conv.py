from typing import Union

from torch import Tensor
from torch_geometric.typing import Adj, OptTensor

from pyg_mmrec.nn.conv._utils import check_adj, check_features
from pyg_mmrec.nn.conv._weighted_sum import HomogeneousSumConv
from pyg_mmrec.nn.sparse import SparseAdj


class SymNormConv(HomogeneousSumConv):
    r"""One step of symmetric-normalised propagation on the homogeneous
    user-item graph (LightGCN without learnable weights, DiffMM's
    :math:`\mathbf{A}`):

    .. math::
        \mathbf{X}^{\prime} = \mathbf{A} \mathbf{X}, \qquad
        \mathbf{A} = \mathbf{D}^{-1/2} \bar{\mathbf{A}} \mathbf{D}^{-1/2},
        \quad \bar{\mathbf{A}} = \begin{bmatrix} \mathbf{0} & \mathbf{R} \\
        \mathbf{R}^{\top} & \mathbf{0} \end{bmatrix} + \mathbf{I},

    i.e. :math:`\mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i) \cup
    \{i\}} \frac{1}{\sqrt{\bar{d}_i \bar{d}_j}} \mathbf{x}_j` on the
    ``U + I`` nodes (users first, then items).

    The layer propagates with the edge weights it is given; the normalised
    weights are computed once, outside the training loop, by
    :class:`pyg_mmrec.transforms.SymmetricNorm` or
    :func:`pyg_mmrec.graph.sym_norm_bipartite` (followed by
    :func:`pyg_mmrec.nn.sparse.to_adj` for a sparse backend).
    On a plain :obj:`edge_index` it computes the same as
    :class:`torch_geometric.nn.conv.LGConv` with :obj:`normalize=False`.
    It is a class of its own rather than :class:`LGConv` because
    :class:`LGConv` neither takes the fused path for a weighted
    :class:`~torch_geometric.EdgeIndex` nor accepts the library's cached
    :class:`~pyg_mmrec.nn.sparse.SparseAdj`, whose transpose-free backward
    is what makes the default path fast; and its :obj:`normalize` option
    would re-normalise on every call, without the bipartite self-loops.

    Args:
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`. The update rule
            is a weighted sum from :obj:`edge_index[0]` to
            :obj:`edge_index[1]` on every path: :obj:`aggr` must be
            :obj:`"add"` and :obj:`flow` :obj:`"source_to_target"`.

    Shapes:
        - **input:**
          node features :math:`(U + I, F)`,
          adjacency: edge indices :math:`(2, |\mathcal{E}|)` with edge
          weights :math:`(|\mathcal{E}|)`, or a sparse
          :math:`\mathbf{A}^\top` (:class:`SparseAdj`,
          :class:`torch_sparse.SparseTensor`, :class:`torch.sparse` COO/CSR),
          or a column-sorted :class:`~torch_geometric.EdgeIndex` with edge
          weights
        - **output:** node features :math:`(U + I, F)`
    """
    def forward(self, x: Tensor, edge_index: Union[Adj, SparseAdj],
                edge_weight: OptTensor = None) -> Tensor:
        if isinstance(x, (tuple, list)):
            raise TypeError(f'{self.__class__.__name__} propagates on the '
                            f'one node set of U + I users and items: pass '
                            f'x = torch.cat([x_user, x_item]) (got a '
                            f'{type(x).__name__}; OneSidedNormConv takes '
                            f'(x_src, x_dst))')
        check_features(x)
        check_adj(edge_index, edge_weight, x.size(0), x.size(0), x.dtype)
        return self.weighted_sum(x, edge_index, edge_weight)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'
