r"""MMSSL's modality-aware preference rows, the perturbed real rows of its
adversarial training, and the generated modality graphs."""
import math
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from pyg_mmrec.data.hetero import (
    INTERACTS,
    ITEM,
    USER,
    num_users_items,
    require_modalities,
)
from pyg_mmrec.graph import csr_of, one_sided_norm
from pyg_mmrec.transforms.diffusion_graph import gather_rows


def preference_rows(user_emb: Tensor, item_emb: Tensor, rowptr: Tensor,
                    col: Tensor, index: Tensor,
                    chunk_size: Optional[int] = None) -> Tensor:
    r"""MMSSL's preference rows of the users :obj:`index`,

    .. math::
        \mathbf{S} = \mathrm{norm}\big((\mathbf{x}_B \mathbf{z}^\top) \odot
        (1 - \mathbf{R}_B)\big),

    a row over all items with the user's training items zeroed, then
    L2-normalised. Memory is :math:`O(|B| \cdot I)` (the output), never
    :math:`O(U \cdot I)`: the training items are zeroed by index from the CSR
    instead of through a dense mask, and with :obj:`chunk_size` the scores
    are computed over chunks of items. Differentiable in both embeddings.

    Args:
        user_emb (Tensor): ``[B, d]`` user representations :math:`\mathbf{x}_B`
            (already the rows of :obj:`index`).
        item_emb (Tensor): ``[I, d]`` item representations :math:`\mathbf{z}`.
        rowptr (Tensor): ``[U + 1]`` CSR row pointer of the training edges.
        col (Tensor): ``[E]`` CSR item ids.
        index (Tensor): ``[B]`` user ids of the batch.
        chunk_size (int, optional): Items per chunk of the score product.
    """
    if user_emb.size(0) != index.numel():
        raise ValueError(f'user_emb has {user_emb.size(0)} rows but index '
                         f'has {index.numel()} users')
    if user_emb.size(-1) != item_emb.size(-1):
        raise ValueError(f'user_emb and item_emb must have the same number '
                         f'of columns, got {user_emb.size(-1)} and '
                         f'{item_emb.size(-1)}')
    if chunk_size is None:
        score = user_emb.matmul(item_emb.t())
    else:
        if chunk_size < 1:
            raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
        score = torch.cat([
            user_emb.matmul(item_emb[start:start + chunk_size].t())
            for start in range(0, item_emb.size(0), chunk_size)
        ], dim=1)
    ptr, items = gather_rows(rowptr, col, index)
    rows = torch.repeat_interleave(
        torch.arange(index.numel(), device=score.device), ptr.diff(),
        output_size=items.numel())
    score = score.index_put((rows, items), score.new_zeros(()))
    return F.normalize(score, dim=1)


def gumbel_sharpen(rows: Tensor, preference: Tensor, eta: float = 1e-5,
                   temperature: float = 0.005, kappa: float = 100.0,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    r"""MMSSL's "real" rows: interaction rows perturbed with Gumbel noise,
    sharpened, and mixed with the fused preference rows,

    .. math::
        \tilde{\mathbf{r}}_B = \mathrm{norm}\Big(\operatorname{softmax}\big(
        (\mathbf{R}_B + \eta\, \mathbf{g}) / \tau_r\big) + \kappa\,
        \mathbf{S}_{ui}\Big), \qquad \mathbf{g} = -\log(-\log
        \boldsymbol{\xi}), \; \boldsymbol{\xi} \sim \mathcal{U}(0, 1).

    Args:
        rows (Tensor): ``[B, I]`` interaction rows :math:`\mathbf{R}_B`.
        preference (Tensor): ``[B, I]`` fused preference rows
            :math:`\mathbf{S}_{ui}` (see :func:`preference_rows`).
        eta (float): Noise scale :math:`\eta` (default: :obj:`1e-5`).
        temperature (float): :math:`\tau_r` (default: :obj:`0.005`).
        kappa (float): :math:`\kappa` (default: :obj:`100`).
        generator (torch.Generator, optional): Source of :math:`\xi`; a fixed
            state reproduces the rows.
    """
    if rows.shape != preference.shape:
        raise ValueError(f'rows and preference must have the same shape, got '
                         f'{tuple(rows.shape)} and {tuple(preference.shape)}')
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    gen_device = generator.device if generator is not None else rows.device
    xi = torch.rand(rows.shape, generator=generator, device=gen_device,
                    dtype=rows.dtype).to(rows.device)
    # rand() may return exactly 0, whose double log is infinite.
    xi = xi.clamp_(min=torch.finfo(rows.dtype).tiny)
    gumbel = -torch.log(-torch.log(xi))
    sharp = torch.softmax((rows + eta * gumbel) / temperature, dim=1)
    return F.normalize(sharp + kappa * preference, dim=1)


def num_generated_items(num_items: int, rate: float) -> int:
    r""":math:`\max(1, \lceil \rho I \rceil)`, the items per user of MMSSL's
    generated graph."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f'rate must be in (0, 1], got {rate}')
    return max(1, math.ceil(rate * num_items))


@torch.no_grad()
def preference_topk_edges(user_emb: Tensor, item_emb: Tensor,
                          edge_index: Tensor, num_users: int, num_items: int,
                          rate: float = 1e-4,
                          batch_size: int = 1024) -> Tensor:
    r"""The edges of MMSSL's generated graph :math:`\mathbf{R}_m`: for every
    user the :math:`\max(1, \lceil \rho I \rceil)` items with the largest
    preference :math:`\mathbf{S}_m` (:func:`preference_rows`, computed over
    users in batches of :obj:`batch_size`). The row normalisation does not
    change a row's order, so the top items are those of the masked scores;
    as in the formula, a training item (score 0) can be chosen when all other
    scores of the row are negative.

    Returns:
        ``[2, U * k]`` edges sorted by user, then by decreasing preference.
    """
    if tuple(user_emb.shape[:1]) != (num_users, ) or \
            tuple(item_emb.shape[:1]) != (num_items, ):
        raise ValueError(f'need user_emb [{num_users}, d] and item_emb '
                         f'[{num_items}, d], got {list(user_emb.shape)} and '
                         f'{list(item_emb.shape)}')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    k = num_generated_items(num_items, rate)
    device = user_emb.device
    rowptr, col = csr_of(edge_index.to(device), num_users)
    tops = []
    for start in range(0, num_users, batch_size):
        users = torch.arange(start, min(start + batch_size, num_users),
                             device=device)
        pref = preference_rows(user_emb[users], item_emb, rowptr, col, users)
        tops.append(pref.topk(k, dim=1).indices)
    top = torch.cat(tops, dim=0).to(edge_index.device)
    user = torch.arange(num_users, device=edge_index.device)
    return torch.stack([user.repeat_interleave(k), top.reshape(-1)])


class AdversarialGraph(BaseTransform):
    r"""Rebuilds MMSSL's generated modality graphs from the per-modality
    user and item representations :math:`(\mathbf{y}^u_m, \mathbf{y}^i_m)`:
    :math:`\mathbf{R}_m` keeps, for every user, the top
    :math:`\max(1, \lceil \rho I \rceil)` items of
    :math:`\mathbf{S}_m = \mathrm{norm}((\mathbf{y}^u_m
    \mathbf{y}^{i\top}_m) \odot (1 - \mathbf{R}))`
    (:func:`preference_topk_edges`), with MMSSL's one-sided normalisation
    :math:`\mathbf{P}_m = \mathbf{D}_u^{-1/2} \mathbf{R}_m`,
    :math:`\mathbf{Q}_m = \mathbf{D}_i^{-1/2} \mathbf{R}_m^\top`
    (:func:`~pyg_mmrec.graph.one_sided_norm`).

    For each modality :obj:`m` the edge type
    ``('user', f'{relation}_{m}', 'item')`` gets:

    * :obj:`edge_index` ``[2, U k]``: the generated user-item edges (item ids
      from 0), sorted by user, then by decreasing preference;
    * :obj:`edge_weight` ``[U k]``: :math:`\mathbf{P}_m` (users aggregate
      items), :math:`D_u^{-1/2}` of the edge's user;
    * :obj:`rev_edge_weight` ``[U k]``: :math:`\mathbf{Q}_m` (items aggregate
      users), :math:`D_i^{-1/2}` of the edge's item.

    Deterministic (no randomness); the data is shallow-copied.

    Args:
        user_emb (Mapping[str, Tensor]): ``[U, d]`` user representations per
            modality.
        item_emb (Mapping[str, Tensor]): ``[I, d]`` item representations per
            modality, same names.
        rate (float): :math:`\rho \in (0, 1]` (default: :obj:`1e-4`).
        batch_size (int): Users per batch (default: :obj:`1024`).
        relation (str): Prefix of the edge type's relation
            (default: :obj:`'adversarial'`).
    """
    def __init__(self, user_emb: Mapping[str, Tensor],
                 item_emb: Mapping[str, Tensor], rate: float = 1e-4,
                 batch_size: int = 1024,
                 relation: str = 'adversarial') -> None:
        if set(user_emb) != set(item_emb):
            raise ValueError(f'user_emb and item_emb must name the same '
                             f"modalities, got [{', '.join(user_emb)}] and "
                             f"[{', '.join(item_emb)}]")
        if len(user_emb) == 0:
            raise ValueError('user_emb must name at least one modality')
        num_generated_items(1, rate)  # validates the rate
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.user_emb: Dict[str, Tensor] = dict(user_emb)
        self.item_emb: Dict[str, Tensor] = dict(item_emb)
        self.rate = rate
        self.batch_size = batch_size
        self.relation = relation

    def edge_type(self, modality: str) -> Tuple[str, str, str]:
        r"""The edge type that holds the graph of :obj:`modality`."""
        return (USER, f'{self.relation}_{modality}', ITEM)

    def forward(self, data: HeteroData) -> HeteroData:
        require_modalities(data, self.user_emb)
        num_users, num_items = num_users_items(data)
        edge_index = data[INTERACTS].edge_index
        for name in self.user_emb:
            gen = preference_topk_edges(self.user_emb[name].detach(),
                                        self.item_emb[name].detach(),
                                        edge_index, num_users, num_items,
                                        self.rate, self.batch_size)
            user_weight, item_weight = one_sided_norm(gen, num_users,
                                                      num_items)
            store = data[self.edge_type(name)]
            store.edge_index = gen
            store.edge_weight = user_weight
            store.rev_edge_weight = item_weight
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}('
                f"modalities=[{', '.join(self.user_emb)}], rate={self.rate})")


__all__ = [
    'preference_rows', 'gumbel_sharpen', 'num_generated_items',
    'preference_topk_edges', 'AdversarialGraph'
]
