r"""DiffMM's diffusion-generated modality graphs as a transform."""
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Module
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import sort_edge_index

from pyg_mmrec.data.hetero import (
    INTERACTS,
    ITEM,
    USER,
    num_users_items,
    require_modalities,
)
from pyg_mmrec.graph import (
    check_user_item_edges,
    csr_row_entries,
    sorted_index2ptr,
    sym_norm_bipartite,
    unique_csr_rows,
)
from pyg_mmrec.nn.denoiser import Denoiser
from pyg_mmrec.nn._random import sample_on_generator
from pyg_mmrec.nn.diffusion import GaussianDiffusion
from pyg_mmrec.nn.sparse import csr_tensor


def interaction_rows(rowptr: Tensor, col: Tensor, index: Tensor,
                     num_items: int, dtype: torch.dtype = torch.float32,
                     layout: torch.layout = torch.strided) -> Tensor:
    r"""The binary interaction rows :math:`\mathbf{R}_B` of the users
    :obj:`index`, ``[B, I]``, built from the CSR of the training edges
    (:func:`~pyg_mmrec.graph.csr_of`) in one scatter. The edges must be
    distinct (see :func:`~pyg_mmrec.graph.check_user_item_edges`): the
    sparse layout would sum a repeated one.

    Args:
        rowptr (Tensor): ``[U + 1]`` CSR row pointer.
        col (Tensor): ``[E]`` item ids.
        index (Tensor): ``[B]`` user ids.
        num_items (int): Row length :math:`I`.
        dtype (torch.dtype): dtype of the rows.
        layout (torch.layout): :obj:`torch.strided` (dense) or
            :obj:`torch.sparse_csr`.
    """
    ptr, row, cols = csr_row_entries(rowptr, col, index, what='user id')
    if cols.numel():
        # A column beyond the row would make an invalid sparse matrix,
        # read out of bounds by later products.
        smallest, largest = torch.stack(torch.aminmax(cols)).tolist()
        if smallest < 0 or largest >= num_items:
            bad = smallest if smallest < 0 else largest
            raise ValueError(f"'col' holds item id {bad}, outside the "
                             f"{num_items} items 0..{num_items - 1}")
    if layout == torch.sparse_csr:
        values = torch.ones(cols.numel(), dtype=dtype, device=col.device)
        return csr_tensor(ptr, cols, values, (index.numel(), num_items))
    if layout != torch.strided:
        raise ValueError(f'layout must be torch.strided or torch.sparse_csr, '
                         f'got {layout}')
    out = torch.zeros(index.numel(), num_items, dtype=dtype,
                      device=col.device)
    out[row, cols] = 1.0
    return out


def _cpu_has_native_bf16() -> bool:
    # Older torch releases lack these probes; their CPUs count as emulating
    # bf16, which only costs speed.
    checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def native_bf16(device: torch.device) -> bool:
    r"""Whether :obj:`device` multiplies bfloat16 natively: a CUDA GPU of
    compute capability 8.0 or newer, or a CPU with AVX512-BF16 or AMX.
    Elsewhere bf16 products are emulated, slower than float32."""
    if device.type == 'cuda':
        # Tensor cores with bf16 arrived with Ampere (compute capability
        # 8.0); older GPUs emulate it, or fail in cuBLAS.
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == 'cpu' and _cpu_has_native_bf16()


def default_screen_dtype(device: torch.device) -> Optional[torch.dtype]:
    r"""bfloat16 where it is native (:func:`native_bf16`), else
    :obj:`None`. With the certified bound of
    :meth:`~pyg_mmrec.nn.Denoiser.decode_topk` every TikTok row is settled
    by the screen, and the decode takes 0.41 s instead of 1.01 s per
    denoiser on 2 AVX512-BF16 cores."""
    return torch.bfloat16 if native_bf16(device) else None


def _param_dtype(denoiser: Module) -> torch.dtype:
    # The dtype of the denoiser's parameters (float64 for a model made
    # .double()): the rows and the graph's weights follow it.
    param = next(denoiser.parameters(), None)
    return torch.float32 if param is None else param.dtype


@torch.no_grad()
def diffusion_topk_edges(
    diffusion: GaussianDiffusion,
    denoiser: Module,
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    k: int = 1,
    batch_size: int = 2048,
    screen_dtype: Union[str, torch.dtype, None] = 'auto',
    hidden_dtype: Optional[torch.dtype] = None,
) -> Tensor:
    r"""The user-item edges of DiffMM's generated graph: for every user the
    :obj:`k` items with the largest entries of
    :meth:`GaussianDiffusion.reverse` started from the user's interaction
    row. Distinct rows are processed in batches of :obj:`batch_size` (users
    with the same training items share one run) with dropout
    off; the training mode of :obj:`denoiser` is restored afterwards.

    For a :class:`~pyg_mmrec.nn.Denoiser` the process runs in its hidden
    space (:meth:`~pyg_mmrec.nn.Denoiser.reverse_hidden`) and the items are
    screened in :obj:`screen_dtype` with exact rescoring and a certified
    error bound (:meth:`~pyg_mmrec.nn.Denoiser.decode_topk`), so the result
    is the full-precision top-:obj:`k`. :obj:`'auto'` screens in bfloat16
    where the hardware computes it natively (:func:`native_bf16`: a CUDA GPU
    of compute capability 8.0 or newer, or a CPU with AVX512-BF16 / AMX);
    :obj:`None` disables screening. :obj:`hidden_dtype` (e.g.
    :obj:`torch.bfloat16`) runs the hidden-space steps in low precision:
    faster, but no longer exact (see the benchmark for the agreement).

    Returns:
        ``[2, U * k]`` edges sorted by user, then by decreasing score.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f'k must be an integer >= 1, got {k!r}')
    if k > num_items:
        raise ValueError(f'k must be at most the number of items '
                         f'({num_items}), got {k}')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    if isinstance(denoiser, Denoiser) and denoiser.num_items != num_items:
        raise ValueError(f'the denoiser scores {denoiser.num_items} items '
                         f'but the graph has {num_items}')
    check_user_item_edges(edge_index, num_users, num_items, distinct=True)
    param = next(denoiser.parameters(), None)
    device = param.device if param is not None else edge_index.device
    dtype = _param_dtype(denoiser)
    # Each row's items in ascending order: the first layer sums a row's
    # entries in storage order, so users merged below as equal rows must
    # store them alike (and the result must not depend on the edge order).
    # int64 keys: user * num_nodes + item overflows int32 on large graphs.
    edges = sort_edge_index(edge_index.to(device).long(),
                            num_nodes=max(num_users, num_items))
    rowptr, col = sorted_index2ptr(edges[0], num_users), edges[1]
    was_training = denoiser.training
    denoiser.eval()
    try:
        # Fold the weights once for all batches (Denoiser's fast path).
        fold = None
        if isinstance(denoiser, Denoiser):
            if screen_dtype == 'auto':
                screen_dtype = default_screen_dtype(device)
            fold = diffusion.fold(denoiser, screen_dtype, hidden_dtype)
        # The process is deterministic, so users with the same training
        # items get the same top-k: run it once per distinct row (on TikTok
        # 6,753 rows for 9,308 users, most of whom have 1-3 items).
        first, inverse = unique_csr_rows(rowptr, col)
        tops = []
        for start in range(0, first.numel(), batch_size):
            rows = interaction_rows(rowptr, col,
                                    first[start:start + batch_size],
                                    num_items, dtype=dtype,
                                    layout=torch.sparse_csr)
            tops.append(diffusion.reverse_topk(denoiser, rows, k, fold=fold))
    finally:
        denoiser.train(was_training)
    top = torch.cat(tops, dim=0)[inverse].to(edge_index.device)
    user = torch.arange(num_users, device=edge_index.device)
    return torch.stack([user.repeat_interleave(k), top.reshape(-1)])


class DiffusionGraph(BaseTransform):
    r"""Rebuilds DiffMM's diffusion-generated user-item graph
    :math:`\mathcal{G}_m` of every modality :math:`m`.

    For every user :math:`u` the deterministic reverse process of
    :obj:`diffusion` runs from :math:`\mathbf{x}_T := \mathbf{R}_u` with the
    denoiser :math:`g_m`, and the top-:math:`k` items of the result become
    the edges :math:`\mathbf{R}^{(m)}` (:math:`U k` edges). The propagation
    matrix is normalised like :math:`\mathbf{A}` and then sparsified:

    .. math::
        \mathbf{G}_m = \frac{1}{\rho}\, \mathbf{M} \odot \mathbf{D}^{-1/2}
        \Big(\begin{bmatrix} 0 & \mathbf{R}^{(m)} \\ \mathbf{R}^{(m)\top} & 0
        \end{bmatrix} + \mathbf{I}\Big) \mathbf{D}^{-1/2},
        \qquad \mathbf{M}_{ab} \sim \mathrm{Bernoulli}(\rho)

    where every stored entry (both directions of each edge and each
    self-loop) is kept independently with the keep rate :math:`\rho`.

    For each modality :obj:`m` the edge type
    ``('user', f'{relation}_{m}', 'item')`` gets:

    * :obj:`edge_index` ``[2, U k]``: the raw top-:math:`k` user-item edges
      (item ids from 0), sorted by user, then by decreasing score;
    * :obj:`edge_weight` ``[U k]``: each edge's symmetric normalised weight
      :math:`\mathbf{D}^{-1/2}_{uu} \mathbf{D}^{-1/2}_{ii}` (before dropping;
      the same in both directions);
    * :obj:`adj_edge_index` ``[2, N']`` and :obj:`adj_edge_weight`
      ``[N']``: :math:`\mathbf{G}_m` on the homogeneous graph of
      ``U + I`` nodes (users ``0..U-1``, items ``U..U+I-1``, the layout of
      :func:`~pyg_mmrec.graph.sym_norm_bipartite`) after dropping and
      rescaling; this is what the propagation :math:`\mathbf{G}_m
      \mathbf{h}` uses (``flow='source_to_target'``: row 0 is the source).
      Homogeneous ids: see the note on batching of
      :class:`~pyg_mmrec.transforms.SymmetricNorm`.

    The weights are computed in the dtype of each denoiser's parameters.
    The transform shallow-copies the data (:class:`BaseTransform`) and draws
    its randomness (edge dropping only) from :obj:`generator`, so a fixed
    generator state gives the same graphs.

    Args:
        diffusion (GaussianDiffusion): The schedule.
        denoisers (Mapping[str, Module]): A trained denoiser per modality;
            every name must be a modality present on :obj:`data['item']`.
        k (int): Items per user (default: :obj:`1`).
        keep_rate (float): :math:`\rho \in (0, 1]` (default: :obj:`1.0`).
        batch_size (int): Distinct interaction rows per batch (users with
            the same training items share one run; default: :obj:`2048`).
        relation (str): Prefix of the edge type's relation
            (default: :obj:`'diffusion'`).
        generator (torch.Generator, optional): Randomness of the drop.
        screen_dtype (str or torch.dtype, optional): Low-precision screening
            of the top-:math:`k` (exact result), see
            :func:`diffusion_topk_edges` (default: :obj:`'auto'`).
        hidden_dtype (torch.dtype, optional): Low-precision hidden-space
            steps (approximate), see :func:`diffusion_topk_edges`.
    """
    def __init__(
        self,
        diffusion: GaussianDiffusion,
        denoisers: Mapping[str, Module],
        k: int = 1,
        keep_rate: float = 1.0,
        batch_size: int = 2048,
        relation: str = 'diffusion',
        generator: Optional[torch.Generator] = None,
        screen_dtype: Union[str, torch.dtype, None] = 'auto',
        hidden_dtype: Optional[torch.dtype] = None,
    ) -> None:
        if len(denoisers) == 0:
            raise ValueError('denoisers must name at least one modality')
        if not isinstance(k, int) or k < 1:
            raise ValueError(f'k must be an integer >= 1, got {k!r}')
        if not 0.0 < keep_rate <= 1.0:
            raise ValueError(f'keep_rate must be in (0, 1], got {keep_rate}')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.diffusion = diffusion
        self.denoisers: Dict[str, Module] = dict(denoisers)
        self.k = k
        self.keep_rate = keep_rate
        self.batch_size = batch_size
        self.relation = relation
        self.generator = generator
        self.screen_dtype = screen_dtype
        self.hidden_dtype = hidden_dtype

    def edge_type(self, modality: str) -> Tuple[str, str, str]:
        r"""The edge type that holds the graph of :obj:`modality`."""
        return (USER, f'{self.relation}_{modality}', ITEM)

    def forward(self, data: HeteroData) -> HeteroData:
        require_modalities(data, self.denoisers)
        num_users, num_items = num_users_items(data)
        edge_index = data[INTERACTS].edge_index
        for name, denoiser in self.denoisers.items():
            try:
                gen_index = diffusion_topk_edges(
                    self.diffusion, denoiser, edge_index, num_users,
                    num_items, self.k, self.batch_size, self.screen_dtype,
                    self.hidden_dtype)
            except ValueError as e:
                raise ValueError(f"modality '{name}': {e}") from None
            adj_index, adj_weight = sym_norm_bipartite(
                gen_index, num_users, num_items,
                dtype=_param_dtype(denoiser))
            store = data[self.edge_type(name)]
            store.edge_index = gen_index
            store.edge_weight = adj_weight[:gen_index.size(1)]
            if self.keep_rate < 1.0:
                # dropout_edge's mask, drawn from the transform's own
                # generator (dropout_edge takes none: the global RNG would
                # tie the graph to whatever drew before it).
                keep = sample_on_generator(
                    torch.rand, adj_weight.numel(), generator=self.generator,
                    device=adj_weight.device) < self.keep_rate
                adj_index = adj_index[:, keep]
                adj_weight = adj_weight[keep] / self.keep_rate
            store.adj_edge_index = adj_index
            store.adj_edge_weight = adj_weight
        return data

    def __repr__(self) -> str:
        # Every option that changes the output: PyG warns when a data set's
        # cache was made with a pre_transform of another repr. screen_dtype
        # is left out (the screened top-k is exact), and so is an unset
        # hidden_dtype, so that the repr of the default stays as it was.
        hidden = ('' if self.hidden_dtype is None else
                  f', hidden_dtype={self.hidden_dtype}')
        return (f'{self.__class__.__name__}('
                f"modalities=[{', '.join(self.denoisers)}], k={self.k}, "
                f'keep_rate={self.keep_rate}, relation={self.relation!r}'
                f'{hidden})')
