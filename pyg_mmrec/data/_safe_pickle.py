r"""Restricted unpickling of the DiffMM layout's SciPy sparse matrices.

A pickle can construct any object and so run any code: the unpickler here
constructs only NumPy arrays and SciPy sparse matrices, and the structure of
the matrix is checked before SciPy's compiled code touches it.
"""
import pickle
import warnings
from typing import Callable, Dict, Tuple

import numpy as np
import scipy.sparse as sp

from pyg_mmrec.errors import DatasetError

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
        if module.startswith('scipy.sparse') and name.endswith(
                ('_matrix', '_array')):
            # E.g. bsr or dia: SciPy classes whose structure is not checked
            # here, so they are not constructed either.
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': the sparse formats "
                f"read are COO, CSR, CSC, DOK and LIL (save the matrix with "
                f".tocoo())")
        raise pickle.UnpicklingError(
            f"refusing to load '{module}.{name}': only NumPy arrays and SciPy "
            f"sparse matrices are allowed in a pickle")


def load_sparse_pickle(path: str) -> sp.coo_matrix:
    r"""Loads a pickled SciPy sparse matrix through a restricted unpickler,
    and checks its structure before converting it to COO."""
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
    try:
        with warnings.catch_warnings():
            # SciPy warns about unsigned index arrays, which are fine.
            warnings.simplefilter('ignore')
            return _checked_coo(obj)
    except ValueError as e:
        raise DatasetError(path, f'invalid sparse matrix: {e}') from None
    except Exception as e:  # hand-crafted attributes of any type
        raise DatasetError(path, f'invalid sparse matrix '
                           f'({type(e).__name__}: {e})') from None


# Unpickling sets a matrix's attributes as stored, unchecked, and SciPy's
# compiled conversions trust them: a short ``indptr`` makes them write past
# the end of an array (a segfault or heap corruption, not an exception).
# Hence the structure is checked in Python before any conversion; each check
# raises ValueError describing the problem.


def _check_array(name: str, array: object, index: bool = False) -> None:
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise ValueError(f'{name} must be a 1-D array')
    if index and array.dtype.kind not in 'iu':
        raise ValueError(f'{name} must hold integers, got dtype '
                         f'{array.dtype}')
    if not index and array.dtype.kind not in 'biuf':
        raise ValueError(f'interaction values must be numbers, got dtype '
                         f'{array.dtype}')


def _check_range(name: str, index: np.ndarray, bound: int,
                 shape: Tuple[int, int]) -> None:
    if index.size and index.min() < 0:
        raise ValueError(f'negative {name} index {index.min()}')
    if index.size and index.max() >= bound:
        raise ValueError(f'{name} index {index.max()} outside the shape '
                         f'{shape}')


def _check_shape(obj: object) -> Tuple[int, int]:
    shape = getattr(obj, '_shape', None)
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool)
            for n in shape)):
        raise ValueError(f'shape must be two integers (users, items), got '
                         f'{shape!r}')
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 0:
        raise ValueError(f'negative shape {shape}')
    return shape


def _check_coo(obj: object, shape: Tuple[int, int]) -> None:
    coords = getattr(obj, 'coords', None)
    if not isinstance(coords, (tuple, list)) or len(coords) != 2:
        raise ValueError('expected a row and a column index array')
    row, col = coords
    _check_array('row', row, index=True)
    _check_array('col', col, index=True)
    _check_array('data', obj.data)
    if not len(row) == len(col) == len(obj.data):
        raise ValueError(f'row, col and data differ in length ({len(row)}, '
                         f'{len(col)} and {len(obj.data)})')
    _check_range('row', row, shape[0], shape)
    _check_range('column', col, shape[1], shape)


def _check_compressed(obj: object, shape: Tuple[int, int]) -> None:
    # The structure SciPy's compiled conversion relies on is checked here,
    # with messages that do not change with the SciPy version;
    # `check_format` then checks the rest.
    _check_array('data', obj.data)
    _check_array('indices', obj.indices, index=True)
    _check_array('indptr', obj.indptr, index=True)
    rows = obj.format == 'csr'
    major = shape[0] if rows else shape[1]
    if obj.indptr.size != major + 1:
        raise ValueError(f'indptr has {obj.indptr.size} entries, expected '
                         f'{major + 1} (one per {"row" if rows else "column"}'
                         f' plus one)')
    if obj.indices.size != obj.data.size:
        raise ValueError(f'indices and data differ in length '
                         f'({obj.indices.size} and {obj.data.size})')
    indptr = obj.indptr.astype(np.int64)
    if indptr[0] != 0 or indptr[-1] != obj.indices.size:
        raise ValueError(f'indptr must run from 0 to the number of stored '
                         f'entries ({obj.indices.size}), got {indptr[0]} to '
                         f'{indptr[-1]}')
    if (np.diff(indptr) < 0).any():
        raise ValueError('indptr must be a non-decreasing sequence')
    _check_range('column' if rows else 'row', obj.indices,
                 shape[1] if rows else shape[0], shape)
    obj.check_format(full_check=True)


def _check_lil(obj: object, shape: Tuple[int, int]) -> None:
    for name in ('rows', 'data'):
        array = getattr(obj, name)
        if not (isinstance(array, np.ndarray) and array.dtype == object
                and array.shape == (shape[0], )):
            raise ValueError(f'{name} must be an object array of '
                             f'{shape[0]} lists')
    for i, (cols, values) in enumerate(zip(obj.rows, obj.data)):
        if not (isinstance(cols, list) and isinstance(values, list)
                and len(cols) == len(values)):
            raise ValueError(f'row {i} has mismatched column indices and '
                             f'values')


def _checked_coo(obj: object) -> sp.coo_matrix:
    r"""Checks the structure of the unpickled :obj:`obj`, then converts it
    (and checks the result, for formats converted in Python: DOK, LIL)."""
    shape = _check_shape(obj)
    if obj.format in ('csr', 'csc'):
        _check_compressed(obj, shape)
    elif obj.format == 'coo':
        _check_coo(obj, shape)
    elif obj.format == 'lil':
        _check_lil(obj, shape)
    coo = sp.coo_matrix(obj)
    if obj.format not in ('csr', 'csc', 'coo'):  # checked above already
        _check_coo(coo, shape)
    return coo
