from typing import Union

import torch
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor

from pyg_mmrec.nn.conv._utils import check_adj, check_features
from pyg_mmrec.nn.conv._weighted_sum import HomogeneousSumConv
from pyg_mmrec.nn.sparse import SparseAdj


class ModalityAwareConv(HomogeneousSumConv):
    r"""DiffMM's modality-aware propagation: the signal :math:`\mathbf{s}_m`
    of one modality :math:`m`, mixing ID embeddings, projected item features
    and the diffusion-generated modality graph,

    .. math::
        \mathbf{s}_m &= \mathbf{A}
            \begin{bmatrix} \mathbf{E}_u \\ \mathbf{p}_m \end{bmatrix} \\
        \mathbf{s}_m &\leftarrow \mathbf{s}_m + \mathbf{A}
            \begin{bmatrix} \mathbf{s}_m^{(u)} \\ \mathbf{E}_i
            \end{bmatrix} \\
        \mathbf{s}_m &\leftarrow \mathbf{s}_m + \lambda_{adj} \,
            \mathbf{G}_m
            \begin{bmatrix} \mathbf{E}_u \\ \mathbf{E}_i \end{bmatrix}

    where :math:`\mathbf{s}_m^{(u)}` are the user rows of
    :math:`\mathbf{s}_m`, :math:`\mathbf{A}` the symmetric normalised
    user-item adjacency with self-loops, :math:`\mathbf{G}_m` the normalised
    generated graph of modality :math:`m` (both on ``U + I`` nodes, users
    first) and :math:`\mathbf{p}_m = \mathrm{norm}(f_m(\mathbf{F}_m))` the
    projected, L2-normalised item features (computed by the caller).

    Args:
        lambda_adj (float): Weight :math:`\lambda_{adj}` of the generated
            graph term. (default: :obj:`0.2`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`; as for
            :class:`SymNormConv`, :obj:`aggr` must be :obj:`"add"` and
            :obj:`flow` :obj:`"source_to_target"`.

    Shapes:
        - **input:**
          user embeddings :math:`(U, F)`, item embeddings :math:`(I, F)`,
          item features :math:`(I, F)`,
          :math:`\mathbf{A}` and :math:`\mathbf{G}_m` each as edge indices
          :math:`(2, |\mathcal{E}|)` plus edge weights or as a sparse
          adjacency (see :class:`SymNormConv`)
        - **output:** :math:`(U + I, F)`

    Each of the three products is one weighted sum, computed like
    :class:`SymNormConv`'s (scatter or fused path).
    """
    def __init__(self, lambda_adj: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lambda_adj = float(lambda_adj)

    def forward(
        self,
        user_emb: Tensor,
        item_emb: Tensor,
        item_feat: Tensor,
        edge_index: Union[Adj, SparseAdj],
        gen_edge_index: Union[Adj, SparseAdj],
        edge_weight: OptTensor = None,
        gen_edge_weight: OptTensor = None,
    ) -> Tensor:
        # Named: a PyG-style call (x, edge_index, ...) lands an adjacency
        # in one of them.
        check_features(user_emb, item_emb, item_feat,
                       names=('user_emb', 'item_emb', 'item_feat'))
        if item_feat.shape != item_emb.shape:
            raise ValueError(f"'item_feat' has shape {list(item_feat.shape)} "
                             f"but 'item_emb' has shape "
                             f"{list(item_emb.shape)}")
        if not user_emb.dtype == item_emb.dtype == item_feat.dtype:
            # The scatter path would promote to the widest, the fused ones
            # fail: refuse on every path.
            raise ValueError(f"'user_emb', 'item_emb' and 'item_feat' must "
                             f"share one dtype (got {user_emb.dtype}, "
                             f"{item_emb.dtype} and {item_feat.dtype})")
        if user_emb.size(1) != item_emb.size(1):
            raise ValueError(f"'user_emb' has {user_emb.size(1)} channels but "
                             f"'item_emb' has {item_emb.size(1)}")
        num_nodes = user_emb.size(0) + item_emb.size(0)
        dtype = user_emb.dtype
        check_adj(edge_index, edge_weight, num_nodes, num_nodes, dtype)
        check_adj(gen_edge_index, gen_edge_weight, num_nodes, num_nodes,
                  dtype)
        num_users = user_emb.size(0)

        s = self.weighted_sum(torch.cat([user_emb, item_feat]), edge_index,
                              edge_weight)
        s = s + self.weighted_sum(torch.cat([s[:num_users], item_emb]),
                                  edge_index, edge_weight)
        gen = self.weighted_sum(torch.cat([user_emb, item_emb]),
                                gen_edge_index, gen_edge_weight)
        return s + self.lambda_adj * gen

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(lambda_adj={self.lambda_adj})'
