r"""Data sets, readers, the synthetic generator and BPR sampling."""
from pyg_mmrec.data.hetero import (
    INTERACTS,
    ITEM,
    MODALITIES,
    USER,
    has_split,
    item_modalities,
    num_users_items,
    require_modalities,
    split_edge_index,
)
from pyg_mmrec.data.readers import RawInteractions, detect_layout, read_dataset
from pyg_mmrec.data.dataset import MultiModalRecDataset, to_hetero_data
from pyg_mmrec.data.sampling import BPRSampler
from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic

__all__ = [
    'USER', 'ITEM', 'INTERACTS', 'MODALITIES', 'item_modalities',
    'num_users_items', 'require_modalities', 'has_split',
    'split_edge_index',
    'RawInteractions', 'detect_layout', 'read_dataset',
    'MultiModalRecDataset', 'to_hetero_data', 'BPRSampler',
    'SyntheticConfig', 'make_synthetic'
]
