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
subset, float16, float32 or float64, one row per item. The DiffMM layout
takes the user and item counts from its training matrix's shape (the
held-out matrices may be smaller or larger; their entries must lie inside
it); the other two take the item count from the feature files' row count
(the item catalogue, which may hold items without interactions).
"""
import json
import os
import os.path as osp
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from pyg_mmrec.data._safe_pickle import load_sparse_pickle
from pyg_mmrec.data.hetero import FEATURE_FILES, MODALITIES, SPLITS
from pyg_mmrec.data.sampling import check_negatives
from pyg_mmrec.errors import DatasetError

DIFFMM_FILES = {'train': 'trnMat.pkl', 'val': 'valMat.pkl',
                'test': 'tstMat.pkl'}
MMSSL_FILES = {'train': 'train.json', 'val': 'val.json', 'test': 'test.json'}
TABULAR_FILES = ('interactions.parquet', 'interactions.csv')
LAYOUTS = ('diffmm', 'mmssl', 'tabular')


@dataclass
class RawInteractions:
    r"""Interactions and features of one data set, as NumPy, as the
    readers return them: they check everything below, while an instance
    made by hand is taken as it is (by
    :func:`~pyg_mmrec.data.dataset.to_hetero_data` too).

    Attributes:
        num_users (int): Number of users (ids ``0..num_users-1``).
        num_items (int): Number of items (ids ``0..num_items-1``).
        edges (dict): ``split -> int64 array [2, E]`` sorted by (user, item),
            without duplicates; no validation pair is a training pair, and
            no test pair a training or validation pair.
        features (dict): ``modality -> float32 array [num_items, d]``.
        notes (list): Human-readable remarks (e.g. removed duplicates).
    """
    num_users: int
    num_items: int
    edges: Dict[str, np.ndarray]
    features: Dict[str, np.ndarray]
    notes: List[str] = field(default_factory=list)


# Features ####################################################################


def load_features(path: str, num_items: Optional[int]) -> np.ndarray:
    r"""Loads one modality's ``.npy`` feature matrix and checks its shape
    (:obj:`num_items` rows, unless :obj:`None`), dtype and values. Returns
    ``float32``."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(path, 'file not found') from None
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(path, f'cannot be read as a .npy array ({e})') \
            from None
    if not isinstance(array, np.ndarray):  # np.load opens .npz archives too
        array.close()
        raise DatasetError(path, 'is an .npz archive, not a .npy array')
    if array.dtype.kind != 'f':
        raise DatasetError(
            path, f'features must be floating point, got dtype {array.dtype}')
    if array.ndim != 2:
        raise DatasetError(
            path, f'features must be a 2-D [items, dim] array, got shape '
            f'{tuple(array.shape)}')
    if num_items is not None and array.shape[0] != num_items:
        raise DatasetError(
            path, f'has {array.shape[0]} feature rows but the interactions '
            f'have {num_items} items')
    if array.shape[1] == 0:
        raise DatasetError(path, 'features have zero columns')
    finite = np.isfinite(array)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise DatasetError(
            path, f'contains NaN or infinite values in {rows.size} rows '
            f'(first: row {rows[0]})')
    if array.dtype == np.float64:
        # Finite here, infinite in float32: say which it is.
        large = np.abs(array) > np.finfo(np.float32).max
        if large.any():
            rows = np.flatnonzero(large.any(axis=1))
            raise DatasetError(
                path, f'has values beyond the float32 range (|x| > 3.4e38) '
                f'in {rows.size} rows (first: row {rows[0]})')
    return array.astype(np.float32)


def read_features(root: str, num_items: Optional[int],
                  needed_rows: int = 0) -> Dict[str, np.ndarray]:
    r"""Loads every modality's feature file present in :obj:`root`, each
    with :obj:`num_items` rows; with :obj:`None`, one row count that every
    file must share. When the files disagree, the one with fewer than
    :obj:`needed_rows` (the interactions' largest item id plus one) is
    named as the wrong one."""
    features: Dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        path = osp.join(root, FEATURE_FILES[modality])
        if osp.islink(path) and not osp.exists(path):
            raise DatasetError(path, 'is a link to a missing file')
        if osp.exists(path):
            features[modality] = load_features(path, num_items)
    if not features:
        raise DatasetError(
            root, 'no item features found (expected at least one of ' +
            ', '.join(FEATURE_FILES[m] for m in MODALITIES) + ')')
    rows = {m: array.shape[0] for m, array in features.items()}
    first = next(iter(rows))
    other = next((m for m in rows if rows[m] != rows[first]), None)
    if other is not None:
        short = [m for m in rows if rows[m] < needed_rows]
        wrong = short[0] if short else other
        right = next(m for m in rows if rows[m] != rows[wrong])
        used = (f' (the interactions use item ids up to {needed_rows - 1})'
                if short else '')
        raise DatasetError(
            osp.join(root, FEATURE_FILES[wrong]),
            f'has {rows[wrong]} feature rows but {FEATURE_FILES[right]} has '
            f'{rows[right]}: every feature file needs one row per '
            f'item{used}')
    return features


# Edge checks #################################################################


#: Ids must fit in int64; (user, item) pairs are handled as the int64 keys
#: ``user * num_items + item``, so that product must fit too.
MAX_ID = int(np.iinfo(np.int64).max)
#: An id written as text: ASCII digits with an optional sign.
_INTEGER = re.compile(r'\s*[+-]?[0-9]+\s*')


def _plural(count: int, noun: str) -> str:
    return f'{count} {noun}{"s" if count != 1 else ""}'


def _ids_out_of_range(path: str, name: str, count: int,
                      first: int) -> DatasetError:
    return DatasetError(
        path, f'{name} ids out of range in {_plural(count, "interaction")} '
        f'(first: {first}); ids must lie in 0..2**63-1')


def _note(notes: List[str], note: str) -> None:
    r"""Records a change made to the input, and warns about it."""
    notes.append(note)
    warnings.warn(note, stacklevel=3)


def _clean_edges(path: str, users: np.ndarray, items: np.ndarray,
                 num_users: int, num_items: int, split: str,
                 notes: List[str], item_range: str = 'the training range {}'
                 ) -> np.ndarray:
    r"""Checks ids, removes duplicate pairs (with a note) and returns the
    sorted keys ``user * num_items + item``. :obj:`item_range` says where
    the item count comes from, for the error message (``{}``: the range)."""
    if users.size == 0:
        raise DatasetError(path, f'the {split} split has no interactions')
    for name, ids, bound, where in (
            ('user', users, num_users, 'the training range {}'),
            ('item', items, num_items, item_range)):
        bad = (ids < 0) | (ids >= bound)
        if bad.any():
            first = int(ids[np.flatnonzero(bad)[0]])
            what = 'negative' if first < 0 else \
                'outside ' + where.format(f'0..{bound - 1}')
            raise DatasetError(
                path, f'{int(bad.sum())} {split} interactions have {name} '
                f'ids {what} (first: {first})')
    key = users.astype(np.int64) * num_items + items.astype(np.int64)
    unique = np.unique(key)
    if unique.size < key.size:
        removed = key.size - unique.size
        _note(notes, f'{path}: removed '
              f'{_plural(removed, f"duplicate {split} interaction")}')
    return unique


def _remove_seen(paths: Dict[str, str], keys: Dict[str, np.ndarray],
                 notes: List[str]) -> None:
    r"""Removes (with a note) the validation pairs that are training pairs,
    and the test pairs that are training or validation pairs. Evaluation
    excludes training items from the ranking (and validation items from the
    test ranking), so such pairs could never be hit and would only distort
    the metrics."""
    seen = keys['train']
    for split, earlier in (('val', 'train'), ('test', 'train or val')):
        old = np.isin(keys[split], seen, assume_unique=True)
        removed = int(old.sum())
        if removed == keys[split].size:
            raise DatasetError(
                paths[split], f'the {split} split has no interactions (all '
                f'of them are also in the {earlier} split)')
        if removed:
            _note(notes, f'{paths[split]}: removed '
                  f'{_plural(removed, f"{split} interaction")} also in the '
                  f'{earlier} split (evaluation never ranks those items, so '
                  f'they could never be hit)')
            keys[split] = keys[split][~old]
        seen = np.union1d(seen, keys[split])


def _check_negatives(path: str, train: np.ndarray, num_items: int) -> None:
    r"""Every user needs an item without a training interaction: BPR draws
    its negative items from those."""
    def error(user: int, others: int) -> DatasetError:
        more = f' (and {_plural(others, "other user")})' if others else ''
        return DatasetError(
            path, f'user {user} has interacted with every item in '
            f'training: no negative item can be sampled{more}')

    check_negatives(train // num_items, num_items, error)


def _finish(root: str, paths: Dict[str, str], pairs: Dict[str, Tuple],
            num_users: int, num_items: Optional[int] = None,
            notes: Optional[List[str]] = None) -> RawInteractions:
    r"""Checks and cleans the interactions and reads the features. Without
    :obj:`num_items` the item count is the feature files' row count, so
    that catalogue items without interactions keep their ids. :obj:`notes`
    are the reader's own, which come first."""
    item_range = 'the training range {}'
    features, catalogue = None, None
    # Negative ids are refused below, naming their file. Cleaning drops only
    # repeated pairs, so the largest id is also that of the clean edges.
    largest = max((int(items.max()) for _, items in pairs.values()
                   if items.size), default=-1)
    if num_items is None:
        features = read_features(root, None, largest + 1)
        catalogue = FEATURE_FILES[next(iter(features))]
        num_items = next(iter(features.values())).shape[0]
        item_range = 'the item feature rows {} of ' + catalogue
    if num_users * num_items > MAX_ID:
        raise DatasetError(
            paths['train'], f'{num_users} users x {num_items} items is too '
            f'large (more than 2**63-1 user-item pairs): ids must be '
            f'numbered from 0 without large gaps')
    notes = [] if notes is None else notes
    keys = {
        split: _clean_edges(paths[split], users, items, num_users, num_items,
                            split, notes, item_range)
        for split, (users, items) in pairs.items()
    }
    _check_negatives(paths['train'], keys['train'], num_items)
    _remove_seen(paths, keys, notes)
    edges = {split: np.stack([key // num_items, key % num_items])
             for split, key in keys.items()}
    _note_unused_users(paths['train'], edges, num_users, notes)
    if features is None:
        features = read_features(root, num_items)
    else:
        _note_trailing_items(osp.join(root, catalogue), largest, num_items,
                             notes)
    return RawInteractions(num_users, num_items, edges, features, notes)


def _note_unused_users(path: str, edges: Dict[str, np.ndarray],
                       num_users: int, notes: List[str]) -> None:
    r"""Notes when most user ids have no interaction at all: the user count
    is the largest id plus one, so one stray large id (or ids that were
    never renumbered) silently sizes every user table for users that do not
    exist. A few unused ids are common and harmless."""
    used = np.zeros(num_users, dtype=bool)
    for edge_index in edges.values():
        used[edge_index[0]] = True
    unused = num_users - int(used.sum())
    if unused > num_users // 2:
        _note(notes, f'{path}: {unused} of the {num_users} user ids '
              f'0..{num_users - 1} have no interaction in any split (ids '
              f'are expected to run from 0 without large gaps; every user '
              f'table is sized by the largest id)')


def _note_trailing_items(path: str, last: int, num_items: int,
                         notes: List[str]) -> None:
    r"""Notes feature rows past :obj:`last`, the largest item id of any
    interaction. They are kept as catalogue items (ranked, never trained
    on), but trailing rows are also what a feature file of another data set
    looks like."""
    if last + 1 < num_items:
        _note(notes, f'{path}: the last '
              f'{_plural(num_items - last - 1, "feature row")} (items '
              f'{last + 1}..{num_items - 1}) have no interaction in any '
              f'split; they stay in the catalogue as items that are ranked '
              f'but never trained on')


def _require(root: str, names: Dict[str, str]) -> Dict[str, str]:
    paths = {split: osp.join(root, name) for split, name in names.items()}
    for path in paths.values():
        if osp.isdir(path):
            raise DatasetError(path, 'is a folder, not a file')
        if not osp.isfile(path):
            raise DatasetError(path, 'file not found')
    return paths


# Layouts #####################################################################


def read_diffmm(root: str) -> RawInteractions:
    r"""Reads the DiffMM layout (pickled SciPy matrices)."""
    paths = _require(root, DIFFMM_FILES)
    matrices = {s: load_sparse_pickle(p) for s, p in paths.items()}
    # The training matrix sizes the data set. A held-out matrix may have
    # another shape (SciPy sizes a matrix built without `shape=` by its
    # largest ids): only its entries must lie in the training range, which
    # _finish checks.
    num_users, num_items = matrices['train'].shape
    pairs = {}
    notes: List[str] = []
    for split, mat in matrices.items():
        if mat.nnz and not np.isfinite(mat.data).all():
            raise DatasetError(paths[split], 'contains NaN or infinite values')
        keep = mat.data != 0
        values = mat.data[keep]
        if values.size and (values.min() != 1 or values.max() != 1):
            # Ratings or signed feedback: the layout is implicit feedback,
            # so say how such values are read rather than guess.
            low, high = values.min(), values.max()
            shown = f'{low:g}' if low == high else f'{low:g} to {high:g}'
            _note(notes, f'{paths[split]}: holds values other than 0 and 1 '
                  f'({shown}); every nonzero entry, negative ones too, is '
                  f'read as one interaction')
        pairs[split] = (mat.row[keep], mat.col[keep])
    return _finish(root, paths, pairs, num_users, num_items, notes)


class _JSONObject(list):
    r"""A JSON object as its list of ``(key, value)`` pairs, so that a key
    given twice is seen rather than silently overwritten."""


def _json_pairs(path: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        # utf-8-sig: editors on Windows start the file with a BOM.
        with open(path, encoding='utf-8-sig') as f:
            obj = json.load(f, object_pairs_hook=_JSONObject)
    except (OSError, ValueError) as e:
        raise DatasetError(path, f'cannot be read as JSON ({e})') from None
    except RecursionError:
        raise DatasetError(path, 'cannot be read as JSON (nested too '
                           'deeply)') from None
    if not isinstance(obj, _JSONObject):
        raise DatasetError(path, 'expected a JSON object {user: [items]}')
    users: List[int] = []
    items: List[int] = []
    keys: Dict[int, str] = {}
    for key, values in obj:
        # As strict as the tables' ids: int() would also take '1_0' or
        # non-ASCII digits.
        if not _INTEGER.fullmatch(key):
            raise DatasetError(path, f"user id '{key}' is not an integer")
        user = int(key)
        if user in keys:
            raise DatasetError(
                path, f"user {user} is given twice (keys '{keys[user]}' and "
                f"'{key}'): give each user's items in one list")
        keys[user] = key
        if type(values) is not list or not all(
                isinstance(v, int) and not isinstance(v, bool)
                for v in values):
            raise DatasetError(
                path, f'items of user {key} must be a list of integers')
        users.extend([user] * len(values))
        items.extend(values)
    for name, ids in (('user', users), ('item', items)):
        # JSON integers are unbounded: NumPy would raise OverflowError.
        bad = [i for i in ids if not -MAX_ID - 1 <= i <= MAX_ID]
        if bad:
            raise _ids_out_of_range(path, name, len(bad), bad[0])
    return np.asarray(users, dtype=np.int64), np.asarray(items, np.int64)


def read_mmssl(root: str) -> RawInteractions:
    r"""Reads the MMSSL layout (``{user: [items]}`` JSON files). The user
    count is that of the training split, the item count the feature files'
    row count."""
    paths = _require(root, MMSSL_FILES)
    pairs = {split: _json_pairs(path) for split, path in paths.items()}
    train_users, train_items = pairs['train']
    if train_users.size == 0:
        raise DatasetError(paths['train'], 'the train split has no '
                           'interactions')
    return _finish(root, paths, pairs, int(train_users.max()) + 1)


def _parsed_ints(values) -> Optional[List[int]]:
    r"""The values of a text or object column as Python integers, or
    :obj:`None` if one is not an integer."""
    out = []
    for value in values:
        if isinstance(value, str) and _INTEGER.fullmatch(value):
            value = int(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, np.integer)):
            return None
        out.append(int(value))
    return out


def _table_ids(path: str, column) -> np.ndarray:
    r"""The ids of the table column :obj:`column` (already checked for
    missing cells) as int64; raises if they are not integers or do not fit
    in int64."""
    import pandas as pd

    name = column.name
    if not pd.api.types.is_integer_dtype(column):
        # pandas reads integers beyond uint64 (or a mix of negative ids and
        # ids beyond int64) as text: say so rather than just "got object".
        parsed = _parsed_ints(column)
        bad = [i for i in parsed or () if not -MAX_ID - 1 <= i <= MAX_ID]
        if bad:
            raise _ids_out_of_range(path, name, len(bad), bad[0])
        raise DatasetError(path, f"column '{name}' must hold integer ids, "
                           f"got {column.dtype}")
    if pd.api.types.is_unsigned_integer_dtype(column):
        # Cast to int64, an id of 2**64-1 would silently become -1.
        values = column.to_numpy(np.uint64)
        bad = values > MAX_ID
        if bad.any():
            raise _ids_out_of_range(path, name, int(bad.sum()),
                                    int(values[bad][0]))
    return column.to_numpy(np.int64)


def tabular_path(root: str) -> str:
    r"""The interactions table of the tabular layout in :obj:`root`: the
    first of :obj:`TABULAR_FILES` present (``interactions.csv`` if none
    is)."""
    return next((osp.join(root, name) for name in TABULAR_FILES
                 if osp.isfile(osp.join(root, name))),
                osp.join(root, TABULAR_FILES[1]))


def read_tabular(root: str) -> RawInteractions:
    r"""Reads the tabular layout (``interactions.csv`` or
    ``interactions.parquet`` with ``user``, ``item``, ``split`` columns). The
    user count is that of the training split, the item count the feature
    files' row count."""
    import pandas as pd

    path = tabular_path(root)
    if not osp.isfile(path):
        raise DatasetError(path, 'file not found')
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
    if len(frame) == 0:
        raise DatasetError(path, 'the table has no interactions (no rows)')
    for column in ('user', 'item', 'split'):
        empty = np.flatnonzero(frame[column].isna().to_numpy())
        if empty.size:
            noun = 'missing value' if column == 'split' else 'missing id'
            # Rows counted from 1, as a spreadsheet shows them under a CSV
            # header; Parquet has no header line.
            row = (f'row {empty[0] + 1}' if path.endswith('.parquet') else
                   f'row {empty[0] + 1} below the header')
            raise DatasetError(
                path, f"column '{column}' has {_plural(empty.size, noun)} "
                f"(first in {row})")
    ids = {column: _table_ids(path, frame[column])
           for column in ('user', 'item')}
    split_names = frame['split'].astype(str)
    unknown = sorted(set(split_names.unique()) - set(SPLITS))
    if unknown:
        raise DatasetError(
            path, f"column 'split' has unknown values {unknown} (expected "
            f"train, val, test)")
    pairs = {}
    for split in SPLITS:
        rows = (split_names == split).to_numpy()
        pairs[split] = (ids['user'][rows], ids['item'][rows])
    train_users, train_items = pairs['train']
    if train_users.size == 0:
        raise DatasetError(path, 'the train split has no interactions')
    paths = {split: path for split in SPLITS}
    return _finish(root, paths, pairs, int(train_users.max()) + 1)


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
    try:
        present = set(os.listdir(root))
    except OSError as e:
        raise DatasetError(root, f'cannot be read ({e.strerror})') from None
    found = [(layout, name) for layout, names in (
        ('diffmm', [DIFFMM_FILES['train']]), ('mmssl', [MMSSL_FILES['train']]),
        ('tabular', TABULAR_FILES)) for name in names if name in present]
    if found:
        layout, name = found[0]
        others = [n for _, n in found[1:]]
        if others:
            # Whichever wins, the user may have meant another: say which.
            warnings.warn(
                f"{root}: holds several interaction files; reading {name} "
                f"({layout} layout) and ignoring {', '.join(others)} (move "
                f"the files not meant out of the folder)", stacklevel=2)
        return layout
    raise DatasetError(
        root, 'no interaction files found (expected trnMat.pkl, train.json, '
        'interactions.csv or interactions.parquet)')


def resolve_layout(root: str, layout: Optional[str] = None) -> str:
    r""":obj:`layout`, checked, or with :obj:`None` the layout of the files
    in :obj:`root` (:func:`detect_layout`)."""
    if layout is None:
        return detect_layout(root)
    if layout not in LAYOUTS:
        raise DatasetError(root, f"unknown layout '{layout}' (expected one "
                           f"of {', '.join(LAYOUTS)})")
    return layout


def read_dataset(root: str, layout: Optional[str] = None) -> RawInteractions:
    r"""Reads and validates the data set in :obj:`root`."""
    return READERS[resolve_layout(root, layout)](root)
