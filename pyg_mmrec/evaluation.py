r"""Full-ranking evaluation built on :mod:`torch_geometric.metrics`.

For every evaluated user, all items are scored, the user's training items
(and, when testing, validation items) are excluded, and the top-:math:`K`
are compared with the held-out items. Recall@K divides the hits by the
number of held-out items, NDCG@K uses the ideal DCG over
:math:`\min(|\text{held-out}|, K)` positions, Precision@K divides by
:math:`K`; each is averaged over users with at least one held-out item.
"""
import functools
from typing import (
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.metrics import (
    LinkPredMetricCollection,
    LinkPredNDCG,
    LinkPredPrecision,
    LinkPredRecall,
)

from pyg_mmrec.data.hetero import (
    INTERACTS,
    has_split,
    num_users_items,
    split_edge_index,
)
from pyg_mmrec.errors import DivergenceError
from pyg_mmrec.graph import (
    csr_of,
    csr_row_entries,
    pairs_text,
    repeated_keys,
)

#: ``scores(user_ids) -> [len(user_ids), num_items]``
ScoreFn = Callable[[Tensor], Tensor]


def _is_in(sorted_keys: Tensor, key: Tensor) -> Tensor:
    # torch.isin would sort `sorted_keys` again on every call.
    if sorted_keys.numel() == 0:
        return torch.zeros_like(key, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, key)
    return sorted_keys[pos.clamp_(max=sorted_keys.numel() - 1)] == key


def _excluded_splits(split: str, splits: Iterable[str]) -> List[str]:
    return ['train', 'val'] if split == 'test' and 'val' in splits \
        else ['train']


class RankingEvaluator:
    r"""Evaluates a scoring function by full ranking on a split of
    :obj:`data`. The validation and test edges are optional: a split the
    data lacks cannot be evaluated, and is not excluded from rankings.

    Args:
        data (HeteroData): The data set (see :mod:`pyg_mmrec.data.hetero`).
        ks (sequence of int): Cut-offs :math:`K` to report.
        batch_size (int): Users scored at once; memory is
            ``batch_size x num_items``.
    """
    def __init__(self, data: HeteroData, ks: Sequence[int] = (20, ),
                 batch_size: int = 1024) -> None:
        if not ks or min(ks) < 1:
            raise ValueError(f'cut-offs must be positive, got {list(ks)}')
        self.num_users, self.num_items = num_users_items(data)
        self.ks = sorted(set(int(k) for k in ks))
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.batch_size = batch_size
        # A split the data lacks (e.g. only training edges, to recommend)
        # is an error only when it is needed.
        edges = {
            split: self._checked_edges(data, split)
            for split in ('train', 'val', 'test')
            if split == 'train' or has_split(data, split)
        }
        # Checked when a split is first needed (check_split), not here:
        # recommending needs no held-out check. (The edges are the data's
        # own CPU tensors, so keeping them costs no memory there.)
        self._edges = edges
        self._csrs = {split: csr_of(edge_index, self.num_users)
                      for split, edge_index in edges.items()}

    def _csr(self, split: str) -> Tuple[Tensor, Tensor]:
        if split not in self._csrs:
            raise ValueError(f"the data has no {split} edges "
                             f"('{split}_edge_index' of {INTERACTS})")
        return self._csrs[split]

    def _checked_edges(self, data: HeteroData, split: str) -> Tensor:
        # Held-out edges live beside the training edges under their own
        # keys, which PyG's subgraph, to_homogeneous and batching do not
        # renumber: refuse ids outside the data rather than score them.
        edge_index = split_edge_index(data, split).cpu()
        if edge_index.dim() != 2 or edge_index.size(0) != 2 or \
                edge_index.is_floating_point():
            raise ValueError(f'the {split} edges must be a [2, E] integer '
                             f'tensor, got {edge_index.dtype} of shape '
                             f'{tuple(edge_index.shape)}')
        for row, noun, count in ((0, 'user', self.num_users),
                                 (1, 'item', self.num_items)):
            ids = edge_index[row]
            if ids.numel() and (ids.min() < 0 or ids.max() >= count):
                bad = ids[(ids < 0) | (ids >= count)][0]
                raise ValueError(
                    f'the {split} edges hold {noun} id {int(bad)}, outside '
                    f'the data set\'s {noun}s 0..{count - 1} (were they '
                    f'renumbered without the training edges?)')
        return edge_index.long()

    def check_split(self, split: str) -> None:
        r"""Raises :class:`ValueError` unless :obj:`split` (``'val'`` or
        ``'test'``) can be evaluated: the data holds it, without a pair
        given twice or a pair of a split excluded from its ranking (both
        would distort the metrics silently)."""
        if split not in ('val', 'test'):
            raise ValueError(f"split must be 'val' or 'test', got '{split}'")
        self._csr(split)
        if split in self._problems:
            raise ValueError(self._problems[split])

    @functools.cached_property
    def _problems(self) -> Dict[str, str]:
        # A held-out pair given twice counted twice in Recall@K's
        # denominator, and one of an excluded split could never be hit:
        # both lowered the metrics silently. (The readers remove such pairs,
        # with a note; data built by hand gets an error.)
        edges, num_items = self._edges, self.num_items
        # Each split's keys sorted once; membership by binary search.
        keys = {split: (edge_index[0] * num_items + edge_index[1]).sort()[0]
                for split, edge_index in edges.items()}
        problems = {}
        for split in ('val', 'test'):
            if split not in keys:
                continue
            repeated = repeated_keys(keys[split], num_items)
            if repeated.size(1):
                problems[split] = (f'the {split} edges repeat '
                                   f'{pairs_text(repeated)}: Recall@K would '
                                   f'count them twice')
                continue
            key = keys[split]
            excluded = _excluded_splits(split, edges)
            known = torch.zeros_like(key, dtype=torch.bool)
            for other in excluded:
                known |= _is_in(keys[other], key)
            seen = torch.stack([key[known] // num_items,
                                key[known] % num_items])
            if seen.size(1):
                problems[split] = (
                    f'the {split} edges hold {pairs_text(seen)} of the '
                    f'{" or ".join(excluded)} split: those items are '
                    f'excluded from the {split} ranking, so they could never '
                    f'be hit')
        return problems

    def check_users(self, users: Union[Tensor, Sequence[int]]) -> Tensor:
        r""":obj:`users` as a 1-D ``long`` tensor on the CPU; raises unless
        every id is a user of the data set (a negative id would silently
        index from the end)."""
        users = torch.as_tensor(users).view(-1).cpu()
        if users.numel() == 0:  # as_tensor([]) is float32
            users = users.long()
        if users.is_floating_point() or users.dtype == torch.bool:
            raise ValueError(f'user ids must be integers, got dtype '
                             f'{users.dtype}')
        users = users.long()
        if users.numel() and (users.min() < 0
                              or users.max() >= self.num_users):
            bad = users[(users < 0) | (users >= self.num_users)][0]
            raise ValueError(f'user id {int(bad)} is out of range: the data '
                             f'set has users 0..{self.num_users - 1}')
        return users

    def excluded_splits(self, split: str) -> List[str]:
        r"""The splits whose items are removed from the ranking of
        :obj:`split`: training items always, validation items (if the data
        has any) for test."""
        return _excluded_splits(split, self._csrs)

    def _metrics(self) -> LinkPredMetricCollection:
        metrics = {}
        for k in self.ks:
            metrics[f'recall@{k}'] = LinkPredRecall(k)
            metrics[f'ndcg@{k}'] = LinkPredNDCG(k)
            metrics[f'precision@{k}'] = LinkPredPrecision(k)
        return LinkPredMetricCollection(metrics)

    def users_of(self, split: str) -> Tensor:
        r"""Users with at least one interaction in :obj:`split`."""
        rowptr, _ = self._csr(split)
        return (rowptr[1:] > rowptr[:-1]).nonzero().view(-1)

    @torch.no_grad()
    def top_k(self, scores: ScoreFn, users: Union[Tensor, Sequence[int]],
              k: int, exclude: Sequence[str]) -> Tensor:
        r"""Top-:obj:`k` items for :obj:`users`, excluding their items in the
        splits :obj:`exclude`. Returns ``[len(users), k]`` item ids; a user
        with fewer than :obj:`k` items left gets :obj:`-1` in the remaining
        places (never an excluded item), also when :obj:`k` exceeds the
        number of items."""
        if k < 1:
            raise ValueError(f'k must be positive, got {k}')
        return self._top_k(scores, self.check_users(users), k, exclude)

    def _top_k(self, scores: ScoreFn, users: Tensor, k: int,
               exclude: Sequence[str]) -> Tensor:
        # top_k for checked users (evaluate checks them once, not per batch).
        ranked = min(k, self.num_items)
        out = []
        for start in range(0, users.numel(), self.batch_size):
            batch = users[start:start + self.batch_size]
            # Ranked where they were computed: only the [B, k] ids move to
            # the CPU, not the [B, I] scores.
            score = scores(batch).float()
            if score.shape != (batch.numel(), self.num_items):
                raise ValueError(
                    f'scores must have shape {(batch.numel(), self.num_items)}'
                    f', got {tuple(score.shape)}')
            # NaN would rank first and -inf reads as "excluded": either way
            # the ranking means nothing.
            if not torch.isfinite(score).all():
                raise DivergenceError('the model scores items as NaN or '
                                      'infinite: it diverged')
            for split in exclude:
                _, row, col = csr_row_entries(*self._csr(split), batch)
                score[row.to(score.device), col.to(score.device)] = \
                    float('-inf')
            top = score.topk(ranked, dim=1)
            ids = top.indices.masked_fill_(top.values == float('-inf'), -1)
            out.append(torch.nn.functional.pad(ids.cpu(), (0, k - ranked),
                                               value=-1))
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)

    @torch.no_grad()
    def evaluate(self, scores: ScoreFn, split: str = 'val',
                 users: Optional[Tensor] = None) -> Dict[str, float]:
        r"""Recall, NDCG and Precision at every cut-off on :obj:`split`.

        Args:
            scores (callable): Maps a batch of user ids to their scores for
                all items.
            split (str): ``'val'`` or ``'test'``.
            users (Tensor or list, optional): Restrict to these users
                (default: every user with a held-out item in :obj:`split`).
        """
        self.check_split(split)
        users = self.users_of(split) if users is None else \
            self.check_users(users)
        metrics = self._metrics()
        exclude = self.excluded_splits(split)
        max_k = min(max(self.ks), self.num_items)
        rowptr, col = self._csr(split)
        for start in range(0, users.numel(), self.batch_size):
            batch = users[start:start + self.batch_size]
            top = self._top_k(scores, batch, max_k, exclude)
            # An id no label has: PyG's metrics offset ids per row, so -1
            # would alias the previous row's last item.
            top[top < 0] = self.num_items
            _, label_row, label_col = csr_row_entries(rowptr, col, batch)
            metrics.update(top, torch.stack([label_row, label_col]))
        computed = metrics.compute()
        return {name: float(value) for name, value in computed.items()}
