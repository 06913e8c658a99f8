r"""MMSSL (Wei et al., WWW 2023), assembled from the library's layers,
building blocks and transforms."""
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Module, Parameter
from torch_geometric.data import HeteroData

from pyg_mmrec.data.hetero import (
    INTERACTS,
    ITEM,
    USER,
    item_modalities,
    num_users_items,
    require_modalities,
)
from pyg_mmrec.errors import check_config
from pyg_mmrec.nn.adversarial import (
    Discriminator,
    ProjectedDiscriminator,
    gradient_penalty,
    projected_gradient_penalty,
)
from pyg_mmrec.nn.conv.one_sided_norm_conv import OneSidedNormConv
from pyg_mmrec.nn.fusion import CrossModalAttention
from pyg_mmrec.nn.losses import bpr_loss, grace_info_nce
from pyg_mmrec.nn.models.base import (
    Batch,
    Recommender,
    batch_embeddings,
    check_sizes,
    device_clock,
)
from pyg_mmrec.nn.projection import ModalityProjection
from pyg_mmrec.nn.sparse import BACKENDS, to_adj
from pyg_mmrec.transforms.adversarial import (
    AdversarialGraph,
    gumbel_sharpen,
    preference_rows,
    projected_preference_rows,
    projected_real_rows,
    sparse_sharpening_is_exact,
)
from pyg_mmrec.transforms.diffusion_graph import interaction_rows
from pyg_mmrec.transforms.normalize import OneSidedNorm

# Every graph MMSSL propagates on, the training graph R and each R_m, is
# stored in OneSidedNorm's layout: the (user, rel, item) store holds the
# edges with Q as edge_weight, the reverse (item, rev_rel, user) store the
# flipped edges with P as edge_weight. The adjacencies built from them for
# OneSidedNormConv are kept on the (user, rel, item) store:

#: Attribute of a ``(user, *, item)`` store that holds the ``U x I``
#: adjacency along which users aggregate items (:math:`\mathbf{P}`).
USER_ADJ = 'user_adj'
#: Attribute of the same store that holds the ``I x U`` adjacency along which
#: items aggregate users (:math:`\mathbf{Q}`).
ITEM_ADJ = 'item_adj'

#: Relation prefix of the generated graphs' edge types.
RELATION = 'adversarial'

DISCRIMINATORS = ('projected', 'paper')


@dataclass
class MMSSLConfig:
    r"""Hyper-parameters of :class:`MMSSL` (defaults: the paper's TikTok
    settings). The batch size and the generator's learning
    rate (AdamW, 5.5e-4 in the paper) belong to the training loop's
    :class:`~pyg_mmrec.train.config.TrainConfig`.

    Args:
        embedding_dim (int): :math:`d`.
        num_layers (int): Propagation layers on :math:`\mathbf{P},
            \mathbf{Q}` (two in the paper).
        heads (int): Heads of the cross-modal attention.
        feature_dropout (float): Dropout on the projected features
            :math:`\mathbf{h}_m`.
        id_weight (float): :math:`\gamma_{id}`, weight of the fused ID views.
        feature_weight (float): :math:`\gamma_m`, weight of the feature
            representations.
        last_layer_softmax (bool): Row softmax on the last propagation layer
            (the reference code's behaviour; off by default, as in the
            paper).
        reg_weight (float): :math:`\lambda` of the embedding regulariser of
            the BPR batch.
        feature_reg_weight (float): Weight of the feature regulariser.
        cl_weight (float): Weight of the contrastive loss.
        cl_temperature (float): :math:`\tau` of the contrastive loss.
        adv_weight (float): Weight of the generator's adversarial loss.
        gp_weight (float): Weight of the gradient penalty,
            :math:`\lambda_{gp} \cdot 0.3` with :math:`\lambda_{gp} = 1`.
        gumbel_eta (float): :math:`\eta` of the real rows' Gumbel noise.
        gumbel_temperature (float): :math:`\tau_r`.
        kappa (float): :math:`\kappa`, weight of :math:`\mathbf{S}_{ui}` in
            the real rows.
        discriminator (str): ``'projected'`` (:math:`O(I d)` parameters,
            :class:`~pyg_mmrec.nn.adversarial.ProjectedDiscriminator`) or
            ``'paper'`` (:math:`I \to I/4 \to I/8 \to 1`,
            :class:`~pyg_mmrec.nn.adversarial.Discriminator`).
        disc_hidden (int): First hidden width of the projected
            discriminator (its projection size is :obj:`embedding_dim`).
        dense_rows (bool): Form the ``[B, I]`` adversarial rows even for the
            projected discriminator. By default they are only formed for the
            paper's discriminator, which reads every entry: the projected
            one sees a row only through its projection, which
            :func:`~pyg_mmrec.transforms.projected_preference_rows` and
            :func:`~pyg_mmrec.transforms.projected_real_rows` compute from
            the low-rank-plus-sparse structure of the rows, with the same
            result (tested) at :math:`O(|B| d^2 + I d^2)` instead of
            :math:`O(|B| I d)` cost.
        disc_dropout1 (float): Dropout after the first hidden layer.
        disc_dropout2 (float): Dropout after the second hidden layer.
        disc_lr (float): Adam learning rate of the discriminator.
        disc_beta1 (float): Adam :math:`\beta_1` of the discriminator.
        disc_beta2 (float): Adam :math:`\beta_2` of the discriminator.
        weight_decay (float): AdamW weight decay of the generator (PyTorch's
            default; the paper states none).
        max_grad_norm (float): Clip the generator's gradient to this global
            norm before each step (0: no clipping, the paper's recipe).
            Not in the paper; the presets use 1. The one-sided propagation
            amplifies any component shared by many nodes by the row sums
            of :math:`\mathbf{Q}\mathbf{P}`, :math:`d_i^{-1/2} \sum_{u \ni
            i} d_u^{1/2}` (median 28, maximum 151 on TikTok) per layer, so
            the first batches, whose normalised ID views share such a
            component, have BPR losses near 40 and outsized gradients.
            Unclipped, they inflate AdamW's second moments, which with
            :math:`\beta_2 = 0.999` take thousands of steps to decay, and
            the model stalls at popularity level (TikTok validation
            Recall@20 0.058-0.062 over the first four epochs, against
            0.067-0.081 clipped at 1).
        graph_rate (float): :math:`\rho_m`: each user keeps
            :math:`\max(1, \lceil \rho_m I \rceil)` items in
            :math:`\mathbf{R}_m`.
        graph_batch_size (int): Users per batch when regenerating the graphs.
        preference_chunk_size (int): Items per chunk of the preference
            scores (0: no chunking; the rows are ``[B, I]`` either way).
        backend (str): Sparse backend of the propagation
            (see :func:`pyg_mmrec.nn.sparse.to_adj`).
    """
    embedding_dim: int = 64
    num_layers: int = 2
    heads: int = 4
    feature_dropout: float = 0.2
    id_weight: float = 0.36
    feature_weight: float = 0.55
    last_layer_softmax: bool = False
    reg_weight: float = 1e-5
    feature_reg_weight: float = 1e-5
    cl_weight: float = 0.03
    cl_temperature: float = 0.5
    adv_weight: float = 1e-4
    gp_weight: float = 0.3
    gumbel_eta: float = 1e-5
    gumbel_temperature: float = 0.005
    kappa: float = 100.0
    discriminator: str = 'projected'
    disc_hidden: int = 64
    dense_rows: bool = False
    disc_dropout1: float = 0.31
    disc_dropout2: float = 0.5
    disc_lr: float = 3e-4
    disc_beta1: float = 0.5
    disc_beta2: float = 0.9
    weight_decay: float = 0.01
    max_grad_norm: float = 0.0
    graph_rate: float = 1e-4
    graph_batch_size: int = 1024
    preference_chunk_size: int = 0
    backend: str = 'auto'

    def __post_init__(self) -> None:
        check_config(
            self,
            at_least_one=('embedding_dim', 'num_layers', 'heads',
                          'disc_hidden', 'graph_batch_size'),
            positive=('cl_temperature', 'gumbel_temperature'),
            learning_rate=('disc_lr', ),
            non_negative=('id_weight', 'feature_weight', 'reg_weight',
                          'feature_reg_weight', 'cl_weight', 'adv_weight',
                          'gp_weight', 'gumbel_eta', 'kappa', 'weight_decay',
                          'max_grad_norm', 'preference_chunk_size'),
            probability=('feature_dropout', 'disc_dropout1', 'disc_dropout2',
                         'disc_beta1', 'disc_beta2'),
            fraction=('graph_rate', ),
            choices=dict(discriminator=DISCRIMINATORS, backend=BACKENDS))


# The paper gives one set of MMSSL hyper-parameters and no per-data-set
# differences; the presets start from it.
_PAPER = dict(num_layers=2, id_weight=0.36, feature_weight=0.55,
              reg_weight=1e-5, feature_reg_weight=1e-5, cl_weight=0.03,
              cl_temperature=0.5, adv_weight=1e-4, graph_rate=1e-4,
              last_layer_softmax=False,
              # Not the paper's: see MMSSLConfig.max_grad_norm.
              max_grad_norm=1.0)

#: Per-data-set settings. TikTok's fusion weights are a tenth of the
#: paper's, chosen on TikTok's validation split: the added views are
#: L2-normalised, so their weight is relative to the scale of the ID
#: embeddings (Xavier-uniform rows of norm ~0.12 here), and at 0.36 and
#: 0.55 they swamp them (when chosen, best validation Recall@20 of the
#: first five epochs 0.078, against 0.091 at a tenth; the README's run of
#: the current code reaches 0.0925). Baby and Sports keep the
#: paper's weights: there is no data here to validate a change on.
MMSSL_PRESETS: Dict[str, Dict[str, object]] = {
    'tiktok': dict(_PAPER, id_weight=0.036, feature_weight=0.055),
    'baby': dict(_PAPER),
    'sports': dict(_PAPER),
}


class MMSSLEmbeddings(NamedTuple):
    r"""Everything one forward pass of :class:`MMSSL` computes."""
    user: Tensor  #: ``[U, d]`` final user representations :math:`\mathbf{u}`
    item: Tensor  #: ``[I, d]`` final item representations :math:`\mathbf{i}`
    #: per modality, ``[U, d]`` feature representations :math:`\mathbf{y}^u_m`
    feature_user: Dict[str, Tensor]
    #: per modality, ``[I, d]`` feature representations :math:`\mathbf{y}^i_m`
    feature_item: Dict[str, Tensor]
    #: per modality, ``[U, d]`` user ID views :math:`\mathbf{o}^u_m`
    id_user: Dict[str, Tensor]

    def detach(self) -> 'MMSSLEmbeddings':
        r"""The same representations, cut from the autograd graph."""
        return MMSSLEmbeddings(
            self.user.detach(), self.item.detach(),
            {m: y.detach() for m, y in self.feature_user.items()},
            {m: y.detach() for m, y in self.feature_item.items()},
            {m: o.detach() for m, o in self.id_user.items()})


class MMSSL(Recommender):
    r"""MMSSL: multi-modal self-supervised learning for recommendation.

    Propagation uses MMSSL's one-sided normalised graphs
    :math:`\mathbf{P} = \mathbf{D}_u^{-1/2}\mathbf{R}`,
    :math:`\mathbf{Q} = \mathbf{D}_i^{-1/2}\mathbf{R}^\top`
    (:class:`~pyg_mmrec.transforms.OneSidedNorm`,
    :class:`~pyg_mmrec.nn.conv.OneSidedNormConv`) and, per modality
    :math:`m`, the pair :math:`\mathbf{P}_m, \mathbf{Q}_m` of a generated
    graph :math:`\mathbf{R}_m` (initially :math:`\mathbf{R}`). With
    :math:`\mathbf{h}_m = \mathrm{dropout}(f_m(\mathbf{F}_m))`:

    .. math::
        \mathbf{y}^u_m &= \mathbf{P}\mathbf{h}_m, \quad
        \mathbf{y}^i_m = \mathbf{Q}\mathbf{y}^u_m, \quad
        \mathbf{o}^u_m = \mathbf{P}_m\mathbf{E}_i, \quad
        \mathbf{o}^i_m = \mathbf{Q}_m\mathbf{E}_u \\
        \mathbf{u}^0 &= \mathbf{E}_u + \gamma_{id}\,\mathrm{norm}\big(
        \mathrm{Att}(\{\mathbf{o}^u_m\}_m)\big), \quad
        \mathbf{i}^0 = \mathbf{E}_i + \gamma_{id}\,\mathrm{norm}\big(
        \mathrm{Att}(\{\mathbf{o}^i_m\}_m)\big) \\
        \mathbf{u}^l &= \mathbf{P}\mathbf{i}^{l-1}, \quad
        \mathbf{i}^l = \mathbf{Q}\mathbf{u}^l, \qquad
        \mathbf{u} = \frac{1}{L+1}\sum_{l=0}^{L}\mathbf{u}^l + \gamma_m
        \sum_m \mathrm{norm}(\mathbf{y}^u_m)

    (likewise :math:`\mathbf{i}`), where :math:`\mathrm{Att}` is the
    cross-modal multi-head attention averaged over modalities
    (:class:`~pyg_mmrec.nn.fusion.CrossModalAttention`). With
    :obj:`last_layer_softmax`, :math:`\mathbf{u}^L` and :math:`\mathbf{i}^L`
    are row-softmaxed (:math:`\mathbf{i}^L` is computed from the softmaxed
    :math:`\mathbf{u}^L`).

    Training, per BPR batch (:meth:`train_step`): with the preference rows
    :math:`\mathbf{S}_m` of the batch users
    (:func:`~pyg_mmrec.transforms.adversarial.preference_rows`) as fakes and
    the Gumbel-sharpened interaction rows
    (:func:`~pyg_mmrec.transforms.adversarial.gumbel_sharpen`) as reals, one
    WGAN-GP step of the discriminator (own Adam), then one step of the
    generator on :meth:`generator_loss`. Per epoch (:meth:`before_epoch`):
    regeneration of every :math:`\mathbf{R}_m` from the top items of
    :math:`\mathbf{S}_m` (:class:`~pyg_mmrec.transforms.AdversarialGraph`).
    No tensor of size users :math:`\times` items is ever built: preference
    rows exist for the batch users only and the graphs are rebuilt in user
    batches.

    Args:
        num_users (int): Number of users.
        num_items (int): Number of items.
        feature_channels (dict): Raw feature size per modality (any
            non-empty subset of ``visual``, ``acoustic``, ``textual``).
        config (MMSSLConfig, optional): Hyper-parameters (default:
            :obj:`MMSSLConfig()`).
    """
    def __init__(self, num_users: int, num_items: int,
                 feature_channels: Dict[str, int],
                 config: Optional[MMSSLConfig] = None) -> None:
        super().__init__(num_users, num_items)
        # A fresh default each time: the model keeps its config.
        config = MMSSLConfig() if config is None else config
        if not feature_channels:
            raise ValueError('MMSSL needs at least one item modality')
        self.config = config
        self.modalities: List[str] = list(feature_channels)
        d = config.embedding_dim
        self.user_emb = Parameter(torch.empty(num_users, d))
        self.item_emb = Parameter(torch.empty(num_items, d))
        self.projection = ModalityProjection(feature_channels, d, 'linear')
        self.conv = OneSidedNormConv()
        self.attention = CrossModalAttention(d, config.heads)
        dropout = (config.disc_dropout1, config.disc_dropout2)
        self.discriminator: Module
        if config.discriminator == 'paper':
            self.discriminator = Discriminator(num_items, dropout=dropout)
        else:
            self.discriminator = ProjectedDiscriminator(
                num_items, channels=d, hidden_channels=config.disc_hidden,
                dropout=dropout)
        self._disc_optimizer: Optional[torch.optim.Adam] = None
        # Per modality, the edges of the R_m last attached (None while
        # R_m = R): evaluation scores the model on them, so they are part
        # of the trained model and go into its extra state.
        self._generated_edges: Optional[Dict[str, Tensor]] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Re-initialises the model as it was built: weights drawn afresh
        from their initial distributions (not the weights of a new model
        under the same seed), and the training state it owns reset (the
        discriminator's optimiser, the generated
        :math:`\mathbf{R}_m`, back to :math:`\mathbf{R}`). Data already
        prepared still carries the old :math:`\mathbf{R}_m`: run
        :meth:`prepare` on it again."""
        torch.nn.init.xavier_uniform_(self.user_emb)
        torch.nn.init.xavier_uniform_(self.item_emb)
        self.projection.reset_parameters()
        self.attention.reset_parameters()
        self.discriminator.reset_parameters()
        self._disc_optimizer = None
        self._generated_edges = None

    # Graphs ##################################################################

    def _store_adjs(self, data: HeteroData, norm: OneSidedNorm) -> None:
        r"""Stores :math:`\mathbf{P}` and :math:`\mathbf{Q}` of the graph
        :obj:`norm` wrote for :class:`OneSidedNormConv`, as
        :obj:`user_adj` and :obj:`item_adj` of its ``(user, rel, item)``
        store, each as ``(adjacency, weights, (num_sources,
        num_targets))``: messages flow from items to users along
        :math:`\mathbf{P}` (the reverse edges) and from users to items
        along :math:`\mathbf{Q}`. The size is kept because a plain
        ``edge_index`` (the scatter backend) does not know it."""
        num_users, num_items = self.num_users, self.num_items
        backend = self.config.backend
        store, rev = data[norm.edge_type], data[norm.rev_edge_type]
        p, p_weight = to_adj(rev.edge_index, rev.edge_weight,
                             (num_items, num_users), backend=backend)
        q, q_weight = to_adj(store.edge_index, store.edge_weight,
                             (num_users, num_items), backend=backend)
        store[USER_ADJ] = (p, p_weight, (num_items, num_users))
        store[ITEM_ADJ] = (q, q_weight, (num_users, num_items))

    def generated_edge_type(self, modality: str) -> Tuple[str, str, str]:
        r"""The edge type holding :math:`\mathbf{R}_m` of :obj:`modality`
        (the one :class:`~pyg_mmrec.transforms.AdversarialGraph` writes,
        with :math:`\mathbf{Q}_m` as :obj:`edge_weight`)."""
        return (USER, f'{RELATION}_{modality}', ITEM)

    def generated_rev_edge_type(self, modality: str
                                ) -> Tuple[str, str, str]:
        r"""The reverse edge type of :meth:`generated_edge_type`, with
        :math:`\mathbf{P}_m` as :obj:`edge_weight` (:class:`OneSidedNorm`'s
        name for it)."""
        return OneSidedNorm(self.generated_edge_type(modality)).rev_edge_type

    @property
    def generated_edges(self) -> Optional[Dict[str, Tensor]]:
        r"""Per modality, the ``[2, U k]`` edges of the generated
        :math:`\mathbf{R}_m` the model last attached (or loaded from a
        checkpoint), or :obj:`None` while :math:`\mathbf{R}_m =
        \mathbf{R}`."""
        return self._generated_edges

    def _attach_graphs(self, data: HeteroData,
                       edges: Optional[Dict[str, Tensor]]) -> None:
        r"""Stores :math:`\mathbf{R}_m` of every modality, :obj:`edges`
        (generated edges as in :attr:`generated_edges`) or, with
        :obj:`None`, :math:`\mathbf{R}`, with :math:`\mathbf{P}_m,
        \mathbf{Q}_m`, and remembers the generated edges.

        The weights are written by :class:`OneSidedNorm`, as
        :class:`~pyg_mmrec.transforms.AdversarialGraph` writes them: they
        are the one-sided normalisation of the edges alone (in the
        representations' dtype), so they come out bit for bit the same, and
        a checkpoint need not hold them."""
        train = data[INTERACTS].edge_index
        for m in self.modalities:
            norm = OneSidedNorm(self.generated_edge_type(m),
                                dtype=self.user_emb.dtype)
            data[norm.edge_type].edge_index = (
                train if edges is None else edges[m].to(train.device))
            # forward(), not __call__: data is prepare()'s own copy, which
            # the graphs are attached to.
            norm.forward(data)
        self._adopt_graphs(data, generated=edges is not None)

    def _adopt_graphs(self, data: HeteroData, generated: bool) -> None:
        r"""Builds the adjacencies of the :math:`\mathbf{R}_m` that
        :obj:`data` holds in :class:`OneSidedNorm`'s layout, and remembers
        their edges if they were :obj:`generated`."""
        for m in self.modalities:
            self._store_adjs(data, OneSidedNorm(self.generated_edge_type(m)))
        self._generated_edges = None if not generated else {
            m: data[self.generated_edge_type(m)].edge_index
            for m in self.modalities
        }

    def prepare(self, data: HeteroData) -> HeteroData:
        r"""Adds :math:`\mathbf{P}, \mathbf{Q}` (on the training edge type
        and its reverse, in :class:`OneSidedNorm`'s layout, and as the
        adjacencies :obj:`user_adj` and :obj:`item_adj` of the training
        edge type) and likewise the modality graphs (edge types
        ``('user', 'adversarial_<m>', 'item')`` and their reverse
        ``('item', 'rev_adversarial_<m>', 'user')``): the generated
        :math:`\mathbf{R}_m` the model holds (:attr:`generated_edges`, e.g.
        loaded from a checkpoint), else the initial :math:`\mathbf{R}_m =
        \mathbf{R}`."""
        check_sizes(self, data)
        require_modalities(data, self.modalities)
        norm = OneSidedNorm(dtype=self.user_emb.dtype)
        data = norm(data)
        self._store_adjs(data, norm)
        self.store_train_csr(data)
        self._attach_graphs(data, self._generated_edges)
        return data

    # Forward #################################################################

    def _propagate(self, x: Tensor, adj: Tuple[object, object,
                                               Tuple[int, int]]) -> Tensor:
        return self.conv(x, adj[0], adj[1], size=adj[2])

    def embeddings(self, data: HeteroData) -> MMSSLEmbeddings:
        r"""One forward pass: the final representations and the
        per-modality views the losses need."""
        cfg = self.config
        train = data[INTERACTS]
        P, Q = train[USER_ADJ], train[ITEM_ADJ]
        projected = self.projection(
            {m: data['item'][m] for m in self.modalities})
        feature_user, feature_item, id_user, id_item = {}, {}, {}, {}
        for m in self.modalities:
            h = F.dropout(projected[m], cfg.feature_dropout, self.training)
            feature_user[m] = self._propagate(h, P)
            feature_item[m] = self._propagate(feature_user[m], Q)
            gen = data[self.generated_edge_type(m)]
            id_user[m] = self._propagate(self.item_emb, gen[USER_ADJ])
            id_item[m] = self._propagate(self.user_emb, gen[ITEM_ADJ])
        fused_user = self.attention(list(id_user.values()))
        fused_item = self.attention(list(id_item.values()))
        u = self.user_emb + cfg.id_weight * F.normalize(fused_user, dim=1)
        i = self.item_emb + cfg.id_weight * F.normalize(fused_item, dim=1)
        user_sum, item_sum = u, i
        for layer in range(cfg.num_layers):
            last = cfg.last_layer_softmax and layer == cfg.num_layers - 1
            u = self._propagate(i, P)
            if last:
                u = torch.softmax(u, dim=1)
            i = self._propagate(u, Q)
            if last:
                i = torch.softmax(i, dim=1)
            user_sum, item_sum = user_sum + u, item_sum + i
        user = user_sum / (cfg.num_layers + 1)
        item = item_sum / (cfg.num_layers + 1)
        user = user + cfg.feature_weight * sum(
            F.normalize(y, dim=1) for y in feature_user.values())
        item = item + cfg.feature_weight * sum(
            F.normalize(y, dim=1) for y in feature_item.values())
        return MMSSLEmbeddings(user, item, feature_user, feature_item,
                               id_user)

    def forward(self, data: HeteroData) -> Tuple[Tensor, Tensor]:
        emb = self.embeddings(data)
        return emb.user, emb.item

    # Adversarial pieces ######################################################

    @contextmanager
    def frozen_discriminator(self) -> Iterator[None]:
        r"""Within this context the discriminator's parameters take no
        gradients (the generator's adversarial loss must not train it)."""
        params = list(self.discriminator.parameters())
        flags = [p.requires_grad for p in params]
        self.discriminator.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

    def _preference(self, user_emb: Tensor, item_emb: Tensor,
                    users: Tensor) -> Tensor:
        rowptr, col = self.train_csr
        chunk = self.config.preference_chunk_size or None
        return preference_rows(user_emb.index_select(0, users), item_emb,
                               rowptr, col, users, chunk)

    def adversarial_rows(self, emb: MMSSLEmbeddings,
                         users: Tensor) -> Tuple[Tensor, Tensor]:
        r"""``(real, fake)`` for the (unique) batch users :obj:`users`:
        the fake rows :math:`[\mathbf{S}_m]_m`, ``[M |B|, I]``,
        differentiable in the generator, and the real rows, the perturbed
        interaction rows :math:`\tilde{\mathbf{r}}_B`, ``[|B|, I]``,
        constant (:meth:`discriminator_loss` repeats them per modality)."""
        cfg = self.config
        fake = torch.cat([
            self._preference(emb.feature_user[m], emb.feature_item[m], users)
            for m in self.modalities
        ])
        with torch.no_grad():
            rowptr, col = self.train_csr
            fused = self._preference(emb.user.detach(), emb.item.detach(),
                                     users)
            rows = interaction_rows(rowptr, col, users, self.num_items,
                                    dtype=fused.dtype)
            real = gumbel_sharpen(rows, fused, cfg.gumbel_eta,
                                  cfg.gumbel_temperature, cfg.kappa)
        return real, fake

    @property
    def projected_rows(self) -> bool:
        r"""Whether training feeds the discriminator projected rows
        (:meth:`adversarial_projections`) instead of ``[B, I]`` rows: with
        the projected discriminator, unless :obj:`dense_rows` is set or the
        Gumbel sharpening is not sparse
        (:func:`~pyg_mmrec.transforms.sparse_sharpening_is_exact`)."""
        cfg = self.config
        return (isinstance(self.discriminator, ProjectedDiscriminator)
                and not cfg.dense_rows and sparse_sharpening_is_exact(
                    cfg.gumbel_eta, cfg.gumbel_temperature,
                    self.item_emb.dtype))

    def adversarial_projections(self, emb: MMSSLEmbeddings, users: Tensor,
                                real: bool = True
                                ) -> Tuple[Optional[Tensor], Tensor]:
        r""":meth:`adversarial_rows` projected onto the projected
        discriminator's item embeddings, ``([|B|, c], [M |B|, c])``,
        computed without forming the rows; differentiable in the generator
        and the projection. With :obj:`real=False` only the fakes."""
        disc = self.discriminator
        if not isinstance(disc, ProjectedDiscriminator):
            raise RuntimeError('projected rows need the projected '
                               'discriminator')
        cfg = self.config
        rowptr, col = self.train_csr
        fake = torch.cat([
            projected_preference_rows(
                emb.feature_user[m].index_select(0, users),
                emb.feature_item[m], disc.projection, rowptr, col, users)[0]
            for m in self.modalities
        ])
        if not real:
            return None, fake
        real_rows = projected_real_rows(
            emb.user.detach().index_select(0, users), emb.item.detach(),
            disc.projection, rowptr, col, users, cfg.gumbel_eta,
            cfg.gumbel_temperature, cfg.kappa)
        return real_rows, fake

    def discriminator_loss(self, real: Tensor, fake: Tensor,
                           projected: bool = False
                           ) -> Tuple[Tensor, Dict[str, float]]:
        r""":math:`-\mathrm{mean}\,D(\text{real}) + \mathrm{mean}\,
        D(\text{fake}) + \mathrm{GP}` on detached rows, with the real rows
        repeated per modality to pair them with the fakes.

        :math:`\mathrm{mean}\,D(\text{real})` is taken over the
        un-repeated rows: repeating a batch changes neither its mean nor the
        BatchNorm statistics, so only the (random) dropout masks differ,
        and the discriminator's largest product is not computed twice.

        With :obj:`projected`, :obj:`real` and :obj:`fake` are the rows'
        projections (:meth:`adversarial_projections`); they stay
        differentiable in the discriminator's projection."""
        if not projected:
            real, fake = real.detach(), fake.detach()
        repeats = fake.size(0) // max(real.size(0), 1)
        if repeats * real.size(0) != fake.size(0):
            raise ValueError(f'fake has {fake.size(0)} rows, not a multiple '
                             f'of the {real.size(0)} real rows')
        disc = self.discriminator
        score = disc.score if projected else disc
        penalty = projected_gradient_penalty if projected else \
            gradient_penalty
        d_real = score(real).mean()
        d_fake = score(fake).mean()
        gp = penalty(disc, real.repeat(repeats, 1), fake,
                     self.config.gp_weight)
        loss = d_fake - d_real + gp
        return loss, {'d_real': d_real.item(), 'd_fake': d_fake.item(),
                      'gp': gp.item()}

    def generator_loss(self, emb: MMSSLEmbeddings, users: Tensor,
                       pos_items: Tensor, neg_items: Tensor,
                       batch_users: Tensor, fake: Optional[Tensor],
                       projected: bool = False
                       ) -> Tuple[Tensor, Dict[str, float]]:
        r"""BPR with the embedding regulariser, the feature regulariser, the
        contrastive loss of each modality's ID view against the fused user
        representation on :obj:`batch_users`, and (with :obj:`fake`, the
        differentiable :math:`[\mathbf{S}_m]_m`) the adversarial loss
        :math:`-\mathrm{mean}\,D([\mathbf{S}_m]_m)`; the discriminator is
        not trained by it. With :obj:`projected`, :obj:`fake` holds the
        rows' projections (:meth:`adversarial_projections`)."""
        cfg = self.config
        u, pos, neg = batch_embeddings(emb.user, emb.item, users, pos_items,
                                       neg_items)
        bpr = bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))
        reg = cfg.reg_weight * (u.pow(2).sum() + pos.pow(2).sum() +
                                neg.pow(2).sum()) / (2 * users.numel())
        feat_reg = cfg.feature_reg_weight * sum(
            emb.feature_user[m].pow(2).sum() + emb.feature_item[m].pow(2).sum()
            for m in self.modalities) / (2 * self.num_items)
        fused = emb.user.index_select(0, batch_users)
        cl = cfg.cl_weight * sum(
            grace_info_nce(emb.id_user[m].index_select(0, batch_users), fused,
                           cfg.cl_temperature) for m in self.modalities)
        loss = bpr + reg + feat_reg + cl
        parts = {'bpr': bpr.item(), 'reg': reg.item(),
                 'feat_reg': feat_reg.item(), 'cl': cl.item()}
        if fake is not None and cfg.adv_weight > 0:
            disc = self.discriminator
            with self.frozen_discriminator():
                score = disc.score(fake) if projected else disc(fake)
                adv = -cfg.adv_weight * score.mean()
            loss = loss + adv
            parts['adv'] = adv.item()
        return loss, parts

    def loss(self, data: HeteroData, users: Tensor, pos_items: Tensor,
             neg_items: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        r"""The generator's loss of a BPR batch against the current
        discriminator (see :meth:`generator_loss`)."""
        loss, parts, _ = self._batch_loss(data, users, pos_items, neg_items)
        return loss, parts

    def _batch_loss(self, data: HeteroData, users: Tensor, pos_items: Tensor,
                    neg_items: Tensor, train_discriminator: bool = False
                    ) -> Tuple[Tensor, Dict[str, float], Dict[str, float]]:
        r""":meth:`generator_loss` of a BPR batch on one forward pass, with
        the fakes of the batch's unique users (none for a batch that cannot
        take part in the adversarial game, :meth:`_adversarial_batch`).
        With :obj:`train_discriminator`, one discriminator step on the same
        pass comes first; its parts, with :obj:`'seconds_discriminator'`,
        the time spent on the discriminator's rows and step, are returned
        after the generator's loss and parts."""
        emb = self.embeddings(data)
        batch_users = torch.unique(users)
        projected = self.projected_rows
        device = self.user_emb.device
        # Timed only in training: on CUDA the clock synchronises.
        start = device_clock(device) if train_discriminator else 0.0
        fake: Optional[Tensor] = None
        d_parts: Dict[str, float] = {}
        adversarial = self._adversarial_batch(batch_users)
        if adversarial and projected:
            if train_discriminator:
                # The projections depend on the discriminator's parameters,
                # so its step projects detached representations (it must
                # not reach the generator) and the generator's fakes are
                # projected again, with the discriminator frozen.
                real, fake = self.adversarial_projections(emb.detach(),
                                                          batch_users)
                d_parts = self.discriminator_step(real, fake,
                                                  projected=True)
            with self.frozen_discriminator():
                _, fake = self.adversarial_projections(emb, batch_users,
                                                       real=False)
        elif adversarial:
            real, fake = self.adversarial_rows(emb, batch_users)
            if train_discriminator:
                d_parts = self.discriminator_step(real, fake)
        if train_discriminator:
            d_parts['seconds_discriminator'] = device_clock(device) - start
        loss, parts = self.generator_loss(emb, users, pos_items, neg_items,
                                          batch_users, fake, projected)
        return loss, parts, d_parts

    def _adversarial_batch(self, batch_users: Tensor) -> bool:
        r"""Whether the batch can take part in the adversarial game: the
        discriminator's BatchNorm needs at least two rows in training mode,
        and a final batch can hold a single user. Such a batch trains the
        generator without the adversarial term (and skips the
        discriminator's step)."""
        return batch_users.numel() >= 2 or not self.discriminator.training

    # Training recipe #########################################################

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        r"""AdamW over the generator's parameters (the discriminator has its
        own optimiser, :meth:`discriminator_optimizer`)."""
        generator = [p for name, p in self.named_parameters()
                     if not name.startswith('discriminator.')]
        return torch.optim.AdamW(generator, lr=lr,
                                 weight_decay=self.config.weight_decay)

    def discriminator_optimizer(self) -> torch.optim.Adam:
        r"""The discriminator's Adam, created on first use."""
        if self._disc_optimizer is None:
            cfg = self.config
            self._disc_optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=cfg.disc_lr,
                betas=(cfg.disc_beta1, cfg.disc_beta2))
        return self._disc_optimizer

    def _owned_optimizers(self) -> List[torch.optim.Optimizer]:
        return [] if self._disc_optimizer is None else [self._disc_optimizer]

    def discriminator_step(self, real: Tensor, fake: Tensor,
                           projected: bool = False) -> Dict[str, float]:
        r"""One Adam step of the discriminator on
        :meth:`discriminator_loss`; returns its parts (``'d_loss'`` is the
        total)."""
        optimizer = self.discriminator_optimizer()
        optimizer.zero_grad(set_to_none=True)
        loss, parts = self.discriminator_loss(real, fake, projected)
        loss.backward()
        optimizer.step()
        return {'d_loss': loss.item(), **parts}

    def train_step(self, data: HeteroData, batch: Batch,
                   optimizer: torch.optim.Optimizer) -> Dict[str, float]:
        r"""One discriminator step, then one generator step, both on the
        same forward pass (the discriminator sees its detached rows).
        Returns the loss parts: :obj:`'loss'` is the generator's total,
        :obj:`'d_loss'` the discriminator's; :obj:`'seconds_discriminator'`
        the time spent on the discriminator's rows and step; with
        :obj:`max_grad_norm`, :obj:`'grad_norm'` the generator's gradient
        norm before clipping."""
        loss, parts, d_parts = self._batch_loss(data, *batch,
                                                train_discriminator=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm > 0:
            params = [p for group in optimizer.param_groups
                      for p in group['params']]
            parts['grad_norm'] = float(torch.nn.utils.clip_grad_norm_(
                params, self.config.max_grad_norm))
        optimizer.step()
        return {'loss': loss.item(), **parts, **d_parts}

    @torch.no_grad()
    def regenerate_graphs(self, data: HeteroData) -> None:
        r"""Rebuilds every :math:`\mathbf{R}_m` (and :math:`\mathbf{P}_m,
        \mathbf{Q}_m`) from the current feature representations, without
        dropout, through :class:`~pyg_mmrec.transforms.AdversarialGraph`."""
        self.train_csr  # raises unless prepared
        was_training = self.training
        self.eval()
        try:
            emb = self.embeddings(data)
        finally:
            self.train(was_training)
        transform = AdversarialGraph(emb.feature_user, emb.feature_item,
                                     rate=self.config.graph_rate,
                                     batch_size=self.config.graph_batch_size,
                                     relation=RELATION)
        # forward(), not __call__: the graphs go into prepare()'s copy of
        # the data, with their weights from the same OneSidedNorm as those
        # of a checkpoint's edges (_attach_graphs).
        transform.forward(data)
        self._adopt_graphs(data, generated=True)

    def before_epoch(self, data: HeteroData, epoch: int, *,
                     progress: bool = False) -> Dict[str, float]:
        r"""Regenerates the modality graphs once per epoch, from the second
        epoch on (the first trains on :math:`\mathbf{R}_m = \mathbf{R}`).
        The regeneration is short (one product per modality), so it shows
        no progress bar."""
        device = self.user_emb.device
        start = device_clock(device)
        if epoch > 0:
            self.regenerate_graphs(data)
        return {'graph': device_clock(device) - start}

    def upgrade_state_dict(self, state_dict: Dict[str, Any]
                           ) -> Dict[str, Any]:
        r"""Renames the discriminator's parameters of checkpoints written
        before it used PyG's :class:`~torch_geometric.nn.models.MLP`: its
        output layer was ``mlp.out`` (now the last of ``mlp.lins``) and its
        batch norms had no ``.module`` (PyG's :class:`BatchNorm` wraps
        torch's). Same shapes and order, so the discriminator's optimiser
        state fits as it is."""
        last = len(self.discriminator.mlp.lins) - 1
        upgraded = {}
        for key, value in state_dict.items():
            key = re.sub(r'^discriminator\.mlp\.out\.',
                         f'discriminator.mlp.lins.{last}.', key)
            key = re.sub(r'^(discriminator\.mlp\.norms\.\d+)\.(?!module\.)',
                         r'\1.module.', key)
            upgraded[key] = value
        return upgraded

    def get_extra_state(self) -> dict:
        r"""The discriminator's optimiser state, once it exists, and the
        :attr:`generated_edges` of the last regeneration (the graphs an
        evaluation at that epoch used; their weights follow from them)."""
        state: dict = {}
        if self._disc_optimizer is not None:
            state['discriminator_optimizer'] = \
                self._disc_optimizer.state_dict()
        if self._generated_edges is not None:
            state['generated_edges'] = dict(self._generated_edges)
        return state

    def set_extra_state(self, state: dict) -> None:
        r"""Loads :meth:`get_extra_state`'s state. The generated edges
        are attached by the next :meth:`prepare` (a checkpoint without
        them, as written before they were saved, leaves
        :math:`\mathbf{R}_m = \mathbf{R}`)."""
        state = state or {}
        if 'discriminator_optimizer' in state:
            self.discriminator_optimizer().load_state_dict(
                state['discriminator_optimizer'])
        edges = state.get('generated_edges')
        if edges is not None:
            edges = self._check_generated_edges(edges)
        self._generated_edges = edges

    def _check_generated_edges(self, edges: dict) -> Dict[str, Tensor]:
        if not isinstance(edges, dict) or set(edges) != set(self.modalities):
            names = list(edges) if isinstance(edges, dict) else edges
            raise ValueError(f'the saved generated graphs are for modalities '
                             f'{names}, not {self.modalities}')
        for m, edge_index in edges.items():
            if not (isinstance(edge_index, Tensor) and edge_index.dim() == 2
                    and edge_index.size(0) == 2
                    and edge_index.dtype == torch.long):
                raise ValueError(f"the saved generated graph of '{m}' is not "
                                 f'a [2, E] tensor of user-item indices')
            if edge_index.numel() > 0 and (
                    int(edge_index.min()) < 0
                    or int(edge_index[0].max()) >= self.num_users
                    or int(edge_index[1].max()) >= self.num_items):
                raise ValueError(f"the saved generated graph of '{m}' has "
                                 f"nodes outside the model's "
                                 f'{self.num_users} users and '
                                 f'{self.num_items} items')
        return {m: edges[m] for m in self.modalities}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users}, '
                f'{self.num_items}, modalities={self.modalities}, '
                f'dim={self.config.embedding_dim}, '
                f'discriminator={self.config.discriminator})')


def build_mmssl(data: HeteroData, config: Optional[MMSSLConfig] = None,
                seed: int = 0) -> MMSSL:
    r""":class:`MMSSL` sized for :obj:`data` (all its modalities). The
    :obj:`seed` is unused (kept for the registry's builder signature): all
    randomness (initialisation, dropout, Gumbel noise, gradient-penalty
    mixing) comes from PyTorch's global generator, which the training
    command seeds."""
    num_users, num_items = num_users_items(data)
    channels = {m: int(data['item'][m].size(1)) for m in item_modalities(data)}
    return MMSSL(num_users, num_items, channels, config)
