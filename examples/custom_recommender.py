r"""Compose a new recommender from pyg_mmrec's public pieces.

Neither DiffMM nor MMSSL: LightGCN propagation of the ID embeddings on the
normalised user-item graph (a transform), plus one propagated view per item
modality (users' IDs with projected item features), the views fused by
MMSSL's cross-modal attention. Trained with BPR by the library's loop.

    python examples/custom_recommender.py --epochs 20
"""
import json
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_mmrec.data import (INTERACTS, BPRSampler, item_modalities,
                            make_synthetic)
from pyg_mmrec.errors import OneLineArgumentParser, exit_on_input_error
from pyg_mmrec.evaluation import RankingEvaluator
from pyg_mmrec.nn import (CrossModalAttention, ModalityProjection,
                          SymNormConv, bpr_loss, to_adj)
from pyg_mmrec.nn.models import Recommender, batch_embeddings
from pyg_mmrec.train import TrainConfig, fit, resolve_device
from pyg_mmrec.transforms import SymmetricNorm


class FusedLightGCN(Recommender):
    def __init__(self, num_users: int, num_items: int,
                 feature_channels: Dict[str, int], dim: int = 64,
                 num_layers: int = 2, reg_weight: float = 1e-4) -> None:
        super().__init__(num_users, num_items)
        self.embedding = torch.nn.Embedding(num_users + num_items, dim)
        torch.nn.init.xavier_uniform_(self.embedding.weight)
        self.projection = ModalityProjection(feature_channels, dim)
        self.fusion = CrossModalAttention(dim, heads=4)
        self.conv = SymNormConv()
        self.num_layers, self.reg_weight = num_layers, reg_weight

    def prepare(self, data):
        data = SymmetricNorm()(data)  # A with self-loops, on U + I nodes
        store = data[INTERACTS]
        store.adj, _ = to_adj(store.adj_edge_index, store.adj_edge_weight,
                              self.num_users + self.num_items, symmetric=True)
        return data

    def propagate(self, x: Tensor, adj) -> Tensor:
        layers = [x]  # LightGCN: mean of the layer outputs
        for _ in range(self.num_layers):
            layers.append(self.conv(layers[-1], adj))
        return torch.stack(layers).mean(dim=0)

    def forward(self, data) -> Tuple[Tensor, Tensor]:
        adj, ids = data[INTERACTS].adj, self.embedding.weight
        users = ids[:self.num_users]
        features = {m: data['item'][m] for m in self.projection.modalities}
        views = [
            self.propagate(torch.cat([users, F.normalize(p, dim=1)]), adj)
            for p in self.projection(features).values()
        ]
        out = self.propagate(ids, adj) + self.fusion(views)
        return out[:self.num_users], out[self.num_users:]

    def loss(self, data, users, pos_items, neg_items):
        user, item = self(data)
        u, pos, neg = batch_embeddings(user, item, users, pos_items,
                                       neg_items)
        bpr = bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))
        ego = self.embedding(torch.cat([users, self.num_users + pos_items]))
        reg = self.reg_weight * ego.pow(2).sum() / users.numel()
        return bpr + reg, {'bpr': bpr.item()}


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=20, help='epochs')
    args = parser.parse_args()
    config = TrainConfig(epochs=args.epochs, batch_size=512)  # checked
    device = resolve_device(config.device)  # 'auto': CUDA if there is one

    data = make_synthetic()
    torch.manual_seed(0)
    channels = {m: data['item'][m].size(1) for m in item_modalities(data)}
    model = FusedLightGCN(data['user'].num_nodes, data['item'].num_nodes,
                          channels).to(device)
    data = model.prepare(data.to(device))
    sampler = BPRSampler(data[INTERACTS].edge_index, model.num_users,
                         model.num_items, config.batch_size)
    state = fit(model, data, sampler, model.configure_optimizer(config.lr),
                RankingEvaluator(data), config)
    print(json.dumps({'best_epoch': state.best_epoch,
                      'test': state.best_test}, indent=2))


if __name__ == '__main__':
    with exit_on_input_error('custom_recommender.py'):
        main()
