r"""LightGCN and most-popular baselines, wired to the library's interface."""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn.models import LightGCN
from torch.nn import ModuleList

from pyg_mmrec.data.hetero import INTERACTS, split_edge_index
from pyg_mmrec.errors import check_config
from pyg_mmrec.graph import check_user_item_edges, sym_norm_bipartite
from pyg_mmrec.nn.conv import SymNormConv
from pyg_mmrec.nn.models.base import (
    Recommender,
    batch_embeddings,
    check_sizes,
)
from pyg_mmrec.nn.sparse import to_adj


@dataclass
class LightGCNConfig:
    r"""Hyper-parameters of :class:`LightGCNRecommender`."""
    embedding_dim: int = 64
    num_layers: int = 3
    reg_weight: float = 1e-4

    def __post_init__(self) -> None:
        check_config(self, at_least_one=('embedding_dim', ),
                     non_negative=('num_layers', 'reg_weight'))


class LightGCNRecommender(Recommender):
    r"""PyG's :class:`~torch_geometric.nn.models.LightGCN` on the user-item
    graph (users ``0..U-1``, items ``U..U+I-1``), trained with BPR and an
    :math:`L_2` penalty on the batch's layer-0 embeddings.

    The symmetric normalisation :math:`\mathbf{D}^{-1/2}\mathbf{A}
    \mathbf{D}^{-1/2}` is computed once in :meth:`prepare`, and the layers
    are the library's :class:`~pyg_mmrec.nn.conv.SymNormConv` (the same
    update as :class:`LGConv` with pre-normalised weights), whose fused
    kernel reuses the symmetric matrix in the backward pass instead of
    transposing it on every call.
    """
    def __init__(self, num_users: int, num_items: int,
                 config: Optional[LightGCNConfig] = None) -> None:
        super().__init__(num_users, num_items)
        # A fresh default each time: the model keeps its config.
        config = LightGCNConfig() if config is None else config
        self.config = config
        self.lightgcn = LightGCN(num_users + num_items, config.embedding_dim,
                                 config.num_layers)
        self.lightgcn.convs = ModuleList(
            [SymNormConv() for _ in range(config.num_layers)])

    def reset_parameters(self) -> None:
        self.lightgcn.reset_parameters()

    def prepare(self, data: HeteroData) -> HeteroData:
        check_sizes(self, data)
        # In the embeddings' dtype: float64 for a model made .double().
        index, weight = sym_norm_bipartite(
            split_edge_index(data, 'train'), self.num_users, self.num_items,
            add_self_loops=False, dtype=self.lightgcn.embedding.weight.dtype)
        adj_t, _ = to_adj(index, weight, self.num_users + self.num_items,
                          symmetric=True)
        data[INTERACTS].lightgcn_adj_t = adj_t
        return data

    def forward(self, data: HeteroData) -> Tuple[Tensor, Tensor]:
        out = self.lightgcn.get_embedding(data[INTERACTS].lightgcn_adj_t)
        return out[:self.num_users], out[self.num_users:]

    def loss(self, data: HeteroData, users: Tensor, pos_items: Tensor,
             neg_items: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        user_emb, item_emb = self(data)
        u, pos, neg = batch_embeddings(user_emb, item_emb, users, pos_items,
                                       neg_items)
        pos, neg = (u * pos).sum(-1), (u * neg).sum(-1)
        node_id = torch.cat([users, pos_items + self.num_users,
                             neg_items + self.num_users])
        loss = self.lightgcn.recommendation_loss(
            pos, neg, node_id=node_id, lambda_reg=self.config.reg_weight)
        return loss, {}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users}, '
                f'{self.num_items}, dim={self.config.embedding_dim}, '
                f'num_layers={self.config.num_layers})')


class MostPopular(Recommender):
    r"""Ranks items by their number of training interactions, the same for
    every user: the floor a personalised model has to beat."""
    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__(num_users, num_items)
        self.register_buffer('popularity', torch.zeros(num_items))

    def prepare(self, data: HeteroData) -> HeteroData:
        check_sizes(self, data)
        edge_index = split_edge_index(data, 'train')
        # An item id past the last one used to add rows to the popularity.
        check_user_item_edges(edge_index, self.num_users, self.num_items,
                              distinct=True)
        items = edge_index[1]
        self.popularity = torch.bincount(
            items, minlength=self.num_items).float().to(
                self.popularity.device)
        return data

    def forward(self, data: HeteroData) -> Tuple[Tensor, Tensor]:
        users = self.popularity.new_ones(self.num_users, 1)
        return users, self.popularity.view(-1, 1)
