r"""A deterministic synthetic multi-modal data set with planted structure."""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from pyg_mmrec.data.hetero import INTERACTS, ITEM, MODALITIES, USER
from pyg_mmrec.errors import ConfigError, check_config


@dataclass
class SyntheticConfig:
    r"""Sizes and noise levels of :func:`make_synthetic`.

    Args:
        num_users (int): Number of users.
        num_items (int): Number of items.
        num_factors (int): Dimension of the planted latent factors.
        mean_degree (float): Mean number of interactions per user.
        modalities (tuple): Item modalities to generate.
        feature_dim (int): Columns per modality.
        feature_noise (float): Standard deviation of the noise added to each
            modality's view of the item factors (the factors have unit
            variance), so larger values mean less informative features.
        temperature (float): Sharpness of the users' preferences.
        val_ratio (float): Share of each user's interactions held out for
            validation (likewise :obj:`test_ratio`).
        seed (int): Seed; the same seed gives the same data set.
    """
    num_users: int = 1500
    num_items: int = 800
    num_factors: int = 8
    mean_degree: float = 10.0
    modalities: Tuple[str, ...] = ('visual', 'acoustic', 'textual')
    feature_dim: int = 32
    feature_noise: float = 0.5
    temperature: float = 0.5
    val_ratio: float = 0.1
    test_ratio: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        check_config(self, at_least_one=('num_factors', 'feature_dim'),
                     positive=('temperature', ),
                     non_negative=('feature_noise', ))
        if self.num_users < 2 or self.num_items < 2:
            raise ConfigError('synthetic data needs at least 2 users and 2 '
                              'items')
        if not 3 <= self.mean_degree < self.num_items:
            raise ConfigError(
                f'synthetic mean_degree must lie in [3, num_items), got '
                f'{self.mean_degree}')
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ConfigError(
                f'synthetic modalities must be a non-empty subset of '
                f'{MODALITIES}, got {self.modalities}')
        repeated = [m for i, m in enumerate(self.modalities)
                    if m in self.modalities[:i]]
        if repeated:
            # A repeat would draw the modality's features twice, the second
            # overwriting the first.
            raise ConfigError(f'synthetic modalities list {repeated[0]!r} '
                              f'more than once: {self.modalities}')
        if not (0 < self.val_ratio and 0 < self.test_ratio
                and self.val_ratio + self.test_ratio < 0.7):
            raise ConfigError('synthetic val_ratio and test_ratio must be '
                              'positive and sum to less than 0.7')


def _sample_without_replacement(logits: Tensor, counts: Tensor,
                                generator: torch.Generator) -> Tensor:
    r"""Samples :obj:`counts[u]` distinct items per row with probability
    proportional to :obj:`softmax(logits[u])` (Gumbel top-k trick), as a
    ``[2, sum(counts)]`` edge index."""
    uniform = torch.rand(logits.shape, generator=generator)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-12)))
    order = torch.argsort(logits + gumbel, dim=1, descending=True)
    keep = torch.arange(logits.size(1)) < counts.view(-1, 1)
    users = torch.arange(logits.size(0)).view(-1, 1).expand_as(order)
    return torch.stack([users[keep], order[keep]])


def make_synthetic(config: Optional[SyntheticConfig] = None) -> HeteroData:
    r"""Generates a bipartite multi-modal data set in which users and items
    share latent factors, users pick items with probability
    :math:`\propto \exp(\langle \mathbf{u}, \mathbf{v}_i \rangle /
    (\sqrt{k}\, t) + b_i)` (:math:`k` latent factors, :math:`b_i` a
    popularity bias) and each item modality is a noisy
    random linear view of the item's factors. Because the features reveal the
    factors of items with few interactions, a model that uses them can beat
    an ID-only model.

    Each user's interactions are split at random into train, validation and
    test (every user keeps at least one training interaction, and held-out
    items always occur in training).
    """
    # A fresh default each time: one shared instance could be edited.
    config = SyntheticConfig() if config is None else config
    gen = torch.Generator().manual_seed(config.seed)
    num_users, num_items, k = (config.num_users, config.num_items,
                               config.num_factors)
    user_factors = torch.randn(num_users, k, generator=gen)
    item_factors = torch.randn(num_items, k, generator=gen)
    popularity = 0.5 * torch.randn(num_items, generator=gen)
    logits = (user_factors @ item_factors.t()) / (k**0.5 * config.temperature)
    logits = logits + popularity

    # Heavy-tailed user activity, as in real interaction logs.
    degree = torch.exp(0.6 * torch.randn(num_users, generator=gen))
    degree = (degree / degree.mean() * config.mean_degree).round().long()
    degree = degree.clamp(3, num_items // 2)
    edges = _sample_without_replacement(logits, degree, gen)

    # Per-user random split: position of each edge within its user's list.
    score = torch.rand(edges.size(1), generator=gen)
    order = torch.argsort(score)
    order = order[torch.argsort(edges[0, order], stable=True)]
    edges = edges[:, order]
    start = torch.cumsum(degree, 0) - degree
    rank = torch.arange(edges.size(1)) - start[edges[0]]
    deg = degree[edges[0]].float()
    # At least one held-out edge of each kind, at least one training edge.
    n_test = (deg * config.test_ratio).round().clamp(min=1)
    n_test = torch.minimum(n_test, deg - 2)
    n_val = (deg * config.val_ratio).round().clamp(min=1)
    n_val = torch.minimum(n_val, deg - 1 - n_test)
    split = torch.zeros_like(rank)  # 0 train, 1 val, 2 test
    split[rank < n_test + n_val] = 1
    split[rank < n_test] = 2

    # Held-out items must occur in training; move the rest back to train.
    train_items = torch.zeros(num_items, dtype=torch.bool)
    train_items[edges[1, split == 0]] = True
    split[~train_items[edges[1]]] = 0
    for code, name in ((1, 'validation'), (2, 'test')):
        if not (split == code).any():
            # Evaluation on an empty split would report 0.0 as a result.
            raise ConfigError(
                f'the synthetic data set has no {name} interactions with '
                f'{num_users} users and {num_items} items: use more of '
                f'either')

    data = HeteroData()
    data[USER].num_nodes = num_users
    data[ITEM].num_nodes = num_items
    for modality in config.modalities:
        view = torch.randn(k, config.feature_dim, generator=gen) / k**0.5
        noise = torch.randn(num_items, config.feature_dim, generator=gen)
        data[ITEM][modality] = item_factors @ view + \
            config.feature_noise * noise
    store = data[INTERACTS]
    for name, code in (('edge_index', 0), ('val_edge_index', 1),
                       ('test_edge_index', 2)):
        part = edges[:, split == code]
        key = part[0] * num_items + part[1]
        store[name] = part[:, torch.argsort(key)]
    return data
