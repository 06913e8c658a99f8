r"""From raw tables to a multi-modal data set (``pyg-mmrec prepare``).

:func:`prepare` turns an interactions table and an item table into a folder
in the library's tabular layout that
:class:`~pyg_mmrec.data.MultiModalRecDataset` loads: implicit feedback,
k-core filtering, seeded splits, id mappings, item features per modality
and a ``recipe.json`` that :func:`rebuild` turns into the same bytes again.
:func:`dataset_statistics` and :func:`write_degree_plot` back
``pyg-mmrec info``.
"""
from pyg_mmrec.prepare.info import (
    dataset_statistics,
    feature_file_dtypes,
    format_statistics,
    write_degree_plot,
)
from pyg_mmrec.prepare.kcore import kcore_filter, kcore_mask
from pyg_mmrec.prepare.pipeline import (
    PrepareConfig,
    PrepareResult,
    prepare,
    prepare_dataset,
    rebuild,
)
from pyg_mmrec.prepare.split import (
    resolve_cold_items,
    split_interactions,
    split_sizes,
)

__all__ = [
    'PrepareConfig', 'PrepareResult', 'prepare', 'prepare_dataset',
    'rebuild', 'kcore_mask', 'kcore_filter', 'split_interactions',
    'split_sizes', 'resolve_cold_items', 'dataset_statistics',
    'feature_file_dtypes', 'format_statistics', 'write_degree_plot'
]
