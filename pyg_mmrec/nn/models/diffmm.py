r"""DiffMM (Jiang et al., ACM MM 2024), assembled from the library's layers,
building blocks and transforms."""
import math
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import ModuleDict, Parameter
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from pyg_mmrec.data.hetero import (
    INTERACTS,
    item_modalities,
    num_users_items,
    require_modalities,
)
from pyg_mmrec.errors import ConfigError, DivergenceError, check_config
from pyg_mmrec.nn.conv.modality_aware_conv import ModalityAwareConv
from pyg_mmrec.nn.conv.sym_norm_conv import SymNormConv
from pyg_mmrec.nn.denoiser import Denoiser
from pyg_mmrec.nn.diffusion import GaussianDiffusion
from pyg_mmrec.nn.losses import bpr_loss, info_nce
from pyg_mmrec.nn.models.base import (
    Recommender,
    batch_embeddings,
    check_sizes,
    device_clock,
)
from pyg_mmrec.nn.projection import ModalityProjection
from pyg_mmrec.nn.sparse import BACKENDS, to_adj
from pyg_mmrec.transforms.diffusion_graph import (
    DiffusionGraph,
    interaction_rows,
    native_bf16,
)
from pyg_mmrec.transforms.normalize import SymmetricNorm


@dataclass
class DiffMMConfig:
    r"""Hyper-parameters of :class:`DiffMM` (defaults: the paper's; the
    ``tiktok``, ``baby`` and ``sports`` presets override some).

    Args:
        embedding_dim (int): :math:`d`.
        num_layers (int): LightGCN layers :math:`L` on :math:`\mathbf{A}`.
        projection (str): ``'linear'`` (``trans=1``) or ``'leaky'``
            (``trans=0``) modality projection.
        lambda_adj (float): Weight of the generated-graph term in
            :math:`\mathbf{s}_m`.
        lambda_ris (float): Weight of the residual :math:`\mathrm{norm}(x)`.
        reg_weight (float): :math:`\lambda_{reg}` on the ID embeddings.
        ssl_weight (float): :math:`\lambda_{ssl}` of the contrastive views.
        temperature (float): InfoNCE temperature :math:`\tau`.
        cl_method (int): 1: main view vs each modality view; 0: all pairs
            of modality views (none with a single modality: no
            contrastive term then).
        keep_rate (float): Edge keep rate :math:`\rho` of the generated
            graphs.
        e_loss (float): :math:`\lambda_e`, weight of the modality-aware
            graph constraint in the diffusion loss.
        diffusion_steps (int): :math:`T`.
        noise_scale (float): :math:`s`.
        noise_min (float): :math:`v_{min}`.
        noise_max (float): :math:`v_{max}`.
        denoiser_hidden (int): Hidden size of each denoiser.
        time_channels (int): Size of the denoisers' time embedding.
        denoiser_lr (float): Adam learning rate of the denoisers.
        diffusion_batch_size (int): Users per diffusion training step.
        topk (int): Generated edges per user and modality.
        cl_chunk_size (int): Key chunk of the InfoNCE denominator.
        diffusion_bf16 (bool): Run the denoisers' training matrix products
            in bfloat16 autocast (weights, optimiser and loss stay float32)
            where the hardware multiplies bf16 natively (CPUs with
            AVX512-BF16 or AMX, GPUs of compute capability 8.0 or newer);
            about twice as fast there. Elsewhere, emulated bf16 would be
            slower than float32, so training stays in float32.
        backend (str): Sparse backend of the propagation
            (see :func:`pyg_mmrec.nn.sparse.to_adj`).
    """
    embedding_dim: int = 64
    num_layers: int = 1
    projection: str = 'linear'
    lambda_adj: float = 0.2
    lambda_ris: float = 0.5
    reg_weight: float = 1e-4
    ssl_weight: float = 1e-2
    temperature: float = 0.5
    cl_method: int = 1
    keep_rate: float = 0.5
    e_loss: float = 0.1
    diffusion_steps: int = 5
    noise_scale: float = 0.1
    noise_min: float = 1e-4
    noise_max: float = 0.02
    denoiser_hidden: int = 1000
    time_channels: int = 10
    denoiser_lr: float = 1e-3
    diffusion_batch_size: int = 1024
    topk: int = 1
    cl_chunk_size: int = 16384
    diffusion_bf16: bool = True
    backend: str = 'auto'

    def __post_init__(self) -> None:
        check_config(
            self,
            at_least_one=('embedding_dim', 'diffusion_steps',
                          'denoiser_hidden', 'time_channels',
                          'diffusion_batch_size', 'topk', 'cl_chunk_size'),
            positive=('temperature', 'noise_scale', 'noise_min',
                      'noise_max'),
            learning_rate=('denoiser_lr', ),
            non_negative=('num_layers', 'lambda_adj', 'lambda_ris',
                          'reg_weight', 'ssl_weight', 'e_loss'),
            fraction=('keep_rate', ),
            choices=dict(cl_method=(0, 1), projection=('linear', 'leaky'),
                         backend=BACKENDS))


#: The reference README's per-data-set settings (everything else default).
DIFFMM_PRESETS: Dict[str, Dict[str, object]] = {
    'tiktok': dict(projection='linear', reg_weight=1e-4, ssl_weight=1e-2,
                   e_loss=0.1, cl_method=1, keep_rate=0.5),
    'baby': dict(projection='leaky', reg_weight=1e-5, ssl_weight=1e-1,
                 e_loss=0.01, cl_method=0, keep_rate=1.0),
    'sports': dict(projection='linear', reg_weight=1e-6, ssl_weight=1e-2,
                   temperature=0.1, lambda_ris=0.1, e_loss=0.5, cl_method=0,
                   keep_rate=1.0),
}


class DiffMM(Recommender):
    r"""DiffMM: multi-modal diffusion for recommendation.

    Per modality :math:`m`, a denoiser :math:`g_m` learns to reconstruct
    users' interaction rows; its deterministic reverse process generates a
    modality user-item graph :math:`\mathbf{G}_m`
    (:class:`~pyg_mmrec.transforms.DiffusionGraph`). The recommender
    propagates, with :math:`\mathbf{h} = [\mathbf{E}_u; \mathbf{E}_i]` and
    :math:`\mathbf{p}_m = \mathrm{norm}(f_m(\mathbf{F}_m))`:

    .. math::
        \mathbf{s}_m &= \mathrm{ModalityAwareConv}(\mathbf{E}_u,
            \mathbf{E}_i, \mathbf{p}_m; \mathbf{A}, \mathbf{G}_m) \\
        \mathbf{x} &= \textstyle\sum_m \mathrm{softmax}(\mathbf{w})_m
            \mathbf{s}_m, \qquad
        \mathbf{e} = \textstyle\sum_{l=0}^{L} \mathbf{A}^l \mathbf{x} +
            \lambda_{ris} \mathrm{norm}(\mathbf{x})

    and the contrastive view of modality :math:`m` is
    :math:`\mathbf{z}_m = \sum_{l=0}^{L} \mathbf{A}^l \mathbf{G}_m
    [\mathbf{E}_u; \mathbf{p}_m]`.

    Training per epoch (:meth:`before_epoch`): diffusion training of every
    denoiser over all users (own Adam each), regeneration of every
    :math:`\mathbf{G}_m`; then BPR batches with the loss of :meth:`loss`.

    Args:
        num_users (int): Number of users.
        num_items (int): Number of items.
        feature_channels (dict): Raw feature size per modality (any
            non-empty subset of ``visual``, ``acoustic``, ``textual``).
        config (DiffMMConfig, optional): Hyper-parameters (default:
            :obj:`DiffMMConfig()`).
        seed (int): Seed of the diffusion training and edge dropping.
    """
    def __init__(self, num_users: int, num_items: int,
                 feature_channels: Dict[str, int],
                 config: Optional[DiffMMConfig] = None,
                 seed: int = 0) -> None:
        super().__init__(num_users, num_items)
        # A fresh default each time: the model keeps its config.
        config = DiffMMConfig() if config is None else config
        if not feature_channels:
            raise ValueError('DiffMM needs at least one item modality')
        if config.topk > num_items:
            raise ConfigError(f'topk={config.topk} exceeds the number of '
                              f'items ({num_items})')
        if config.cl_method == 0 and len(feature_channels) < 2:
            # cl_method=0 sums over unordered pairs of modality views: with
            # one modality the sum is empty and the term is 0.
            warnings.warn('cl_method=0 contrasts pairs of modality views; '
                          'with one modality there are none, so DiffMM '
                          'trains without the contrastive term')
        self.config = config
        self.modalities: List[str] = list(feature_channels)
        d = config.embedding_dim
        self.user_emb = Parameter(torch.empty(num_users, d))
        self.item_emb = Parameter(torch.empty(num_items, d))
        self.projection = ModalityProjection(feature_channels, d,
                                             config.projection)
        self.modality_logits = Parameter(torch.empty(len(self.modalities)))
        self.conv = SymNormConv()
        self.modality_conv = ModalityAwareConv(config.lambda_adj)
        self.diffusion = GaussianDiffusion(config.diffusion_steps,
                                           config.noise_scale,
                                           config.noise_min,
                                           config.noise_max)
        self.denoisers = ModuleDict({
            m: Denoiser(num_items, config.denoiser_hidden,
                        config.time_channels)
            for m in self.modalities
        })
        self.seed = seed
        # The epoch whose seed drew the current graphs' edge drops, saved
        # with the model so that a restored model rebuilds the same graphs.
        self.register_buffer('graph_epoch', torch.tensor(-1))
        # The edge type of each modality's generated graph, set when the
        # graphs are attached (:meth:`prepare`).
        self._generated_types: Dict[str, Tuple[str, str, str]] = {}
        self._denoiser_optimizers: Optional[Dict[str, torch.optim.Adam]] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Re-initialises the model as it was built: weights drawn afresh
        from their initial distributions (not the weights of a new model
        under the same seed), and the training state it owns reset (the
        denoisers' optimisers, the generated graphs' epoch)."""
        torch.nn.init.xavier_uniform_(self.user_emb)
        torch.nn.init.xavier_uniform_(self.item_emb)
        self.projection.reset_parameters()
        torch.nn.init.zeros_(self.modality_logits)  # uniform softmax
        for denoiser in self.denoisers.values():
            denoiser.reset_parameters()
        self.graph_epoch.fill_(-1)
        self._denoiser_optimizers = None

    # Graphs ##################################################################

    def _graph_transform(self, epoch: int) -> DiffusionGraph:
        generator = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return DiffusionGraph(self.diffusion, dict(self.denoisers),
                              k=self.config.topk,
                              keep_rate=self.config.keep_rate,
                              generator=generator)

    def _attach_generated(self, data: HeteroData, epoch: int) -> None:
        transform = self._graph_transform(epoch)
        generated = transform(data)
        self.graph_epoch.fill_(epoch)
        num_nodes = self.num_users + self.num_items
        for m in self.modalities:
            edge_type = transform.edge_type(m)
            store = generated[edge_type]
            for key in ('edge_index', 'edge_weight', 'adj_edge_index',
                        'adj_edge_weight'):
                data[edge_type][key] = store[key]
            # Dropping entries independently breaks symmetry. (Weights in
            # the denoisers' dtype, which is the embeddings'.)
            data[edge_type].adj = to_adj(store.adj_edge_index,
                                         store.adj_edge_weight,
                                         num_nodes,
                                         backend=self.config.backend)
        self._generated_types = {m: transform.edge_type(m)
                                 for m in self.modalities}

    def prepare(self, data: HeteroData) -> HeteroData:
        r"""Adds :math:`\mathbf{A}` (:class:`SymmetricNorm` on the training
        edge type, and as its adjacency :obj:`adj`), the training CSR, and
        the generated graphs :math:`\mathbf{G}_m` (edge types
        ``('user', 'diffusion_<m>', 'item')``) built from the denoisers as
        they are (e.g. loaded from a checkpoint) with the edge drops of
        :obj:`graph_epoch`."""
        check_sizes(self, data)
        require_modalities(data, self.modalities)
        # Weights in the embeddings' dtype (float64 for a model made
        # .double()).
        data = SymmetricNorm(dtype=self.user_emb.dtype)(data)
        store = data[INTERACTS]
        # (adjacency, weights): the weights are None for fused backends.
        store.adj = to_adj(store.adj_edge_index, store.adj_edge_weight,
                           self.num_users + self.num_items,
                           backend=self.config.backend, symmetric=True)
        self.store_train_csr(data)
        self._attach_generated(data, int(self.graph_epoch))
        return data

    # Forward #################################################################

    def _features(self, data: HeteroData) -> Dict[str, Tensor]:
        return {m: data['item'][m] for m in self.modalities}

    def _lightgcn_sum(self, x: Tensor, adj) -> Tensor:
        out = x
        for _ in range(self.config.num_layers):
            x = self.conv(x, *adj)
            out = out + x
        return out

    def embeddings(self, data: HeteroData,
                   with_views: bool = False
                   ) -> Tuple[Tensor, Dict[str, Tensor]]:
        r"""The main embeddings :math:`\mathbf{e}` (``[U + I, d]``) and, if
        :obj:`with_views`, the contrastive views :math:`\mathbf{z}_m`."""
        adj = data[INTERACTS].adj
        projected = self.projection(self._features(data))
        weights = torch.softmax(self.modality_logits, dim=0)
        x = 0
        views: Dict[str, Tensor] = {}
        for j, m in enumerate(self.modalities):
            p_m = F.normalize(projected[m], dim=1)
            gen_adj = data[self._generated_types[m]].adj
            s_m = self.modality_conv(
                self.user_emb, self.item_emb, p_m, edge_index=adj[0],
                edge_weight=adj[1], gen_edge_index=gen_adj[0],
                gen_edge_weight=gen_adj[1])
            x = x + weights[j] * s_m
            if with_views:
                c_m = self.conv(torch.cat([self.user_emb, p_m]), *gen_adj)
                views[m] = self._lightgcn_sum(c_m, adj)
        e = self._lightgcn_sum(x, adj)
        e = e + self.config.lambda_ris * F.normalize(x, dim=1)
        return e, views

    def forward(self, data: HeteroData) -> Tuple[Tensor, Tensor]:
        e, _ = self.embeddings(data)
        return e[:self.num_users], e[self.num_users:]

    # Losses ##################################################################

    def _contrastive(self, e: Tensor, views: Dict[str, Tensor],
                     users: Tensor, items: Tensor) -> Tensor:
        cfg = self.config
        U = self.num_users

        def pair(a: Tensor, b: Tensor) -> Tensor:
            return (info_nce(a[:U], b[:U], users, cfg.temperature,
                             cfg.cl_chunk_size, normalize=True) +
                    info_nce(a[U:], b[U:], items, cfg.temperature,
                             cfg.cl_chunk_size, normalize=True))

        if cfg.cl_method == 1:
            return sum(pair(e, views[m]) for m in self.modalities)
        return sum(
            pair(views[a], views[b]) for i, a in enumerate(self.modalities)
            for b in self.modalities[i + 1:])

    def loss(self, data: HeteroData, users: Tensor, pos_items: Tensor,
             neg_items: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        r""":math:`\mathcal{L}_{bpr} + \lambda_{reg}(\|\mathbf{E}_u\|^2 +
        \|\mathbf{E}_i\|^2) + \lambda_{ssl} \mathcal{L}_{views}`."""
        cfg = self.config
        contrast = cfg.ssl_weight > 0 and (cfg.cl_method == 1 or
                                           len(self.modalities) > 1)
        e, views = self.embeddings(data, with_views=contrast)
        # Items follow the users in e.
        u, pos, neg = batch_embeddings(e, e, users, self.num_users + pos_items,
                                       self.num_users + neg_items)
        bpr = bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))
        reg = cfg.reg_weight * (self.user_emb.pow(2).sum() +
                                self.item_emb.pow(2).sum())
        loss = bpr + reg
        parts = {'bpr': bpr.item(), 'reg': reg.item()}
        if contrast:
            cl = cfg.ssl_weight * self._contrastive(e, views, users,
                                                    pos_items)
            loss = loss + cl
            parts['cl'] = cl.item()
        return loss, parts

    # Per-epoch recipe ########################################################

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        r"""Adam over the recommender's parameters (the denoisers have their
        own optimisers, :meth:`denoiser_optimizers`)."""
        recommender = [p for name, p in self.named_parameters()
                       if not name.startswith('denoisers.')]
        return torch.optim.Adam(recommender, lr=lr)

    def denoiser_optimizers(self) -> Dict[str, torch.optim.Adam]:
        r"""One Adam per modality's denoiser (learning rate
        :obj:`denoiser_lr`), created on first use."""
        if self._denoiser_optimizers is None:
            self._denoiser_optimizers = {
                m: torch.optim.Adam(self.denoisers[m].parameters(),
                                    lr=self.config.denoiser_lr)
                for m in self.modalities
            }
        return self._denoiser_optimizers

    def _owned_optimizers(self) -> List[torch.optim.Optimizer]:
        return list((self._denoiser_optimizers or {}).values())

    def train_diffusion(self, data: HeteroData, epoch: int, *,
                        progress: bool = False) -> float:
        r"""One pass of diffusion training over all users for every
        modality; returns the mean loss. With :obj:`progress`, shows the
        batches on a terminal."""
        cfg = self.config
        optimizers = self.denoiser_optimizers()
        device = self.user_emb.device
        rowptr, col = self.train_csr
        # Noise is drawn where it is used: a [B, I] draw per step on the CPU
        # and its copy to a GPU would stall every step there. (So a GPU run
        # draws other numbers than a CPU run of the same seed.)
        gen_device = device if device.type == 'cuda' else torch.device('cpu')
        generator = torch.Generator(gen_device).manual_seed(
            self.seed * 7919 + epoch)
        # Emulated bf16 is slower than float32: autocast only where native.
        # (A model made .double() computes in float64: CPU autocast would
        # leave its float64 layers alone anyway, this says so explicitly.)
        dtype = self.user_emb.dtype
        bf16 = (cfg.diffusion_bf16 and native_bf16(device)
                and dtype == torch.float32)
        with torch.no_grad():
            targets = self.projection(self._features(data))
            item_emb = self.item_emb.detach()
        total, count = 0.0, 0
        step = cfg.diffusion_batch_size
        batches = math.ceil(self.num_users / step)
        with tqdm(total=batches * len(self.modalities), leave=False,
                  desc=f'epoch {epoch} diffusion',
                  disable=None if progress else True) as bar:
            for m in self.modalities:
                denoiser = self.denoisers[m]
                denoiser.train()
                perm = torch.randperm(self.num_users, generator=generator,
                                      device=gen_device)
                for start in range(0, self.num_users, step):
                    users = perm[start:start + step].to(col.device)
                    x0 = interaction_rows(rowptr, col, users,
                                          self.num_items, dtype=dtype)
                    with torch.autocast(x0.device.type,
                                        dtype=torch.bfloat16, enabled=bf16):
                        # Draws the steps t, then the noise, from
                        # `generator`.
                        loss = self.diffusion.training_loss(
                            denoiser, x0, item_emb=item_emb,
                            modality_emb=targets[m], lambda_e=cfg.e_loss,
                            generator=generator)
                    optimizers[m].zero_grad(set_to_none=True)
                    loss.backward()
                    optimizers[m].step()
                    total += loss.item()
                    count += 1
                    bar.update()
        return total / max(count, 1)

    def before_epoch(self, data: HeteroData, epoch: int, *,
                     progress: bool = False) -> Dict[str, float]:
        r"""Trains every denoiser for one pass over all users
        (:meth:`train_diffusion`, with a progress bar if
        :obj:`progress`), then regenerates every :math:`\mathbf{G}_m`
        from them; returns the seconds of both phases. Raises
        :class:`DivergenceError` if the diffusion loss is not finite."""
        device = self.user_emb.device
        start = device_clock(device)
        loss = self.train_diffusion(data, epoch, progress=progress)
        if not math.isfinite(loss):
            # NaN denoisers would generate garbage graphs silently.
            raise DivergenceError(
                f'the diffusion loss became {loss} at epoch {epoch}: the '
                f'denoisers diverged (check the scale of the item features, '
                f'or lower denoiser_lr)')
        middle = device_clock(device)
        self._attach_generated(data, epoch)
        end = device_clock(device)
        return {'diffusion': middle - start, 'graph': end - middle}

    def get_extra_state(self) -> dict:
        r"""The denoisers' optimiser states, once they exist (the graphs are
        not saved: :meth:`prepare` rebuilds them from the denoisers and
        :obj:`graph_epoch`)."""
        optimizers = self._denoiser_optimizers or {}
        return {m: opt.state_dict() for m, opt in optimizers.items()}

    def set_extra_state(self, state: dict) -> None:
        r"""Loads :meth:`get_extra_state`'s state into the denoisers'
        optimisers (an empty state leaves them to be created on first
        use)."""
        if state:
            optimizers = self.denoiser_optimizers()
            for m, opt_state in state.items():
                optimizers[m].load_state_dict(opt_state)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users}, '
                f'{self.num_items}, modalities={self.modalities}, '
                f'dim={self.config.embedding_dim})')


def build_diffmm(data: HeteroData, config: Optional[DiffMMConfig] = None,
                 seed: int = 0) -> DiffMM:
    r""":class:`DiffMM` sized for :obj:`data` (all its modalities)."""
    num_users, num_items = num_users_items(data)
    channels = {m: int(data['item'][m].size(1)) for m in item_modalities(data)}
    return DiffMM(num_users, num_items, channels, config, seed)
