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
from pyg_mmrec.nn.models.diffmm import (
    DIFFMM_PRESETS,
    DiffMM,
    DiffMMConfig,
    build_diffmm,
)
from pyg_mmrec.nn.models.mmssl import (
    MMSSL,
    MMSSL_PRESETS,
    MMSSLConfig,
    MMSSLEmbeddings,
    build_mmssl,
)

__all__ = [
    'Recommender', 'batch_embeddings', 'check_sizes', 'LightGCNConfig',
    'LightGCNRecommender', 'MostPopular', 'DiffMM', 'DiffMMConfig',
    'DIFFMM_PRESETS', 'build_diffmm', 'MMSSL', 'MMSSLConfig',
    'MMSSL_PRESETS', 'MMSSLEmbeddings', 'build_mmssl'
]
