r"""MMSSL's modality-aware preference rows, the perturbed real rows of its
adversarial training, and the generated modality graphs."""
import math
from fractions import Fraction
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import softmax as pyg_softmax

from pyg_mmrec.data.hetero import (
    INTERACTS,
    ITEM,
    USER,
    num_users_items,
    require_modalities,
)
from pyg_mmrec.graph import (
    check_user_item_edges,
    csr_of,
    csr_row_entries,
)
from pyg_mmrec.nn._random import sample_on_generator
from pyg_mmrec.transforms.normalize import OneSidedNorm


def _batch_training_pairs(rowptr: Tensor, col: Tensor, index: Tensor
                          ) -> Tuple[Tensor, Tensor, Tensor]:
    # (row in the batch, item) of every training edge of the batch users,
    # and each batch user's number of training items.
    ptr, rows, items = csr_row_entries(rowptr, col, index, what='user id')
    return rows, items, ptr.diff()


def _gumbel(num: int, dtype: torch.dtype, device: torch.device,
            generator: Optional[torch.Generator]) -> Tensor:
    # Standard Gumbel noise -log(-log(xi)), xi ~ U(0, 1).
    xi = sample_on_generator(torch.rand, num, generator=generator,
                             device=device, dtype=dtype)
    # rand() may return exactly 0, whose double log is infinite.
    xi = xi.clamp_(min=torch.finfo(dtype).tiny)
    return -torch.log(-torch.log(xi))


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
    rows, items, _ = _batch_training_pairs(rowptr, col, index)
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
    gumbel = _gumbel(rows.numel(), rows.dtype, rows.device,
                     generator).view(rows.shape)
    sharp = torch.softmax((rows + eta * gumbel) / temperature, dim=1)
    return F.normalize(sharp + kappa * preference, dim=1)


def projected_preference_rows(user_emb: Tensor, item_emb: Tensor,
                              projection: Tensor, rowptr: Tensor, col: Tensor,
                              index: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The preference rows :math:`\mathbf{S}_B` of :func:`preference_rows`
    projected onto :obj:`projection` :math:`\mathbf{V} \in
    \mathbb{R}^{I \times c}`, i.e. :math:`\mathbf{S}_B \mathbf{V}`, without
    forming :math:`\mathbf{S}_B`.

    A row is a low-rank part minus its training entries,
    :math:`\mathbf{s} = \mathbf{x}\mathbf{z}^\top - \sum_{j \in
    \mathcal{N}(u)} (\mathbf{x} \cdot \mathbf{z}_j)\, \mathbf{e}_j`, so

    .. math::
        \mathbf{s}\mathbf{V} = \mathbf{x}(\mathbf{z}^\top\mathbf{V}) -
        \sum_{j \in \mathcal{N}(u)} (\mathbf{x} \cdot \mathbf{z}_j)
        \mathbf{V}_j, \qquad
        \lVert \mathbf{s} \rVert^2 = \mathbf{x}(\mathbf{z}^\top\mathbf{z})
        \mathbf{x}^\top - \sum_{j \in \mathcal{N}(u)}
        (\mathbf{x} \cdot \mathbf{z}_j)^2,

    which costs :math:`O(I d c + |B| d c + \mathrm{nnz}_B\, c)` instead of
    the :math:`O(|B| I d)` of the rows themselves. Differentiable in all
    three matrices.

    Returns:
        ``(projected, row_norm)``: ``[B, c]`` projected normalised rows and
        ``[B]`` norms of the rows before normalisation.
    """
    _check_projected(user_emb, item_emb, projection, index)
    rows, items, _ = _batch_training_pairs(rowptr, col, index)
    return _projected_rows(user_emb, item_emb, projection, rows, items)


def _check_projected(user_emb: Tensor, item_emb: Tensor,
                     projection: Tensor, index: Tensor) -> None:
    if user_emb.size(0) != index.numel():
        raise ValueError(f'user_emb has {user_emb.size(0)} rows but index '
                         f'has {index.numel()} users')
    if projection.size(0) != item_emb.size(0):
        raise ValueError(f'projection must have one row per item '
                         f'({item_emb.size(0)}), got {projection.size(0)}')


def _projected_rows(user_emb: Tensor, item_emb: Tensor, projection: Tensor,
                    rows: Tensor, items: Tensor) -> Tuple[Tensor, Tensor]:
    # projected_preference_rows for the batch's (row, item) training pairs.
    # index_select, not x[idx]: the advanced-indexing kernel is several
    # times slower on CPU for row gathers of this size.
    train_score = (user_emb.index_select(0, rows) *
                   item_emb.index_select(0, items)).sum(-1)
    out = user_emb.matmul(item_emb.t().matmul(projection))
    out = out.index_add(0, rows,
                        -train_score.unsqueeze(-1) *
                        projection.index_select(0, items))
    # A difference of two sums of squares: it only loses precision when a
    # user's training items carry almost all of the row's mass, which a row
    # over every item of a sparse interaction matrix does not do.
    sq = (user_emb.matmul(item_emb.t().matmul(item_emb)) * user_emb).sum(-1)
    sq = sq.index_add(0, rows, -train_score.pow(2))
    # At least 1e-12 (F.normalize's eps), with a finite gradient at 0.
    norm = sq.clamp_min(1e-24).sqrt()
    return out / norm.unsqueeze(-1), norm


def sparse_sharpening_is_exact(eta: float, temperature: float,
                               dtype: torch.dtype = torch.float32) -> bool:
    r"""Whether the sharpened rows of :func:`gumbel_sharpen` are exactly
    zero outside a user's training items in :obj:`dtype`: the logits there
    trail the training items' by at least :math:`(1 - 60\eta)/\tau_r`
    (Gumbel noise outside :math:`[-5, 55]` has probability below
    :math:`10^{-23}`), and :math:`e^{-x}` underflows to zero once :math:`x`
    exceeds the log of the smallest subnormal number. MMSSL's
    :math:`\eta = 10^{-5}, \tau_r = 0.005` give a margin of 200 against 104
    (float32)."""
    info = torch.finfo(dtype)
    # log(smallest subnormal), summed as logs: the product itself is a
    # subnormal, which flush-to-zero mode (set process-wide by some
    # compiled extensions) would turn into 0.
    log_smallest = math.log(info.smallest_normal) + math.log(info.eps)
    return (1.0 - 60.0 * eta) / temperature > 1.0 - log_smallest


def projected_real_rows(user_emb: Tensor, item_emb: Tensor,
                        projection: Tensor, rowptr: Tensor, col: Tensor,
                        index: Tensor, eta: float = 1e-5,
                        temperature: float = 0.005, kappa: float = 100.0,
                        generator: Optional[torch.Generator] = None
                        ) -> Tensor:
    r"""The real rows of :func:`gumbel_sharpen` (built from the fused
    preference rows :math:`\mathbf{S}_{ui}` of :obj:`user_emb`,
    :obj:`item_emb`), projected onto :obj:`projection`, without forming
    them.

    Where :func:`sparse_sharpening_is_exact` holds (MMSSL's settings), the
    sharpened softmax is zero outside the training items, so it is a
    softmax over each user's training items only
    (:func:`torch_geometric.utils.softmax`); its support is disjoint from
    that of :math:`\mathbf{S}_{ui}`, whose rows have unit norm, so
    :math:`\lVert \mathbf{a} + \kappa \mathbf{s} \rVert^2 =
    \lVert \mathbf{a} \rVert^2 + \kappa^2 \lVert \mathbf{s} \rVert^2`.
    The Gumbel noise is drawn for the training entries only.

    Returns:
        ``[B, c]`` projected real rows :math:`\tilde{\mathbf{r}}_B
        \mathbf{V}`.
    """
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    if not sparse_sharpening_is_exact(eta, temperature, user_emb.dtype):
        raise ValueError(f'the sharpened rows are not sparse for eta={eta}, '
                         f'temperature={temperature}; use gumbel_sharpen '
                         f'on dense rows')
    _check_projected(user_emb, item_emb, projection, index)
    rows, items, counts = _batch_training_pairs(rowptr, col, index)
    if bool((counts == 0).any()):
        raise ValueError('every user of the batch needs a training item')
    gumbel = _gumbel(items.numel(), user_emb.dtype, user_emb.device,
                     generator)
    sharp = pyg_softmax((1.0 + eta * gumbel) / temperature, rows,
                        num_nodes=index.numel())
    # The training pairs gathered above, not a second time.
    fused, fused_norm = _projected_rows(user_emb, item_emb, projection, rows,
                                        items)
    unit = (fused_norm > 1e-12).to(fused.dtype)  # rows of S_ui are 0 or unit
    sharp_sq = torch.zeros(index.numel(), dtype=sharp.dtype,
                           device=sharp.device).index_add(0, rows, sharp**2)
    out = (kappa * fused).index_add(0, rows,
                                    sharp.unsqueeze(-1) *
                                    projection.index_select(0, items))
    norm = (sharp_sq + kappa**2 * unit).sqrt()
    return out / norm.clamp_min(1e-12).unsqueeze(-1)


def num_generated_items(num_items: int, rate: float) -> int:
    r""":math:`\max(1, \lceil \rho I \rceil)`, the items per user of MMSSL's
    generated graph.

    The product is exact, with :math:`\rho` taken as the decimal number it
    is written as: in floating point, :math:`0.07 \cdot 100 =
    7.000000000000001` would round up to 8 items instead of 7."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f'rate must be in (0, 1], got {rate}')
    # repr() gives the shortest decimal that round-trips to the float.
    return max(1, math.ceil(Fraction(repr(float(rate))) * int(num_items)))


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
    check_user_item_edges(edge_index, num_users, num_items, distinct=True)
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
    :math:`\mathbf{Q}_m = \mathbf{D}_i^{-1/2} \mathbf{R}_m^\top` written
    by :class:`~pyg_mmrec.transforms.OneSidedNorm` itself, in its
    ``source -> target`` layout. For each modality :obj:`m`:

    * ``('user', f'{relation}_{m}', 'item')`` (:meth:`edge_type`) gets
      :obj:`edge_index` ``[2, U k]``, the generated user-item edges (item
      ids from 0) sorted by user, then by decreasing preference, and
      :obj:`edge_weight` ``[U k]`` :math:`= \mathbf{Q}_m`, :math:`d_i^{-1/2}`
      of the edge's item (items aggregate users);
    * ``('item', f'rev_{relation}_{m}', 'user')`` (:meth:`rev_edge_type`)
      gets the flipped :obj:`edge_index` (same edge order) and
      :obj:`edge_weight` :math:`= \mathbf{P}_m`, :math:`d_u^{-1/2}` of the
      edge's user (users aggregate items).

    As for :class:`~pyg_mmrec.transforms.OneSidedNorm`, a
    :class:`~torch_geometric.transforms.ToUndirected` applied *after* this
    transform would replace :math:`\mathbf{P}_m` by :math:`\mathbf{Q}_m`;
    apply it before.

    The weights are computed in the dtype of the representations.
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

    def rev_edge_type(self, modality: str) -> Tuple[str, str, str]:
        r"""The reverse edge type of :obj:`modality`'s graph (the name
        :class:`~torch_geometric.transforms.ToUndirected` would give it, as
        :class:`~pyg_mmrec.transforms.OneSidedNorm` does)."""
        return OneSidedNorm(self.edge_type(modality)).rev_edge_type

    def forward(self, data: HeteroData) -> HeteroData:
        require_modalities(data, self.user_emb)
        num_users, num_items = num_users_items(data)
        edge_index = data[INTERACTS].edge_index
        for name in self.user_emb:
            try:
                gen = preference_topk_edges(self.user_emb[name].detach(),
                                            self.item_emb[name].detach(),
                                            edge_index, num_users,
                                            num_items, self.rate,
                                            self.batch_size)
            except ValueError as e:
                raise ValueError(f"modality '{name}': {e}") from None
            edge_type = self.edge_type(name)
            data[edge_type].edge_index = gen
            # OneSidedNorm's own code, so that the generated graphs cannot
            # drift from the training graph's layout. forward(), not
            # __call__: data is already this transform's copy.
            data = OneSidedNorm(edge_type, dtype=self.user_emb[name].dtype
                                ).forward(data)
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}('
                f"modalities=[{', '.join(self.user_emb)}], rate={self.rate}, "
                f'relation={self.relation!r})')


__all__ = [
    'preference_rows', 'gumbel_sharpen', 'projected_preference_rows',
    'projected_real_rows', 'sparse_sharpening_is_exact',
    'num_generated_items',
    'preference_topk_edges', 'AdversarialGraph'
]
