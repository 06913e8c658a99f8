r"""Names that make up the bipartite :class:`~torch_geometric.data.HeteroData`
contract shared by every part of the library.

.. code-block:: text

    data['user'].num_nodes                    number of users U
    data['item'].num_nodes                    number of items I
    data['item'].visual / acoustic / textual  float32 [I, d_m] features
    data['user', 'interacts', 'item']
        .edge_index                           [2, E] training interactions
        .val_edge_index, .test_edge_index     [2, E'] held-out interactions

Edge indices are ``int64``, sorted by user then item, without duplicates.
"""
import warnings
from typing import Iterable, List, Tuple

from torch import Tensor
from torch_geometric.data import HeteroData

USER = 'user'
ITEM = 'item'
INTERACTS: Tuple[str, str, str] = (USER, 'interacts', ITEM)

#: Modality names in canonical order, and their feature file stems.
MODALITIES: Tuple[str, ...] = ('visual', 'acoustic', 'textual')
FEATURE_FILES = {
    'visual': 'image_feat.npy',
    'acoustic': 'audio_feat.npy',
    'textual': 'text_feat.npy',
}
SPLITS: Tuple[str, ...] = ('train', 'val', 'test')


def item_modalities(data: HeteroData) -> List[str]:
    r"""The modality names present on :obj:`data['item']`, in canonical
    order."""
    return [m for m in MODALITIES if m in data[ITEM]]


def require_modalities(data: HeteroData, names: Iterable[str]) -> None:
    r"""Raises :class:`ValueError` if :obj:`data['item']` lacks the features
    of a modality in :obj:`names`, or holds them other than as a
    floating-point ``[I, F]`` tensor."""
    present = item_modalities(data)
    num_items = None
    for name in names:
        if name not in present:
            raise ValueError(
                f"no item features for modality '{name}' (data has: "
                f"{', '.join(present) if present else 'none'})")
        if num_items is None:
            num_items = num_users_items(data)[1]
        feat = data[ITEM][name]
        if (not isinstance(feat, Tensor) or feat.dim() != 2
                or not feat.is_floating_point()):
            described = (f'{feat.dim()}-D {feat.dtype}' if isinstance(
                feat, Tensor) else type(feat).__name__)
            raise ValueError(f"item features of modality '{name}' must be "
                             f"a floating-point [items, F] tensor (got "
                             f"{described})")
        if feat.size(0) != num_items:
            raise ValueError(f"item features of modality '{name}' have "
                             f"{feat.size(0)} rows but the data has "
                             f"{num_items} items")


def _split_key(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (expected one of "
                         f"{', '.join(SPLITS)})")
    return 'edge_index' if split == 'train' else f'{split}_edge_index'


def has_split(data: HeteroData, split: str) -> bool:
    r"""Whether :obj:`data` holds the user-item edges of :obj:`split`."""
    key = _split_key(split)
    # `data[INTERACTS]` alone would add an empty edge type to the data.
    return INTERACTS in data.edge_types and key in data[INTERACTS]


def split_edge_index(data: HeteroData, split: str) -> Tensor:
    r"""The user-item edges of :obj:`split` (``'train'``, ``'val'`` or
    ``'test'``)."""
    key = _split_key(split)
    if not has_split(data, split):
        raise ValueError(f"data has no '{key}' for edge type {INTERACTS} "
                         f"(the {split} split)")
    return data[INTERACTS][key]


def num_users_items(data: HeteroData) -> Tuple[int, int]:
    r"""``(num_users, num_items)`` of :obj:`data`.

    Raises:
        ValueError: If :obj:`data['user'].num_nodes` or
            :obj:`data['item'].num_nodes` is neither set nor inferable (PyG
            infers it only from a few attributes such as :obj:`x`, not from
            modality features or edges).
    """
    counts = []
    for node_type, noun in ((USER, 'users'), (ITEM, 'items')):
        with warnings.catch_warnings():
            # PyG warns that it cannot infer the count: we raise instead.
            warnings.simplefilter('ignore', UserWarning)
            num_nodes = data[node_type].num_nodes
        if num_nodes is None:
            raise ValueError(
                f"data['{node_type}'].num_nodes is not set; set it to the "
                f"number of {noun} (data['{node_type}'].num_nodes = ...)")
        counts.append(int(num_nodes))
    return counts[0], counts[1]
