r"""Readers for the supported on-disk layouts, with input validation.

Every reader returns a :class:`RawInteractions` after checking it, and raises
:class:`~pyg_mmrec.errors.DatasetError` naming the file and the problem on
bad input. Nothing is written here.

Layouts (detected from the files present, see :func:`detect_layout`):

* ``diffmm``: ``trnMat.pkl``, ``valMat.pkl``, ``tstMat.pkl`` (pickled SciPy
  sparse user x item matrices);
* ``mmssl``: ``train.json``, ``val.json``, ``test.json`` (``{user: [items]}``);
* ``tabular``: ``interactions.csv`` or ``interactions.parquet`` with
  ``user``, ``item`` and ``split`` (``train``/``val``/``test``) columns.

In every layout, item features are ``image_feat.npy`` (visual),
``audio_feat.npy`` (acoustic) and ``text_feat.npy`` (textual); any non-empty
subset, float16, float32 or float64, one row per item.
"""
import json
import os
import os.path as osp
import pickle
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from pyg_mmrec.data.hetero import FEATURE_FILES, MODALITIES, SPLITS
from pyg_mmrec.errors import DatasetError

DIFFMM_FILES = {'train': 'trnMat.pkl', 'val': 'valMat.pkl',
                'test': 'tstMat.pkl'}
MMSSL_FILES = {'train': 'train.json', 'val': 'val.json', 'test': 'test.json'}
TABULAR_FILES = ('interactions.parquet', 'interactions.csv')
LAYOUTS = ('diffmm', 'mmssl', 'tabular')


@dataclass
class RawInteractions:
    r"""Validated interactions and features of one data set, as NumPy.

    Attributes:
        num_users (int): Number of users (ids ``0..num_users-1``).
        num_items (int): Number of items (ids ``0..num_items-1``).
        edges (dict): ``split -> int64 array [2, E]`` sorted by (user, item),
            without duplicates.
        features (dict): ``modality -> float32 array [num_items, d]``.
        notes (list): Human-readable remarks (e.g. removed duplicates).
    """
    num_users: int
    num_items: int
    edges: Dict[str, np.ndarray]
    features: Dict[str, np.ndarray]
    notes: List[str] = field(default_factory=list)


# Restricted unpickling #######################################################

# Old pickles name private SciPy/NumPy modules that newer releases moved or
# dropped; map them onto the public homes of the same classes.
_SCIPY_SPARSE_MODULES = {
    'scipy.sparse', 'scipy.sparse.coo', 'scipy.sparse.csr', 'scipy.sparse.csc',
    'scipy.sparse._coo', 'scipy.sparse._csr', 'scipy.sparse._csc',
    'scipy.sparse._arrays', 'scipy.sparse.base', 'scipy.sparse._base',
    'scipy.sparse.compressed', 'scipy.sparse._compressed', 'scipy.sparse.dok',
    'scipy.sparse._dok', 'scipy.sparse.lil', 'scipy.sparse._lil',
}
_SPARSE_CLASSES = {
    'coo_matrix', 'csr_matrix', 'csc_matrix', 'dok_matrix', 'lil_matrix',
    'coo_array', 'csr_array', 'csc_array', 'dok_array', 'lil_array'
}
_NUMPY_MODULES = {'numpy', 'numpy.core.multiarray', 'numpy._core.multiarray',
                  'numpy.core.numeric', 'numpy._core.numeric'}
_NUMPY_GLOBALS: Dict[str, Callable] = {
    'ndarray': np.ndarray,
    'dtype': np.dtype,
    '_reconstruct': np._core.multiarray._reconstruct
    if hasattr(np, '_core') else np.core.multiarray._reconstruct,
    'scalar': np._core.multiarray.scalar
    if hasattr(np, '_core') else np.core.multiarray.scalar,
    '_frombuffer': np._core.numeric._frombuffer
    if hasattr(np, '_core') else np.core.numeric._frombuffer,
}


def _reconstructor(cls: type, base: type, state: object) -> object:
    r"""``copyreg._reconstructor`` (used by pickle protocols 0-2), limited
    to the allowed sparse classes."""
    import copyreg
    allowed = tuple(getattr(sp, name) for name in _SPARSE_CLASSES)
    if not (isinstance(cls, type) and issubclass(cls, allowed)
            and base in (object, dict)):
        raise pickle.UnpicklingError(
            f'refusing to reconstruct {cls!r}: only SciPy sparse matrices '
            f'are allowed in a pickle')
    return copyreg._reconstructor(cls, base, state)


class _SparseMatrixUnpickler(pickle.Unpickler):
    r"""Constructs only NumPy arrays and SciPy sparse matrices: unpickling
    arbitrary objects would run arbitrary code."""
    def find_class(self, module: str, name: str):
        if module in _SCIPY_SPARSE_MODULES and name in _SPARSE_CLASSES:
            return getattr(sp, name)
        if module in ('copyreg', 'copy_reg') and name == '_reconstructor':
            return _reconstructor
        if module in ('builtins', '__builtin__') and name in ('dict',
                                                              'object'):
            return {'dict': dict, 'object': object}[name]  # bases only
        if module == '_codecs' and name == 'encode':
            import codecs
            return codecs.encode  # protocols 0-2 store bytes as str
        if module in _NUMPY_MODULES and name in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[name]
        if module.startswith('numpy') and name.endswith('DType'):
            import numpy.dtypes
            if hasattr(numpy.dtypes, name):
                return getattr(numpy.dtypes, name)
        raise pickle.UnpicklingError(
            f"refusing to load '{module}.{name}': only NumPy arrays and SciPy "
            f"sparse matrices are allowed in a pickle")


def load_sparse_pickle(path: str) -> sp.coo_matrix:
    r"""Loads a pickled SciPy sparse matrix through a restricted unpickler."""
    try:
        with open(path, 'rb') as f:
            obj = _SparseMatrixUnpickler(f).load()
    except FileNotFoundError:
        raise DatasetError(path, 'file not found') from None
    except pickle.UnpicklingError as e:
        raise DatasetError(path, f'not a valid sparse-matrix pickle ({e})') \
            from None
    except Exception as e:  # corrupt pickles raise many error types
        raise DatasetError(path, f'cannot be read as a pickle '
                           f'({type(e).__name__}: {e})') from None
    if not sp.issparse(obj):
        raise DatasetError(
            path, f'expected a SciPy sparse matrix, got '
            f'{type(obj).__name__}')
    return sp.coo_matrix(obj)


# Features ####################################################################


def load_features(path: str, num_items: int) -> np.ndarray:
    r"""Loads one modality's ``.npy`` feature matrix and checks its shape,
    dtype and values. Returns ``float32``."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(path, 'file not found') from None
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(path, f'cannot be read as a .npy array ({e})') \
            from None
    if array.dtype.kind != 'f':
        raise DatasetError(
            path, f'features must be floating point, got dtype {array.dtype}')
    if array.ndim != 2:
        raise DatasetError(
            path, f'features must be a 2-D [items, dim] array, got shape '
            f'{tuple(array.shape)}')
    if array.shape[0] != num_items:
        raise DatasetError(
            path, f'has {array.shape[0]} feature rows but the interactions '
            f'have {num_items} items')
    if array.shape[1] == 0:
        raise DatasetError(path, 'features have zero columns')
    array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise DatasetError(
            path, f'contains NaN or infinite values in {rows.size} rows '
            f'(first: row {rows[0]})')
    return array


def read_features(root: str, num_items: int) -> Dict[str, np.ndarray]:
    features = {}
    for modality in MODALITIES:
        path = osp.join(root, FEATURE_FILES[modality])
        if osp.exists(path):
            features[modality] = load_features(path, num_items)
    if not features:
        raise DatasetError(
            root, 'no item features found (expected at least one of ' +
            ', '.join(FEATURE_FILES[m] for m in MODALITIES) + ')')
    return features


# Edge checks #################################################################


def _clean_edges(path: str, users: np.ndarray, items: np.ndarray,
                 num_users: int, num_items: int, split: str,
                 notes: List[str]) -> np.ndarray:
    r"""Checks ids, removes duplicate pairs (with a note) and sorts."""
    if users.size == 0:
        raise DatasetError(path, f'the {split} split has no interactions')
    for name, ids, bound in (('user', users, num_users),
                             ('item', items, num_items)):
        bad = (ids < 0) | (ids >= bound)
        if bad.any():
            first = int(ids[np.flatnonzero(bad)[0]])
            what = 'negative' if first < 0 else \
                f'outside the training range 0..{bound - 1}'
            raise DatasetError(
                path, f'{int(bad.sum())} {split} interactions have {name} '
                f'ids {what} (first: {first})')
    key = users.astype(np.int64) * num_items + items.astype(np.int64)
    unique = np.unique(key)
    if unique.size < key.size:
        removed = key.size - unique.size
        note = (f'{path}: removed {removed} duplicate {split} '
                f'interaction{"s" if removed > 1 else ""}')
        notes.append(note)
        warnings.warn(note, stacklevel=3)
    return np.stack([unique // num_items, unique % num_items])


def _finish(root: str, paths: Dict[str, str], pairs: Dict[str, Tuple],
            num_users: int, num_items: int) -> RawInteractions:
    notes: List[str] = []
    edges = {
        split: _clean_edges(paths[split], users, items, num_users, num_items,
                            split, notes)
        for split, (users, items) in pairs.items()
    }
    features = read_features(root, num_items)
    return RawInteractions(num_users, num_items, edges, features, notes)


def _require(root: str, names: Dict[str, str]) -> Dict[str, str]:
    paths = {split: osp.join(root, name) for split, name in names.items()}
    for path in paths.values():
        if not osp.isfile(path):
            raise DatasetError(path, 'file not found')
    return paths


# Layouts #####################################################################


def read_diffmm(root: str) -> RawInteractions:
    r"""Reads the DiffMM layout (pickled SciPy matrices)."""
    paths = _require(root, DIFFMM_FILES)
    matrices = {s: load_sparse_pickle(p) for s, p in paths.items()}
    num_users, num_items = matrices['train'].shape
    pairs = {}
    for split, mat in matrices.items():
        if mat.shape != (num_users, num_items):
            raise DatasetError(
                paths[split], f'matrix shape {mat.shape} differs from the '
                f'training matrix {(num_users, num_items)}: users or items '
                f'outside the training range')
        if mat.nnz and not np.isfinite(mat.data).all():
            raise DatasetError(paths[split], 'contains NaN or infinite values')
        keep = mat.data != 0
        pairs[split] = (mat.row[keep], mat.col[keep])
    return _finish(root, paths, pairs, num_users, num_items)


def _json_pairs(path: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(path, f'cannot be read as JSON ({e})') from None
    if not isinstance(obj, dict):
        raise DatasetError(path, 'expected a JSON object {user: [items]}')
    users: List[int] = []
    items: List[int] = []
    for key, values in obj.items():
        try:
            user = int(key)
        except ValueError:
            raise DatasetError(path, f"user id '{key}' is not an integer") \
                from None
        if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool)
                for v in values):
            raise DatasetError(
                path, f'items of user {key} must be a list of integers')
        users.extend([user] * len(values))
        items.extend(values)
    return np.asarray(users, dtype=np.int64), np.asarray(items, np.int64)


def read_mmssl(root: str) -> RawInteractions:
    r"""Reads the MMSSL layout (``{user: [items]}`` JSON files). The user and
    item counts are those of the training split."""
    paths = _require(root, MMSSL_FILES)
    pairs = {split: _json_pairs(path) for split, path in paths.items()}
    train_users, train_items = pairs['train']
    if train_users.size == 0:
        raise DatasetError(paths['train'], 'the train split has no '
                           'interactions')
    num_users = int(train_users.max()) + 1
    num_items = int(train_items.max()) + 1
    return _finish(root, paths, pairs, num_users, num_items)


def read_tabular(root: str) -> RawInteractions:
    r"""Reads the tabular layout (``interactions.csv`` or
    ``interactions.parquet`` with ``user``, ``item``, ``split`` columns)."""
    import pandas as pd

    path = next((osp.join(root, name) for name in TABULAR_FILES
                 if osp.isfile(osp.join(root, name))), None)
    if path is None:
        raise DatasetError(osp.join(root, TABULAR_FILES[1]), 'file not found')
    try:
        if path.endswith('.parquet'):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except Exception as e:  # pandas raises many types for unreadable files
        raise DatasetError(path, f'cannot be read as a table ({e})') from None
    missing = [c for c in ('user', 'item', 'split') if c not in frame.columns]
    if missing:
        raise DatasetError(path, f"missing column(s) {', '.join(missing)}")
    for column in ('user', 'item'):
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise DatasetError(
                path, f"column '{column}' must hold integer ids, got "
                f"{frame[column].dtype}")
    split_names = frame['split'].astype(str)
    unknown = sorted(set(split_names.unique()) - set(SPLITS))
    if unknown:
        raise DatasetError(
            path, f"column 'split' has unknown values {unknown} (expected "
            f"train, val, test)")
    pairs = {}
    for split in SPLITS:
        rows = frame[split_names == split]
        pairs[split] = (rows['user'].to_numpy(np.int64),
                        rows['item'].to_numpy(np.int64))
    train_users, train_items = pairs['train']
    if train_users.size == 0:
        raise DatasetError(path, 'the train split has no interactions')
    num_users = int(train_users.max()) + 1
    num_items = int(train_items.max()) + 1
    paths = {split: path for split in SPLITS}
    return _finish(root, paths, pairs, num_users, num_items)


READERS: Dict[str, Callable[[str], RawInteractions]] = {
    'diffmm': read_diffmm,
    'mmssl': read_mmssl,
    'tabular': read_tabular,
}


def detect_layout(root: str) -> str:
    r"""Returns the layout of the data set folder :obj:`root` from the
    files present."""
    if not osp.isdir(root):
        raise DatasetError(root, 'data set folder not found')
    present = set(os.listdir(root))
    if DIFFMM_FILES['train'] in present:
        return 'diffmm'
    if MMSSL_FILES['train'] in present:
        return 'mmssl'
    if present & set(TABULAR_FILES):
        return 'tabular'
    raise DatasetError(
        root, 'no interaction files found (expected trnMat.pkl, train.json, '
        'interactions.csv or interactions.parquet)')


def read_dataset(root: str, layout: Optional[str] = None) -> RawInteractions:
    r"""Reads and validates the data set in :obj:`root`."""
    layout = layout or detect_layout(root)
    if layout not in READERS:
        raise DatasetError(root, f"unknown layout '{layout}' (expected one "
                           f"of {', '.join(LAYOUTS)})")
    return READERS[layout](root)
