r"""Layers and building blocks of multi-modal recommenders."""
from pyg_mmrec.nn.conv import ModalityAwareConv, OneSidedNormConv, SymNormConv
from pyg_mmrec.nn.sparse import (
    BACKENDS,
    DEFAULT_BACKEND,
    SparseAdj,
    SparseAdjMM,
    resolve_backend,
    sparse_matmul,
    sym_norm_adj,
    to_adj,
)
from pyg_mmrec.nn.projection import ModalityProjection
from pyg_mmrec.nn.denoiser import Denoiser, ReverseFold, timestep_embedding
from pyg_mmrec.nn.diffusion import GaussianDiffusion
from pyg_mmrec.nn.fusion import CrossModalAttention
from pyg_mmrec.nn.adversarial import (
    Discriminator,
    ProjectedDiscriminator,
    gradient_penalty,
    projected_gradient_penalty,
)
from pyg_mmrec.nn.losses import BPRLoss, bpr_loss, grace_info_nce, info_nce

__all__ = [
    'SymNormConv', 'OneSidedNormConv', 'ModalityAwareConv', 'SparseAdj',
    'SparseAdjMM', 'to_adj', 'sym_norm_adj', 'sparse_matmul',
    'resolve_backend', 'BACKENDS', 'DEFAULT_BACKEND', 'ModalityProjection',
    'Denoiser', 'ReverseFold', 'timestep_embedding', 'GaussianDiffusion',
    'CrossModalAttention', 'Discriminator', 'ProjectedDiscriminator',
    'gradient_penalty', 'projected_gradient_penalty', 'BPRLoss', 'bpr_loss',
    'grace_info_nce', 'info_nce'
]
