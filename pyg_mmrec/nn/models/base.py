r"""The interface every recommender of the library implements, so that one
training loop, one evaluator and one CLI serve all models."""
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from pyg_mmrec.data.hetero import num_users_items, split_edge_index
from pyg_mmrec.graph import csr_of

if TYPE_CHECKING:  # the evaluator is imported when needed, not before
    from pyg_mmrec.evaluation import RankingEvaluator

Batch = Tuple[Tensor, Tensor, Tensor]


def batch_embeddings(user_emb: Tensor, item_emb: Tensor, users: Tensor,
                     pos_items: Tensor, neg_items: Tensor
                     ) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The embedding rows :math:`(\mathbf{e}_u, \mathbf{e}_{i^+},
    \mathbf{e}_{i^-})` of a BPR batch.

    Gathers with :meth:`~torch.Tensor.index_select`, whose backward
    (:meth:`~torch.Tensor.index_add_`) is deterministic on CPU: the backward
    of ``user_emb[users]`` adds repeated rows with atomic adds, so the same
    seed would not reproduce a training run.
    """
    return (user_emb.index_select(0, users),
            item_emb.index_select(0, pos_items),
            item_emb.index_select(0, neg_items))


def device_clock(device: torch.device) -> float:
    r"""The time once the work queued on :obj:`device` has finished. CUDA
    runs asynchronously: without the wait, GPU time would be counted in
    whichever phase happens to wait for it next."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Recommender(torch.nn.Module):
    r"""Base class of the library's recommenders, in the style of PyG's
    :class:`~torch_geometric.nn.models.LightGCN`: :meth:`forward` returns
    user and item embeddings, :meth:`loss` the training objective of a BPR
    batch, :meth:`recommend` the top-:math:`k` items.

    Graph structures a model needs (normalised adjacencies, generated
    graphs) are computed by transforms and stored on the
    :class:`~torch_geometric.data.HeteroData` by :meth:`prepare`, called
    once before training.

    Args:
        num_users (int): Number of users.
        num_items (int): Number of items.
    """
    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items
        # The training interactions as CSR, for models whose prepare() calls
        # store_train_csr(). Buffers, so that .to() moves them with the model
        # (prepare() may run before it); not saved, since prepare() rebuilds
        # them.
        self.register_buffer('_train_rowptr', None, persistent=False)
        self.register_buffer('_train_col', None, persistent=False)

    def store_train_csr(self, data: HeteroData) -> None:
        r"""Keeps the training interactions of :obj:`data` as CSR
        (:attr:`train_csr`)."""
        self._train_rowptr, self._train_col = csr_of(
            split_edge_index(data, 'train'), self.num_users)

    @property
    def train_csr(self) -> Tuple[Tensor, Tensor]:
        r"""``(rowptr, col)`` of the training interactions, on the model's
        device (set by :meth:`store_train_csr`)."""
        if self._train_rowptr is None:
            raise RuntimeError(f'call prepare(data) before training '
                               f'{self.__class__.__name__}')
        return self._train_rowptr, self._train_col

    def _owned_optimizers(self) -> List[torch.optim.Optimizer]:
        # The optimisers the model creates and steps itself (auxiliary
        # networks'), as opposed to configure_optimizer()'s, which the
        # caller holds and creates after moving the model.
        return []

    def _apply(self, fn: Callable[[Tensor], Tensor],
               recurse: bool = True) -> 'Recommender':
        # An optimiser's state is no buffer, so .to()/.double() leave it
        # behind, and a move between tensor types (e.g. to 'meta') even
        # replaces the parameters it holds. Rebind each optimiser to the
        # parameters of the same names and reload its state, which applies
        # torch's own policy (floating state to each parameter's device and
        # dtype, 'step' as it is).
        names = {id(p): name for name, p in self.named_parameters()}
        owned = [(optimizer, optimizer.state_dict(),
                  [[names[id(p)] for p in group['params']]
                   for group in optimizer.param_groups])
                 for optimizer in self._owned_optimizers()]
        out = super()._apply(fn, recurse)
        params = dict(self.named_parameters())
        for optimizer, state, groups in owned:
            for group, group_names in zip(optimizer.param_groups, groups):
                group['params'] = [params[name] for name in group_names]
            optimizer.load_state_dict(state)
        return out

    def upgrade_state_dict(self, state_dict: Dict[str, Any]
                           ) -> Dict[str, Any]:
        r"""Returns :obj:`state_dict` (e.g. a checkpoint's) with the
        parameter names of earlier versions of the model renamed to the
        current ones, so that their checkpoints still load; a model whose
        names never changed returns it as it is."""
        return state_dict

    def prepare(self, data: HeteroData) -> HeteroData:
        r"""Adds the graph structures this model propagates on to
        :obj:`data` and returns it. Called once, before :meth:`forward`."""
        return data

    def forward(self, data: HeteroData) -> Tuple[Tensor, Tensor]:
        r"""Returns ``(user_embeddings, item_embeddings)``."""
        raise NotImplementedError

    def loss(self, data: HeteroData, users: Tensor, pos_items: Tensor,
             neg_items: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        r"""The training loss of a BPR batch and its named parts."""
        raise NotImplementedError

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        r"""The optimiser of the recommender's parameters (Adam by default;
        models with auxiliary networks keep those out of it)."""
        return torch.optim.Adam(self.parameters(), lr=lr)

    def before_epoch(self, data: HeteroData, epoch: int, *,
                     progress: bool = False) -> Dict[str, float]:
        r"""Work done once per epoch before the recommender's batches (e.g.
        diffusion training, graph regeneration). Returns seconds per
        phase. With :obj:`progress`, long work shows a progress bar (on a
        terminal). The training loop passes :obj:`progress` only to
        overrides that take it, so ``before_epoch(self, data, epoch)``
        still works.

        Regenerated graphs must go into :obj:`data` itself, since the loop
        keeps using that object: ``transform(data)`` returns a copy (PyG's
        :class:`~torch_geometric.transforms.BaseTransform`), while
        ``transform.forward(data)`` writes the new edge types into
        :obj:`data`, as :class:`~pyg_mmrec.nn.models.MMSSL` does."""
        return {}

    def train_step(self, data: HeteroData, batch: Batch,
                   optimizer: torch.optim.Optimizer) -> Dict[str, float]:
        r"""One optimisation step on :obj:`batch`; returns the loss parts
        (``'loss'`` is the total). A part named ``'seconds_<phase>'`` is time
        the step spent in a sub-phase; the training loop reports its sum
        over the epoch as phase ``<phase>``."""
        optimizer.zero_grad(set_to_none=True)
        loss, parts = self.loss(data, *batch)
        loss.backward()
        optimizer.step()
        return {'loss': loss.item(), **parts}

    @torch.no_grad()
    def score_fn(self, data: HeteroData) -> Callable[[Tensor], Tensor]:
        r"""A function mapping user ids to scores for all items, with the
        embeddings computed once, in evaluation mode (no dropout; every
        submodule's mode is restored afterwards)."""
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            user_emb, item_emb = self(data)
        finally:
            for module, training in modes:
                module.training = training

        def scores(users: Tensor) -> Tensor:
            return user_emb[users.to(user_emb.device)] @ item_emb.t()

        return scores

    @torch.no_grad()
    def recommend(self, data: HeteroData,
                  users: Union[Tensor, Sequence[int]], k: int = 20,
                  exclude_seen: bool = True,
                  evaluator: Optional['RankingEvaluator'] = None,
                  exclude: Optional[Sequence[str]] = None) -> Tensor:
        r"""Top-:obj:`k` item ids for :obj:`users` (``[len(users), k]``),
        scored in evaluation mode (:meth:`score_fn`), excluding their
        training items when :obj:`exclude_seen`; :obj:`-1` fills the places
        of a user with fewer than :obj:`k` items left. :obj:`exclude`, if
        given, names the splits whose items are left out instead (``pyg-mmrec
        recommend`` leaves out every split the data set has)."""
        from pyg_mmrec.evaluation import RankingEvaluator
        evaluator = evaluator or RankingEvaluator(data)
        if exclude is None:
            exclude = ['train'] if exclude_seen else []
        return evaluator.top_k(self.score_fn(data), users, k, exclude)

    def extra_repr(self) -> str:
        return f'users={self.num_users}, items={self.num_items}'


def check_sizes(model: Recommender, data: HeteroData) -> None:
    r"""Raises if :obj:`data` does not match the model's user/item counts."""
    num_users, num_items = num_users_items(data)
    if (num_users, num_items) != (model.num_users, model.num_items):
        raise ValueError(
            f'the data has {num_users} users and {num_items} items, the '
            f'model was built for {model.num_users} and {model.num_items}')
