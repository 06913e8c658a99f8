r"""Vectorised BPR triple sampling."""
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from pyg_mmrec.graph import check_user_item_edges


def check_negatives(users: np.ndarray, num_items: int,
                    error: Callable[[int, int], Exception]) -> None:
    r"""Raises ``error(user, others)`` if a user has a training interaction
    with every one of the :obj:`num_items` items, so that no negative item
    can be sampled for it. :obj:`users` holds the user id (``>= 0``) of
    every training interaction, counted as given (a pair given twice counts
    twice); :obj:`user` is the smallest such id and :obj:`others` the number
    of other such users."""
    full = np.flatnonzero(np.bincount(users) >= num_items)
    if full.size:
        raise error(int(full[0]), full.size - 1)


class BPRSampler:
    r"""Draws BPR triples :math:`(u, i^+, i^-)`: every training interaction
    once per epoch in random order, with a negative item drawn uniformly from
    the items the user has not interacted with in training.

    Sampling is vectorised: negatives that hit a training positive are
    redrawn in rounds, all collisions at once, never in a loop over
    interactions. The same :obj:`seed` and epoch give the same triples.

    Args:
        edge_index (Tensor): ``[2, E]`` training user-item edges.
        num_users (int): Number of users.
        num_items (int): Number of items.
        batch_size (int): Triples per batch.
        seed (int): Base seed; epoch :obj:`e` uses ``seed + e``.
        rank (int): This process's index when sampling for data-parallel
            training; each rank gets a disjoint share of the epoch.
        world_size (int): Number of data-parallel processes.
    """
    def __init__(self, edge_index: Tensor, num_users: int, num_items: int,
                 batch_size: int = 1024, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        # Out-of-range ids would make the keys user * num_items + item of
        # different pairs collide, so that negatives could be positives.
        check_user_item_edges(edge_index, num_users, num_items)
        if edge_index.numel() == 0:
            raise ValueError('BPRSampler needs at least one training edge')
        if batch_size < 1:
            raise ValueError(f'batch_size must be positive, got {batch_size}')
        if world_size < 1:
            raise ValueError(f'world_size must be >= 1, got {world_size}')
        if not 0 <= rank < world_size:
            raise ValueError(f'rank must be in [0, world_size) = '
                             f'[0, {world_size}), got {rank}')
        self.users = edge_index[0].cpu().long()
        self.items = edge_index[1].cpu().long()
        self.num_users = num_users
        self.num_items = num_items
        # Sorted keys of the positives, for membership tests.
        self._keys = torch.unique(self.users * num_items + self.items)
        # Distinct pairs: a pair given twice is still one item.
        check_negatives(
            (self._keys // num_items).numpy(), num_items,
            lambda user, others: ValueError(
                f'user {user} has interacted with every item: no negative '
                f'item can be sampled'))
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        per_rank = -(-self.users.numel() // self.world_size)
        return -(-per_rank // self.batch_size)

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        r"""Whether each :obj:`(users[j], items[j])` is a training edge."""
        keys = users * self.num_items + items
        pos = torch.searchsorted(self._keys, keys).clamp_(
            max=self._keys.numel() - 1)
        return self._keys[pos] == keys

    def sample_negatives(self, users: Tensor,
                         generator: Optional[torch.Generator] = None
                         ) -> Tensor:
        r"""Uniform negatives for :obj:`users`, none a training positive."""
        neg = torch.randint(self.num_items, users.shape, generator=generator)
        redo = self.is_positive(users, neg).nonzero().view(-1)
        while redo.numel() > 0:
            neg[redo] = torch.randint(self.num_items, redo.shape,
                                      generator=generator)
            redo = redo[self.is_positive(users[redo], neg[redo])]
        return neg

    def epoch(self, epoch: int) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
        r"""Yields the batches ``(users, pos_items, neg_items)`` of
        :obj:`epoch`."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.users.numel(), generator=generator)
        neg_all = self.sample_negatives(self.users[perm], generator)
        share = slice(self.rank, None, self.world_size)
        perm, neg_all = perm[share], neg_all[share]
        for start in range(0, perm.numel(), self.batch_size):
            index = perm[start:start + self.batch_size]
            yield (self.users[index], self.items[index],
                   neg_all[start:start + self.batch_size])

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(edges={self.users.numel()}, '
                f'batch_size={self.batch_size})')
