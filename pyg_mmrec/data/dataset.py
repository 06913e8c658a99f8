r"""The multi-modal recommendation data set as a PyG
:class:`~torch_geometric.data.InMemoryDataset`."""
import hashlib
import os
import os.path as osp
import shutil
import stat
import warnings
from functools import cached_property
from typing import Callable, List, Optional

import numpy as np
import torch
from torch_geometric.data import HeteroData, InMemoryDataset

from pyg_mmrec.data.hetero import INTERACTS, ITEM, USER
from pyg_mmrec.data.readers import (
    DIFFMM_FILES,
    FEATURE_FILES,
    MMSSL_FILES,
    RawInteractions,
    read_dataset,
    resolve_layout,
    tabular_path,
)
from pyg_mmrec.errors import ConfigError, DatasetError, OutputError, describe
from pyg_mmrec.io import atomic_path, folder_problem

#: Bumped whenever the readers' validation or cleaning changes.
CACHE_VERSION = 2


def to_hetero_data(raw: RawInteractions) -> HeteroData:
    r"""Converts :class:`RawInteractions` into the library's bipartite
    :class:`~torch_geometric.data.HeteroData`, unchecked: the readers
    have validated what they return."""
    data = HeteroData()
    data[USER].num_nodes = raw.num_users
    data[ITEM].num_nodes = raw.num_items
    for modality, features in raw.features.items():
        data[ITEM][modality] = torch.from_numpy(
            np.ascontiguousarray(features, dtype=np.float32))
    store = data[INTERACTS]
    store.edge_index = torch.from_numpy(raw.edges['train']).long()
    store.val_edge_index = torch.from_numpy(raw.edges['val']).long()
    store.test_edge_index = torch.from_numpy(raw.edges['test']).long()
    return data


def _default_processed_dir(root: str) -> str:
    # Shared data sets are often read-only: fall back to a per-user cache.
    # (root passes `os.access` on read-only folders, so check the mode too.)
    if os.access(root, os.W_OK) and os.stat(root).st_mode & stat.S_IWUSR:
        return osp.join(root, 'processed')
    digest = hashlib.sha1(osp.abspath(root).encode()).hexdigest()[:12]
    # An empty value counts as unset (it would mean the current folder).
    cache = os.environ.get('PYG_MMREC_CACHE') or osp.join(
        osp.expanduser('~'), '.cache', 'pyg_mmrec')
    return osp.join(cache, f'{osp.basename(osp.abspath(root))}-{digest}')


class MultiModalRecDataset(InMemoryDataset):
    r"""A multi-modal recommendation data set read from a folder in the
    DiffMM, MMSSL or tabular layout (see :mod:`pyg_mmrec.data.readers`).

    It holds one bipartite :class:`~torch_geometric.data.HeteroData` with
    node types ``'user'`` and ``'item'``, item features per modality
    (``data['item'].visual``, ``.acoustic``, ``.textual``) and the
    ``('user', 'interacts', 'item')`` training edges, with the validation and
    test edges in ``val_edge_index`` and ``test_edge_index``.

    Raw files are validated before anything is cached; bad input raises
    :class:`~pyg_mmrec.errors.DatasetError` naming the file and the problem.
    The processed cache is keyed by the raw files' sizes, modification and
    change times and inodes, and written to a temporary file that is then
    renamed; the caches of earlier versions of the files are then
    removed.

    Args:
        root (str): The folder holding the raw files.
        layout (str, optional): ``'diffmm'``, ``'mmssl'`` or ``'tabular'``;
            detected from the files present if :obj:`None`.
        processed_dir (str, optional): Where to cache the processed data.
            Defaults to ``root/processed``, or a per-user cache folder if
            :obj:`root` is not writable.
        transform (callable, optional): Applied on every access.
        pre_transform (callable, optional): Applied before caching.
        force_reload (bool, optional): Re-process even if cached.

    Attributes:
        notes (List[str]): Remarks on the raw files (removed duplicates,
            mostly unused ids, ...), each also issued as a
            :class:`UserWarning`, when the raw files are read. Empty when
            the data set comes from the cache: they were given when the
            cache was built (:obj:`force_reload=True` gives them again).
    """
    def __init__(
        self,
        root: str,
        layout: Optional[str] = None,
        processed_dir: Optional[str] = None,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        force_reload: bool = False,
    ) -> None:
        if not root:  # e.g. --dataset "$DATA" with DATA unset
            raise ConfigError('the data set folder is an empty path')
        root = osp.expanduser(root)
        if osp.exists(root) and not osp.isdir(root):
            raise DatasetError(root, 'is a file, not a data set folder')
        if not osp.isdir(root):  # before PyG would create it
            raise DatasetError(root, 'data set folder not found')
        self.layout = resolve_layout(root, layout)
        self._processed_dir = processed_dir or _default_processed_dir(root)
        self.notes: List[str] = []
        super().__init__(root, transform, pre_transform,
                         force_reload=force_reload, log=False)
        path = self.processed_paths[0]
        try:
            self.load(path, data_cls=HeteroData)
        except Exception as e:  # torch.load raises many types
            # The cache is derived data (an interrupted copy, a full disk):
            # rebuild it rather than fail.
            self._rebuild(path, e)
            self.load(path, data_cls=HeteroData)

    @property
    def raw_dir(self) -> str:
        # The data set's files sit in the folder itself (the DiffMM and
        # MMSSL layouts), not in PyG's default root/raw.
        return self.root

    @property
    def processed_dir(self) -> str:
        return self._processed_dir

    # Both names are worked out once per instance: PyG asks for them on
    # every access of raw_paths / processed_paths, and the cache key is then
    # that of the files as they were before they were read.
    @cached_property
    def raw_file_names(self) -> List[str]:
        if self.layout == 'diffmm':
            names = list(DIFFMM_FILES.values())
        elif self.layout == 'mmssl':
            names = list(MMSSL_FILES.values())
        else:
            names = [osp.basename(tabular_path(self.root))]
        return names + [
            name for name in FEATURE_FILES.values()
            if osp.isfile(osp.join(self.root, name))
        ]

    @cached_property
    def processed_file_names(self) -> List[str]:
        # Key the cache by the raw files, so edited inputs are re-validated,
        # and by the version of the checks, so that a cache written before a
        # check was added (of data it now rejects or cleans) is not reused.
        # The change time and inode catch a rewrite of the same size whose
        # modification time was kept or restored (`cp -p`, `touch -r`): on
        # POSIX systems no one can set the change time back. (A chmod or a
        # copy of the files also changes them, and so re-processes.)
        digest = hashlib.sha1(f'{self.layout}:{CACHE_VERSION}'.encode())
        for path in self.raw_paths:
            try:
                st = os.stat(path)
            except OSError:  # missing: download() names it
                continue
            if stat.S_ISREG(st.st_mode):
                digest.update(f'{path}:{st.st_size}:{st.st_mtime_ns}:'
                              f'{st.st_ctime_ns}:{st.st_ino}'.encode())
        return [f'data_{digest.hexdigest()[:16]}.pt']

    def download(self) -> None:
        missing = [p for p in self.raw_paths if not osp.isfile(p)]
        raise DatasetError(
            missing[0] if missing else self.root,
            'file not found; pyg_mmrec does not download data sets: place '
            'the interaction files and at least one *_feat.npy file in '
            'this folder')

    def _rebuild(self, path: str, error: BaseException) -> None:
        r"""Re-processes the raw files after the cache file :obj:`path`
        failed to load with :obj:`error`, with a warning."""
        warnings.warn(f'{path}: the processed cache cannot be read '
                      f'({describe(error)}); rebuilding it from the raw '
                      f'files', stacklevel=3)
        self.force_reload = True
        self._process()

    def _process(self) -> None:
        # PyG reads these two files (the pre-transform/filter records)
        # before anything else: one that cannot be read means a corrupt
        # cache, which is rebuilt (and the files rewritten).
        for name in ('pre_transform.pt', 'pre_filter.pt'):
            path = osp.join(self.processed_dir, name)
            if self.force_reload or not osp.exists(path):
                continue
            try:
                torch.load(path, weights_only=True)
            except Exception as e:  # torch.load raises many types
                self._rebuild(path, e)
                return
        created = not osp.isdir(self.processed_dir)
        try:
            super()._process()
        except BaseException as e:
            if created:  # leave no empty cache folder behind
                shutil.rmtree(self.processed_dir, ignore_errors=True)
            if isinstance(e, OSError) and not isinstance(e, OutputError) \
                    and self._in_cache(e.filename):
                # PyG creates the folder and writes its records itself:
                # a cache path under a file, or a read-only one, ends here.
                # "File exists" or "Not a directory" do not say which path
                # is in the way; folder_problem names it.
                problem = folder_problem(self.processed_dir)
                raise OutputError(
                    self.processed_dir,
                    f'the processed cache cannot be written: {problem}'
                    if problem else f'the processed cache cannot be written '
                    f'({e.strerror or describe(e)})') from None
            raise

    def _in_cache(self, path: object) -> bool:
        # The cache folder, a path in it, or a parent folder that could not
        # be made on the way to it (one that exists, e.g. the data set
        # folder, is not the cache's).
        if not isinstance(path, str):
            return False
        cache, path = osp.abspath(self.processed_dir), osp.abspath(path)
        common = osp.commonpath([cache, path])
        return common == cache or (common == path and not osp.exists(path))

    def process(self) -> None:
        raw = read_dataset(self.root, self.layout)
        self.notes = raw.notes
        data = to_hetero_data(raw)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        with atomic_path(self.processed_paths[0]) as tmp:
            self.save([data], tmp)
        self._remove_stale_caches()

    def _remove_stale_caches(self) -> None:
        # Caches of earlier versions of the raw files would otherwise pile
        # up, a full copy of the data set each. (A process still reading
        # one that vanishes rebuilds it, with a warning.)
        current = osp.basename(self.processed_paths[0])
        for name in os.listdir(self.processed_dir):
            if name.startswith('data_') and name.endswith('.pt') \
                    and name != current:
                try:
                    os.remove(osp.join(self.processed_dir, name))
                except OSError:  # another process removed it first
                    pass

    @property
    def num_users(self) -> int:
        return int(self._data[USER].num_nodes)

    @property
    def num_items(self) -> int:
        return int(self._data[ITEM].num_nodes)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({osp.basename(self.root)}, '
                f'layout={self.layout}, users={self.num_users}, '
                f'items={self.num_items})')
