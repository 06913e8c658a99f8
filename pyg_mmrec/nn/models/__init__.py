r"""Recommenders assembled from the library's layers and transforms."""
from pyg_mmrec.nn.models.base import (
    Recommender,
    batch_embeddings,
    check_sizes,
)
from pyg_mmrec.nn.models.lightgcn import (
    LightGCNConfig,
    LightGCNRecommender,
    MostPopular,
)
from pyg_mmrec.nn.models.diffmm import DiffMM, DiffMMConfig, build_diffmm
from pyg_mmrec.nn.models.mmssl import MMSSL, MMSSLConfig, build_mmssl

__all__ = [
    'Recommender', 'batch_embeddings', 'check_sizes', 'LightGCNConfig',
    'LightGCNRecommender', 'MostPopular', 'DiffMM', 'DiffMMConfig',
    'build_diffmm', 'MMSSL', 'MMSSLConfig', 'build_mmssl'
]
