r"""Statistics of a data set (``pyg-mmrec info``) and its degree plot.

Both work on the :class:`~torch_geometric.data.HeteroData` of
:class:`~pyg_mmrec.data.MultiModalRecDataset` (see
:mod:`pyg_mmrec.data.hetero` for the contract). Degrees are counted on the
training edges, which is what a model sees; a user or item is *cold* in a
held-out split when it appears there with no training interaction.
"""
import math
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
from torch_geometric.data import HeteroData

from pyg_mmrec.data.hetero import (
    FEATURE_FILES,
    ITEM,
    SPLITS,
    item_modalities,
    num_users_items,
    split_edge_index,
)
from pyg_mmrec.io import atomic_path


def _degree_summary(degree: np.ndarray) -> Dict[str, Any]:
    if degree.size == 0:
        return {'min': 0, 'max': 0, 'mean': 0.0, 'median': 0.0, 'p90': 0.0,
                'p99': 0.0, 'zero': 0}
    return {
        'min': int(degree.min()),
        'max': int(degree.max()),
        'mean': float(degree.mean()),
        'median': float(np.median(degree)),
        'p90': float(np.percentile(degree, 90)),
        'p99': float(np.percentile(degree, 99)),
        'zero': int((degree == 0).sum()),
    }


def _train_degrees(data: HeteroData):
    num_users, num_items = num_users_items(data)
    edges = split_edge_index(data, 'train').cpu().numpy()
    return (np.bincount(edges[0], minlength=num_users),
            np.bincount(edges[1], minlength=num_items))


def _feature_summary(features: np.ndarray,
                     dtype: Optional[str] = None) -> Dict[str, Any]:
    # In float64: squares of large float32 features would overflow the
    # std and norms to inf, which JSON cannot hold.
    x = features.astype(np.float64)
    finite = np.isfinite(x)
    values = x[finite] if not finite.all() else x
    norms = np.linalg.norm(np.where(finite, x, 0.0), axis=1)
    return {
        'dim': int(x.shape[1]),
        'dtype': dtype or str(features.dtype),
        'mean': float(values.mean()) if values.size else math.nan,
        'std': float(values.std()) if values.size else math.nan,
        'min': float(values.min()) if values.size else math.nan,
        'max': float(values.max()) if values.size else math.nan,
        'mean_row_norm': float(norms.mean()) if norms.size else math.nan,
        'zero_rows': int((np.abs(np.where(finite, x, 0.0)).sum(axis=1)
                          == 0).sum()),
        'nonfinite_values': int((~finite).sum()),
    }


def feature_file_dtypes(root: str) -> Dict[str, str]:
    r"""The dtype of each modality's feature file in the data set folder
    :obj:`root`, read from the ``.npy`` headers (the data itself holds
    float32 whatever the files hold)."""
    dtypes = {}
    for modality, name in FEATURE_FILES.items():
        path = osp.join(root, name)
        if osp.isfile(path):
            dtypes[modality] = str(np.load(path, mmap_mode='r').dtype)
    return dtypes


def dataset_statistics(data: HeteroData,
                       file_dtypes: Optional[Mapping[str, str]] = None
                       ) -> Dict[str, Any]:
    r"""Statistics of a data set as a JSON-serialisable dict.

    Keys: ``num_users``, ``num_items``, ``interactions`` (per split and
    ``total``), ``density`` and ``sparsity`` (over all splits),
    ``degree`` (``user``/``item`` training-degree summaries: min, max,
    mean, median, p90, p99 and ``zero``, the count with no training
    interaction), ``cold`` (per held-out split: ``users``, ``items`` and
    ``interactions`` with no training interaction) and ``features``
    (per modality: dim, dtype, mean, std, min, max, mean row norm, zero
    rows, non-finite values).

    The features' ``dtype`` is that of the tensor in :obj:`data` (float32
    for a loaded data set), unless :obj:`file_dtypes` gives the dtype of the
    modality's file (:func:`feature_file_dtypes`).
    """
    num_users, num_items = num_users_items(data)
    counts = {s: int(split_edge_index(data, s).size(1)) for s in SPLITS}
    total = sum(counts.values())
    cells = num_users * num_items
    density = total / cells if cells else 0.0
    user_deg, item_deg = _train_degrees(data)

    cold: Dict[str, Dict[str, int]] = {}
    for split in SPLITS[1:]:
        edges = split_edge_index(data, split).cpu().numpy()
        cold_user = user_deg[edges[0]] == 0
        cold_item = item_deg[edges[1]] == 0
        cold[split] = {
            'users': int(np.unique(edges[0][cold_user]).size),
            'items': int(np.unique(edges[1][cold_item]).size),
            'interactions': int((cold_user | cold_item).sum()),
        }

    features = {}
    for modality in item_modalities(data):
        x = data[ITEM][modality].detach().cpu().numpy()
        features[modality] = _feature_summary(
            x, (file_dtypes or {}).get(modality))

    return {
        'num_users': num_users,
        'num_items': num_items,
        'interactions': {**counts, 'total': total},
        'density': density,
        'sparsity': 1.0 - density,
        'degree': {'user': _degree_summary(user_deg),
                   'item': _degree_summary(item_deg)},
        'cold': cold,
        'features': features,
    }


def format_statistics(stats: Dict[str, Any]) -> str:
    r"""A short human-readable report of :func:`dataset_statistics`."""
    n = stats['interactions']
    lines: List[str] = [
        f"users {stats['num_users']}, items {stats['num_items']}, "
        f"interactions {n['total']} (train {n['train']}, val {n['val']}, "
        f"test {n['test']})",
        f"density {stats['density']:.6f} (sparsity {stats['sparsity']:.4%})",
    ]
    for side in ('user', 'item'):
        d = stats['degree'][side]
        lines.append(
            f"{side} train degree: min {d['min']}, median {d['median']:g}, "
            f"mean {d['mean']:.2f}, p90 {d['p90']:g}, max {d['max']}, "
            f"without training interactions {d['zero']}")
    for split, c in stats['cold'].items():
        lines.append(f"cold in {split}: {c['users']} users, {c['items']} "
                     f"items, {c['interactions']} interactions")
    for modality, f in stats['features'].items():
        lines.append(
            f"{modality}: dim {f['dim']}, mean {f['mean']:.4g}, std "
            f"{f['std']:.4g}, range [{f['min']:.4g}, {f['max']:.4g}], mean "
            f"row norm {f['mean_row_norm']:.4g}, zero rows {f['zero_rows']}"
            + (f", non-finite {f['nonfinite_values']}"
               if f['nonfinite_values'] else ''))
    return '\n'.join(lines)


def write_degree_plot(data: HeteroData, path: str) -> None:
    r"""Writes a PNG with the user and item training-degree distributions
    (log-log: how many users/items have each degree) to :obj:`path`.

    Uses Matplotlib's Agg canvas directly (no pyplot), so it neither needs a
    display nor changes the global backend; written via a temporary file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    user_deg, item_deg = _train_degrees(data)
    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    for ax, degree, name in zip(fig.subplots(1, 2), (user_deg, item_deg),
                                ('users', 'items')):
        values, freq = np.unique(degree[degree > 0], return_counts=True)
        if values.size:
            ax.loglog(values, freq, 'o', markersize=3, alpha=0.8)
        else:
            ax.text(0.5, 0.5, 'no training interactions', ha='center',
                    va='center', transform=ax.transAxes)
        ax.set_xlabel('training interactions (degree)')
        ax.set_ylabel(f'number of {name}')
        zero = int((degree == 0).sum())
        ax.set_title(f'{name}: {degree.size} total'
                     + (f', {zero} with degree 0' if zero else ''))
        ax.grid(True, which='both', alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110)
