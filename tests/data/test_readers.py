r"""Input validation of the readers: every bad input raises a
:class:`DatasetError` naming the file and the problem, nothing is cached,
and pickles are loaded through the restricted unpickler."""
import os
import pickle
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from pyg_mmrec.data.dataset import MultiModalRecDataset
from pyg_mmrec.data.readers import (
    detect_layout,
    load_features,
    load_sparse_pickle,
    read_dataset,
    read_diffmm,
)
from pyg_mmrec.errors import DatasetError

NUM_USERS, NUM_ITEMS = 4, 5  # the tiny data set of conftest.py
DIFFMM_NAMES = {'train': 'trnMat.pkl', 'val': 'valMat.pkl',
                'test': 'tstMat.pkl'}
MMSSL_NAMES = {'train': 'train.json', 'val': 'val.json', 'test': 'test.json'}
GARBAGE = b'\x00\x9fthis is \xff\xfe not \x07 a valid file\x00\x01\x02'


def _rewrite(path, data: bytes) -> None:
    with open(path, 'wb') as f:
        f.write(data)


# Missing files ###############################################################


@pytest.mark.parametrize('split', ['val', 'test'])
def test_diffmm_missing_heldout_matrix(make_dataset, assert_rejected,
                                       split):
    root = make_dataset('diffmm')
    os.remove(root / DIFFMM_NAMES[split])
    assert_rejected(root, root / DIFFMM_NAMES[split], 'file not found')


def test_diffmm_missing_training_matrix(make_dataset, assert_rejected):
    root = make_dataset('diffmm')
    os.remove(root / 'trnMat.pkl')
    # With the layout given, the missing file is named ...
    assert_rejected(root, root / 'trnMat.pkl', 'file not found',
                    layout='diffmm')
    # ... without it, the folder is, with the files it expected.
    assert_rejected(root, root, 'no interaction files found .*trnMat\\.pkl')


def test_folder_in_place_of_a_split_file(make_dataset, assert_rejected):
    # It read as "file not found", with the folder right there.
    root = make_dataset('diffmm')
    os.remove(root / 'valMat.pkl')
    os.mkdir(root / 'valMat.pkl')
    assert_rejected(root, root / 'valMat.pkl', 'is a folder, not a file')


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_mmssl_missing_json(make_dataset, assert_rejected, split):
    root = make_dataset('mmssl')
    os.remove(root / MMSSL_NAMES[split])
    assert_rejected(root, root / MMSSL_NAMES[split], 'file not found',
                    layout='mmssl')


def test_tabular_missing_interactions(make_dataset, assert_rejected):
    root = make_dataset('tabular')
    os.remove(root / 'interactions.csv')
    assert_rejected(root, root / 'interactions.csv', 'file not found',
                    layout='tabular')
    assert_rejected(root, root, 'no interaction files found')


def test_missing_folder(tmp_path, listing):
    from pyg_mmrec.data.readers import read_dataset
    with pytest.raises(DatasetError, match=re.escape(
            f'{tmp_path / "nope"}: data set folder not found')):
        read_dataset(str(tmp_path / 'nope'))
    with pytest.raises(DatasetError, match='data set folder not found'):
        MultiModalRecDataset(str(tmp_path / 'nope'),
                             processed_dir=str(tmp_path / 'cache'))
    assert listing(tmp_path) == []
    # An empty path (an unset shell variable) and a file are no folders.
    from pyg_mmrec.errors import ConfigError
    with pytest.raises(ConfigError, match='the data set folder is an empty '
                       'path'):
        MultiModalRecDataset('', processed_dir=str(tmp_path / 'cache'))
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(DatasetError, match=re.escape(
            f"{tmp_path / 'afile'}: is a file, not a data set folder")):
        MultiModalRecDataset(str(tmp_path / 'afile'),
                             processed_dir=str(tmp_path / 'cache'))
    assert listing(tmp_path) == ['afile']


def test_unreadable_folder(tmp_path, monkeypatch):
    # (As root, chmod 000 would not stop the read: fail listdir instead.)
    from pyg_mmrec.data import readers

    def listdir(path):
        raise PermissionError(13, 'Permission denied', path)

    monkeypatch.setattr(readers.os, 'listdir', listdir)
    with pytest.raises(DatasetError, match=re.escape(
            f'{tmp_path}: cannot be read (Permission denied)')):
        readers.detect_layout(str(tmp_path))


@pytest.mark.parametrize('extra,layout,said', [
    ('mmssl', 'diffmm', 'reading trnMat.pkl (diffmm layout) and ignoring '
     'train.json'),
    ('tabular', 'parquet', 'reading interactions.parquet (tabular layout) '
     'and ignoring interactions.csv'),
])
def test_files_of_several_layouts_are_said(make_dataset, tmp_path, extra,
                                           layout, said):
    root = make_dataset(layout)
    other = make_dataset(extra, name='other')
    for name in os.listdir(other):
        if not name.endswith('.npy'):
            os.replace(other / name, root / name)
    with pytest.warns(UserWarning, match=re.escape(
            f'{root}: holds several interaction files; {said} (move the '
            f'files not meant out of the folder)')):
        assert detect_layout(str(root)) == layout.replace('parquet',
                                                          'tabular')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        MultiModalRecDataset(str(root), layout=extra,
                             processed_dir=str(tmp_path / 'cache'))
    # A layout given is not guessed.
    assert not [w for w in caught
                if 'several interaction files' in str(w.message)]


def test_missing_folder_with_layout_creates_nothing(tmp_path, listing):
    with pytest.raises(DatasetError, match='not found'):
        MultiModalRecDataset(str(tmp_path / 'nope'), layout='diffmm',
                             processed_dir=str(tmp_path / 'cache'))
    assert listing(tmp_path) == []


def test_no_feature_file(make_dataset, assert_rejected):
    root = make_dataset('mmssl', features={})
    assert_rejected(
        root, root, 'no item features found \\(expected at least one of '
        'image_feat\\.npy, audio_feat\\.npy, text_feat\\.npy\\)')


# Unreadable files ############################################################


@pytest.mark.parametrize('split', ['train', 'val'])
def test_garbage_pickle(make_dataset, assert_rejected, split):
    root = make_dataset('diffmm')
    _rewrite(root / DIFFMM_NAMES[split], GARBAGE)
    assert_rejected(root, root / DIFFMM_NAMES[split],
                    'not a valid sparse-matrix pickle')


def test_truncated_pickle(make_dataset, assert_rejected):
    root = make_dataset('diffmm')
    data = (root / 'tstMat.pkl').read_bytes()
    _rewrite(root / 'tstMat.pkl', data[:len(data) // 2])
    assert_rejected(root, root / 'tstMat.pkl',
                    '(not a valid sparse-matrix pickle|cannot be read as a '
                    'pickle)')
    _rewrite(root / 'tstMat.pkl', b'')
    assert_rejected(root, root / 'tstMat.pkl', 'cannot be read as a pickle')


@pytest.mark.parametrize('data', [
    b'\x8e' + (2**62).to_bytes(8, 'little'),  # BINBYTES8, MemoryError
    b'\x8e' + (2**63 - 1).to_bytes(8, 'little'),  # OverflowError
])
def test_garbage_pickle_with_huge_length(tmp_path, data):
    path = tmp_path / 'trnMat.pkl'
    _rewrite(path, data)
    with pytest.raises(DatasetError, match=re.escape(
            f'{path}: cannot be read as a pickle (')):
        load_sparse_pickle(str(path))


def test_garbage_npy(make_dataset, assert_rejected):
    root = make_dataset('diffmm')
    _rewrite(root / 'audio_feat.npy', GARBAGE)
    assert_rejected(root, root / 'audio_feat.npy',
                    'cannot be read as a \\.npy array')


def test_pickled_object_npy_is_refused(make_dataset, assert_rejected):
    root = make_dataset('diffmm')
    np.save(root / 'image_feat.npy', np.array([{'a': 1}] * NUM_ITEMS),
            allow_pickle=True)
    assert_rejected(root, root / 'image_feat.npy',
                    'cannot be read as a \\.npy array')


def test_garbage_json(make_dataset, assert_rejected):
    root = make_dataset('mmssl')
    _rewrite(root / 'val.json', GARBAGE)
    assert_rejected(root, root / 'val.json', 'cannot be read as JSON')
    _rewrite(root / 'val.json', b'[[0, 1]]')
    assert_rejected(root, root / 'val.json',
                    'expected a JSON object \\{user: \\[items\\]\\}')
    _rewrite(root / 'val.json', b'{"0": [1.5]}')
    assert_rejected(root, root / 'val.json',
                    'items of user 0 must be a list of integers')
    # json's recursion limit: a RecursionError traceback.
    _rewrite(root / 'val.json', b'[' * 100_000 + b']' * 100_000)
    assert_rejected(root, root / 'val.json', 'cannot be read as JSON '
                    '\\(nested too deeply\\)')
    _rewrite(root / 'val.json', b'{"bob": [1]}')
    assert_rejected(root, root / 'val.json',
                    "user id 'bob' is not an integer")
    _rewrite(root / 'val.json', b'{"1_0": [1]}')  # int() would take it
    assert_rejected(root, root / 'val.json',
                    "user id '1_0' is not an integer")
    _rewrite(root / 'val.json', b'{"0": {}}')
    assert_rejected(root, root / 'val.json',
                    'items of user 0 must be a list of integers')


@pytest.mark.parametrize('text,keys', [
    ('{"0": [2], "1": [3], "0": [4]}', "'0' and '0'"),
    ('{"1": [3], "0": [2], "01": [4]}', "'1' and '01'"),
])
def test_json_user_given_twice(make_dataset, assert_rejected, text, keys):
    # json.load would keep the last list silently.
    root = make_dataset('mmssl')
    _rewrite(root / 'val.json', text.encode())
    user = 0 if keys.startswith("'0'") else 1
    assert_rejected(root, root / 'val.json',
                    re.escape(f'user {user} is given twice (keys {keys}): '
                              f"give each user's items in one list"))


def test_json_with_byte_order_mark(make_dataset, tiny_splits, tmp_path):
    root = make_dataset('mmssl', tiny_splits)
    plain = read_dataset(str(root))
    path = root / 'train.json'
    _rewrite(path, '\ufeff'.encode() + path.read_bytes())
    raw = read_dataset(str(root))
    for split in ('train', 'val', 'test'):
        np.testing.assert_array_equal(raw.edges[split], plain.edges[split])


@pytest.mark.parametrize('fmt', ['csv', 'parquet'])
def test_garbage_table(make_dataset, assert_rejected, fmt):
    root = make_dataset('tabular' if fmt == 'csv' else 'parquet')
    path = root / f'interactions.{fmt}'
    # Bytes that neither the CSV tokenizer nor Parquet accept.
    _rewrite(path, bytes(range(256)) * 3)
    assert_rejected(root, path, 'cannot be read as a table')


# Restricted unpickling #######################################################


class _SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command, ))


class _OpenFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_pickle_calling_os_system_is_refused(make_dataset, assert_rejected,
                                             tmp_path):
    marker = tmp_path / 'pwned'
    root = make_dataset('diffmm')
    _rewrite(root / 'trnMat.pkl',
             pickle.dumps(_SystemCall(f'touch {marker}')))
    assert_rejected(root, root / 'trnMat.pkl',
                    "not a valid sparse-matrix pickle \\(refusing to load "
                    "'(posix|os|nt)\\.system'")
    assert not marker.exists()


@pytest.mark.parametrize('fmt', ['bsr', 'dia'])
def test_sparse_format_not_read_is_named(make_dataset, assert_rejected,
                                         tiny_splits, fmt):
    root = make_dataset('diffmm')
    edges = np.asarray(tiny_splits['train'])
    mat = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                        shape=(NUM_USERS, NUM_ITEMS)).asformat(fmt)
    _rewrite(root / 'trnMat.pkl', pickle.dumps(mat))
    assert_rejected(
        root, root / 'trnMat.pkl',
        "not a valid sparse-matrix pickle \\(refusing to load "
        f"'scipy\\.sparse\\..*{fmt}_matrix': the sparse formats read are "
        "COO, CSR, CSC, DOK and LIL \\(save the matrix with "
        "\\.tocoo\\(\\)\\)\\)$")


def test_pickle_opening_a_file_is_refused(make_dataset, assert_rejected,
                                          tmp_path):
    marker = tmp_path / 'created-by-pickle'
    root = make_dataset('diffmm')
    _rewrite(root / 'valMat.pkl', pickle.dumps(_OpenFile(str(marker))))
    assert_rejected(root, root / 'valMat.pkl',
                    "not a valid sparse-matrix pickle \\(refusing to load "
                    "'(builtins|_?io)\\.open'")  # _io on Python 3.13
    assert not marker.exists()


def test_payload_hidden_inside_a_sparse_matrix_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    mat = sp.coo_matrix(np.eye(3, dtype=np.float32))
    mat.payload = _SystemCall(f'touch {marker}')  # pickled with __dict__
    path = tmp_path / 'trnMat.pkl'
    _rewrite(path, pickle.dumps(mat))
    with pytest.raises(DatasetError, match=re.escape(f'{path}: ') +
                       "not a valid sparse-matrix pickle.*refusing"):
        load_sparse_pickle(str(path))
    assert not marker.exists()


def test_pickle_of_other_numpy_function_is_refused(tmp_path):
    path = tmp_path / 'm.pkl'
    _rewrite(path, b'\x80\x02cnumpy\nload\nq\x00.')
    with pytest.raises(DatasetError,
                       match="refusing to load 'numpy\\.load'"):
        load_sparse_pickle(str(path))


def test_pickle_of_a_dict_is_not_a_matrix(make_dataset, assert_rejected):
    root = make_dataset('diffmm')
    _rewrite(root / 'tstMat.pkl', pickle.dumps({'row': [0], 'col': [1]}))
    assert_rejected(root, root / 'tstMat.pkl',
                    'expected a SciPy sparse matrix, got dict')
    _rewrite(root / 'tstMat.pkl', pickle.dumps(np.eye(NUM_USERS)))
    assert_rejected(root, root / 'tstMat.pkl',
                    'expected a SciPy sparse matrix, got ndarray')


@pytest.mark.parametrize('cls', [
    sp.coo_matrix, sp.csr_matrix, sp.csc_matrix, sp.lil_matrix,
    sp.csr_array, sp.coo_array,
    sp.dok_matrix
])
def test_sparse_classes_round_trip(tmp_path, cls):
    dense = np.zeros((4, 6), dtype=np.float32)
    dense[[0, 1, 3, 3], [5, 0, 2, 4]] = [1, 2, 3, 4]
    path = tmp_path / 'm.pkl'
    _rewrite(path, pickle.dumps(cls(dense)))
    out = load_sparse_pickle(str(path))
    assert isinstance(out, sp.coo_matrix)
    np.testing.assert_array_equal(out.toarray(), dense)


def test_old_scipy_module_paths(tmp_path):
    r"""A pickle written by an old SciPy/NumPy names ``scipy.sparse.coo``
    and ``numpy.core.multiarray``."""
    dense = np.zeros((3, 4))
    dense[[0, 2, 2], [1, 0, 3]] = 1.0
    data = pickle.dumps(sp.coo_matrix(dense), protocol=3)
    data = re.sub(rb'cscipy\.sparse\._coo\n', b'cscipy.sparse.coo\n', data)
    data = re.sub(rb'cnumpy\._core\.multiarray\n', b'cnumpy.core.multiarray\n',
                  data)
    assert b'cscipy.sparse.coo\ncoo_matrix\n' in data
    assert b'cnumpy.core.multiarray\n_reconstruct\n' in data
    path = tmp_path / 'old.pkl'
    _rewrite(path, data)
    np.testing.assert_array_equal(load_sparse_pickle(str(path)).toarray(),
                                  dense)


def test_old_scipy_pickle_of_tiktok_dev(tiktok_root):
    path = os.path.join(tiktok_root, 'trnMat.pkl')
    with open(path, 'rb') as f:
        head = f.read(200)
    assert b'scipy.sparse.coo\ncoo_matrix' in head  # really the old path
    mat = load_sparse_pickle(path)
    assert mat.shape == (9308, 6710)
    assert mat.nnz == 59541


@pytest.mark.parametrize('protocol', [0, 2])
def test_low_protocol_pickles_load(tmp_path, protocol):
    dense = np.eye(3, dtype=np.float32)
    path = tmp_path / 'm.pkl'
    _rewrite(path, pickle.dumps(sp.coo_matrix(dense), protocol=protocol))
    np.testing.assert_array_equal(load_sparse_pickle(str(path)).toarray(),
                                  dense)


# Corrupt sparse matrices #####################################################

# Unpickling sets a matrix's attributes unchecked: each case below once
# crashed Python (a short indptr: heap corruption or a segfault) or gave a
# traceback. Each matrix starts as a valid 4 x 5 one with 5 entries.


def _short_indptr(m):
    m.indptr = m.indptr[:2]


def _decreasing_indptr(m):  # no entries, so SciPy's own check skips it
    m.indptr = np.array([0, 3, -1, 0, 0], dtype=m.indptr.dtype)
    m.indices = m.indices[:0]
    m.data = m.data[:0]


def _indptr_past_the_entries(m):
    m.indptr[-1] = 7


def _short_data(m):
    m.data = m.data[:-1]


def _index_50(m):
    m.indices[2] = 50


def _index_minus_3(m):
    m.indices[2] = -3


def _float_indices(m):
    m.indices = m.indices.astype(np.float64)


def _columns_plus_10(m):
    m.coords = (m.row, m.col + 10)


def _rows_minus_3(m):
    m.coords = (m.row - 3, m.col)


def _object_values(m):
    m.data = m.data.astype(object)


def _shape(shape):
    def corrupt(m):
        m._shape = shape
    return corrupt


def _lil_rows(m):
    rows = np.empty(400, dtype=object)  # 400 rows in a 4-row matrix
    data = np.empty(400, dtype=object)
    for i in range(400):
        rows[i], data[i] = [i % NUM_ITEMS], [1.0]
    m.rows, m.data = rows, data


CORRUPT_MATRICES = {  # id: (format, corruption, problem)
    'csr-short-indptr': (
        'csr', _short_indptr,
        'indptr has 2 entries, expected 5 (one per row plus one)'),
    'csc-short-indptr': (
        'csc', _short_indptr,
        'indptr has 2 entries, expected 6 (one per column plus one)'),
    'csr-decreasing-indptr': (
        'csr', _decreasing_indptr, 'indptr must be a non-decreasing sequence'),
    'csr-indptr-past-the-entries': (
        'csr', _indptr_past_the_entries, 'indptr must run from 0 to the '
        'number of stored entries (5), got 0 to 7'),
    'csr-mismatched-lengths': (
        'csr', _short_data, 'indices and data differ in length (5 and 4)'),
    'coo-mismatched-lengths': (
        'coo', _short_data, 'row, col and data differ in length (5, 5 and 4)'),
    'csr-index-out-of-range': (
        'csr', _index_50, 'column index 50 outside the shape (4, 5)'),
    'csc-index-out-of-range': (
        'csc', _index_50, 'row index 50 outside the shape (4, 5)'),
    'coo-index-out-of-range': (
        'coo', _columns_plus_10, 'column index 14 outside the shape (4, 5)'),
    'csr-negative-index': (
        'csr', _index_minus_3, 'negative column index -3'),
    'coo-negative-index': ('coo', _rows_minus_3, 'negative row index -3'),
    'csr-negative-shape': ('csr', _shape((-4, 5)), 'negative shape (-4, 5)'),
    'coo-negative-shape': ('coo', _shape((4, -5)), 'negative shape (4, -5)'),
    'coo-3d-shape': ('coo', _shape((4, 5, 1)), 'shape must be two integers '
                     '(users, items), got (4, 5, 1)'),
    'csr-float-indices': ('csr', _float_indices,
                          'indices must hold integers, got dtype float64'),
    'coo-object-values': ('coo', _object_values, 'interaction values must '
                          'be numbers, got dtype object'),
    'lil-wrong-row-count': ('lil', _lil_rows,
                            'rows must be an object array of 4 lists'),
}


@pytest.mark.parametrize('fmt,corrupt,problem',
                         list(CORRUPT_MATRICES.values()),
                         ids=list(CORRUPT_MATRICES))
def test_corrupt_sparse_matrix(make_dataset, assert_rejected, fmt, corrupt,
                               problem):
    dense = np.zeros((NUM_USERS, NUM_ITEMS), dtype=np.float32)
    dense[[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]] = 1
    mat = sp.coo_matrix(dense).asformat(fmt)
    corrupt(mat)
    root = make_dataset('diffmm')
    _rewrite(root / 'trnMat.pkl', pickle.dumps(mat))
    assert_rejected(root, root / 'trnMat.pkl',
                    re.escape(f'invalid sparse matrix: {problem}'))


def test_corrupt_heldout_sparse_matrix(make_dataset, assert_rejected):
    mat = sp.csr_matrix(np.eye(NUM_USERS, NUM_ITEMS, dtype=np.float32))
    _short_indptr(mat)
    root = make_dataset('diffmm')
    _rewrite(root / 'valMat.pkl', pickle.dumps(mat))
    assert_rejected(root, root / 'valMat.pkl', re.escape(
        'invalid sparse matrix: indptr has 2 entries, expected 5 (one per '
        'row plus one)'))


def test_sparse_matrix_missing_an_attribute(tmp_path):
    mat = sp.csr_matrix(np.eye(3, dtype=np.float32))
    del mat.indptr
    path = tmp_path / 'm.pkl'
    _rewrite(path, pickle.dumps(mat))
    with pytest.raises(DatasetError, match=re.escape(
            f"{path}: invalid sparse matrix (AttributeError: ")):
        load_sparse_pickle(str(path))


def test_unsigned_index_arrays_load(tmp_path):
    dense = np.zeros((4, 6), dtype=np.float32)
    dense[[0, 1, 3, 3], [5, 0, 2, 4]] = [1, 2, 3, 4]
    csr = sp.csr_matrix(dense)
    csr.indices, csr.indptr = (csr.indices.astype(np.uint16),
                               csr.indptr.astype(np.uint32))
    coo = sp.coo_matrix(dense)
    coo.coords = (coo.row.astype(np.uint8), coo.col.astype(np.uint64))
    for mat in (csr, coo):
        path = tmp_path / 'm.pkl'
        _rewrite(path, pickle.dumps(mat))
        np.testing.assert_array_equal(
            load_sparse_pickle(str(path)).toarray(), dense)


# Ids out of range ############################################################


@pytest.mark.parametrize('split,shape', [
    ('val', (NUM_USERS - 2, NUM_ITEMS - 1)),  # SciPy's shape without shape=
    ('test', (NUM_USERS, NUM_ITEMS + 2)),
    ('val', (NUM_USERS + 1, NUM_ITEMS + 1)),
])
def test_diffmm_heldout_matrix_of_other_shape_is_read(make_dataset,
                                                      tiny_splits, split,
                                                      shape):
    splits = tiny_splits
    splits[split] = [(u, i) for u, i in splits[split]
                     if u < shape[0] and i < shape[1]]
    other = make_dataset('diffmm', splits, shapes={split: shape})
    same = make_dataset('diffmm', splits, name='same')
    raw, expected = read_diffmm(str(other)), read_diffmm(str(same))
    assert (raw.num_users, raw.num_items) == (NUM_USERS, NUM_ITEMS)
    for key in ('train', 'val', 'test'):
        np.testing.assert_array_equal(raw.edges[key], expected.edges[key])


def test_diffmm_heldout_entry_outside_training_matrix(make_dataset,
                                                      assert_rejected,
                                                      tiny_splits):
    splits = tiny_splits
    splits['val'].append((NUM_USERS, 0))
    root = make_dataset('diffmm', splits,
                        shapes={'val': (NUM_USERS + 1, NUM_ITEMS)})
    assert_rejected(
        root, root / 'valMat.pkl',
        re.escape(f'1 val interactions have user ids outside the training '
                  f'range 0..{NUM_USERS - 1} (first: {NUM_USERS})'))
    splits['val'].pop()
    splits['test'].append((0, NUM_ITEMS + 1))
    root = make_dataset('diffmm', splits, name='ds2',
                        shapes={'test': (NUM_USERS, NUM_ITEMS + 2)})
    assert_rejected(root, root / 'tstMat.pkl',
                    '1 test interactions have item ids outside the training '
                    'range')


@pytest.mark.parametrize('values,shown', [
    ([5.0, 3.0, 1.0, 4.0, 2.0, 1.0, 5.0, 3.0], '1 to 5'),
    ([-1.0] * 8, '-1'),
])
def test_diffmm_non_binary_values_are_noted(make_dataset, tiny_splits,
                                            values, shown):
    root = make_dataset('diffmm')
    edges = np.asarray(tiny_splits['train'])
    mat = sp.coo_matrix((np.asarray(values), (edges[:, 0], edges[:, 1])),
                        shape=(NUM_USERS, NUM_ITEMS))
    _rewrite(root / 'trnMat.pkl', pickle.dumps(mat))
    note = (f'{root / "trnMat.pkl"}: holds values other than 0 and 1 '
            f'({shown}); every nonzero entry, negative ones too, is read as '
            f'one interaction')
    with pytest.warns(UserWarning, match=re.escape(note)):
        raw = read_diffmm(str(root))
    assert raw.notes == [note]
    np.testing.assert_array_equal(raw.edges['train'], edges.T)


def test_diffmm_nan_interaction_value(make_dataset, assert_rejected):
    root = make_dataset('diffmm')
    mat = sp.coo_matrix((np.array([1.0, np.nan]), ([0, 1], [0, 1])),
                        shape=(NUM_USERS, NUM_ITEMS))
    _rewrite(root / 'valMat.pkl', pickle.dumps(mat))
    assert_rejected(root, root / 'valMat.pkl',
                    'contains NaN or infinite values')


@pytest.mark.parametrize('split,edge,problem', [
    ('train', (-1, 0), '1 train interactions have user ids negative '
     '\\(first: -1\\)'),
    ('train', (0, -3), '1 train interactions have item ids negative '
     '\\(first: -3\\)'),
    ('val', (-2, 1), '1 val interactions have user ids negative'),
    ('test', (1, -1), '1 test interactions have item ids negative'),
])
@pytest.mark.parametrize('layout', ['mmssl', 'tabular'])
def test_negative_ids(make_dataset, assert_rejected, tiny_splits, layout,
                      split, edge, problem):
    tiny_splits[split].append(edge)
    root = make_dataset(layout, tiny_splits)
    name = MMSSL_NAMES[split] if layout == 'mmssl' else 'interactions.csv'
    assert_rejected(root, root / name, problem)


@pytest.mark.parametrize('split,edge,problem', [
    ('val', (NUM_USERS, 0), f'1 val interactions have user ids outside the '
     f'training range 0..{NUM_USERS - 1} \\(first: {NUM_USERS}\\)'),
    # Items are numbered by the feature rows (the catalogue), not by the
    # training split.
    ('test', (0, NUM_ITEMS + 3), f'1 test interactions have item ids outside '
     f'the item feature rows 0..{NUM_ITEMS - 1} of image_feat.npy '
     f'\\(first: {NUM_ITEMS + 3}\\)'),
    ('train', (1, NUM_ITEMS), f'1 train interactions have item ids outside '
     f'the item feature rows 0..{NUM_ITEMS - 1} of image_feat.npy '
     f'\\(first: {NUM_ITEMS}\\)'),
])
@pytest.mark.parametrize('layout', ['mmssl', 'tabular', 'parquet'])
def test_ids_beyond_their_range(make_dataset, assert_rejected, tiny_splits,
                                layout, split, edge, problem):
    tiny_splits[split].append(edge)
    root = make_dataset(layout, tiny_splits)
    name = {'mmssl': MMSSL_NAMES[split], 'tabular': 'interactions.csv',
            'parquet': 'interactions.parquet'}[layout]
    assert_rejected(root, root / name, problem)


@pytest.mark.parametrize('layout', ['mmssl', 'tabular', 'parquet'])
def test_catalogue_items_without_interactions_keep_their_ids(
        make_dataset, tiny_features, tiny_splits, layout):
    # In these layouts the feature rows are the catalogue: items without any
    # interaction are kept wherever their ids lie. The largest ids used to
    # be refused (the item count was the largest training id + 1), lower
    # ones accepted.
    features = tiny_features(num_items=NUM_ITEMS + 2)
    root = make_dataset(layout, tiny_splits, features=features)
    with pytest.warns(UserWarning) as record:
        raw = read_dataset(str(root))
    assert raw.num_items == NUM_ITEMS + 2
    assert raw.features['visual'].shape[0] == NUM_ITEMS + 2
    note = (f'{root / "image_feat.npy"}: the last 2 feature rows (items '
            f'{NUM_ITEMS}..{NUM_ITEMS + 1}) have no interaction in any split')
    assert [str(w.message) for w in record][-1].startswith(note)
    assert raw.notes[-1].startswith(note)
    expected = sorted(tiny_splits['train'])
    assert raw.edges['train'].T.tolist() == [list(e) for e in expected]


@pytest.mark.parametrize('layout', ['mmssl', 'tabular'])
def test_feature_files_disagreeing_in_rows(make_dataset, assert_rejected,
                                           tiny_features, layout):
    features = tiny_features(('visual', 'acoustic'))
    features['acoustic'] = tiny_features(('acoustic', ),
                                         num_items=NUM_ITEMS + 1)['acoustic']
    root = make_dataset(layout, features=features)
    assert_rejected(root, root / 'audio_feat.npy', re.escape(
        f'has {NUM_ITEMS + 1} feature rows but image_feat.npy has '
        f'{NUM_ITEMS}: every feature file needs one row per item'))


@pytest.mark.parametrize('layout', ['mmssl', 'tabular'])
def test_feature_files_disagreeing_blame_the_one_too_short(
        make_dataset, assert_rejected, tiny_features, layout):
    # The first file read is the wrong one here: the interactions use item
    # NUM_ITEMS - 1, which it lacks.
    features = tiny_features(('visual', 'acoustic'))
    features['visual'] = tiny_features(('visual', ),
                                       num_items=NUM_ITEMS - 1)['visual']
    root = make_dataset(layout, features=features)
    assert_rejected(root, root / 'image_feat.npy', re.escape(
        f'has {NUM_ITEMS - 1} feature rows but audio_feat.npy has '
        f'{NUM_ITEMS}: every feature file needs one row per item (the '
        f'interactions use item ids up to {NUM_ITEMS - 1})'))


@pytest.mark.parametrize('split,name,edge,first', [
    ('train', 'item', (0, 2**63), 2**63),
    ('val', 'user', (2**64 - 1, 1), 2**64 - 1),
    ('test', 'item', (1, -2**63 - 1), -2**63 - 1),
])
def test_mmssl_ids_beyond_int64(make_dataset, assert_rejected, tiny_splits,
                                split, name, edge, first):
    tiny_splits[split].append(edge)
    root = make_dataset('mmssl', tiny_splits)
    assert_rejected(root, root / MMSSL_NAMES[split], re.escape(
        f'{name} ids out of range in 1 interaction (first: {first}); ids '
        f'must lie in 0..2**63-1'))


@pytest.mark.parametrize('layout', ['mmssl', 'tabular'])
def test_ids_too_large_for_pair_keys(make_dataset, assert_rejected,
                                     tiny_splits, layout):
    tiny_splits['train'].append((2**63 - 1, 0))  # fits in int64, but ...
    root = make_dataset(layout, tiny_splits)
    name = MMSSL_NAMES['train'] if layout == 'mmssl' else 'interactions.csv'
    assert_rejected(root, root / name, re.escape(
        f'{2**63} users x {NUM_ITEMS} items is too large (more than '
        f'2**63-1 user-item pairs)'))


def _tiny_table(splits):
    r"""The tiny data set as a table, train rows first, in input order."""
    import pandas as pd
    return pd.DataFrame([(u, i, split) for split in ('train', 'val', 'test')
                         for (u, i) in splits[split]],
                        columns=['user', 'item', 'split'])


def _replace_table(root, frame, fmt):
    r"""Writes :obj:`frame` as the only interactions table of :obj:`root`
    (as CSV or Parquet) and returns its path."""
    for name in ('interactions.csv', 'interactions.parquet'):
        if (root / name).exists():
            os.remove(root / name)
    path = root / f'interactions.{fmt}'
    getattr(frame, 'to_csv' if fmt == 'csv' else 'to_parquet')(
        path, index=False)
    return path


@pytest.mark.parametrize('fmt', ['csv', 'parquet'])
def test_tabular_header_only(make_dataset, assert_rejected, tiny_splits,
                             fmt):
    root = make_dataset('tabular')
    path = _replace_table(root, _tiny_table(tiny_splits).iloc[:0], fmt)
    assert_rejected(root, path, re.escape(
        'the table has no interactions (no rows)'))


@pytest.mark.parametrize('column,noun', [('user', 'missing id'),
                                         ('item', 'missing id'),
                                         ('split', 'missing value')])
def test_tabular_csv_empty_cell(make_dataset, assert_rejected, tiny_splits,
                                column, noun):
    root = make_dataset('tabular')
    frame = _tiny_table(tiny_splits).astype({column: object})
    frame.loc[[2, 9], column] = None
    path = _replace_table(root, frame, 'csv')
    line = path.read_text().splitlines()[3]  # the third row
    assert line.split(',')[['user', 'item', 'split'].index(column)] == ''
    assert_rejected(root, path, re.escape(
        f"column '{column}' has 2 {noun}s (first in row 3 below the "
        f"header)"))


def test_tabular_parquet_nullable_ids_with_na(make_dataset, assert_rejected,
                                              tiny_splits):
    root = make_dataset('parquet')
    frame = _tiny_table(tiny_splits).astype({'user': 'Int64'})
    frame.loc[1, 'user'] = None
    path = _replace_table(root, frame, 'parquet')
    assert_rejected(root, path, re.escape(
        "column 'user' has 1 missing id (first in row 2)") + '$')
    # Without NA, a nullable integer column is fine.
    frame.loc[1, 'user'] = 0
    _replace_table(root, frame, 'parquet')
    raw = read_dataset(str(root))
    assert raw.edges['train'].shape == (2, len(tiny_splits['train']))


@pytest.mark.parametrize('fmt', ['csv', 'parquet'])
@pytest.mark.parametrize('value', [2**64 - 1, 2**63])
def test_tabular_uint64_ids_beyond_int64(make_dataset, assert_rejected,
                                         tiny_splits, fmt, value):
    root = make_dataset('tabular')
    frame = _tiny_table(tiny_splits).astype({'user': np.uint64})
    frame.loc[4, 'user'] = value
    assert frame['user'].dtype == np.uint64
    path = _replace_table(root, frame, fmt)
    assert_rejected(root, path, re.escape(
        f'user ids out of range in 1 interaction (first: {value}); ids must '
        f'lie in 0..2**63-1'))


def test_tabular_csv_ids_beyond_uint64(make_dataset, assert_rejected,
                                       tiny_splits):
    r"""pandas reads such ids (or a mix of negative ids and ids beyond
    int64) as text."""
    root = make_dataset('tabular')
    frame = _tiny_table(tiny_splits).astype({'item': object})
    frame.loc[[3, 5], 'item'] = [2**64, -1]
    path = _replace_table(root, frame, 'csv')
    assert_rejected(root, path, re.escape(
        f'item ids out of range in 1 interaction (first: {2**64})'))
    frame.loc[[3, 5], 'item'] = [2**64 - 1, -1]
    _replace_table(root, frame, 'csv')
    assert_rejected(root, path, re.escape(
        f'item ids out of range in 1 interaction (first: {2**64 - 1})'))


# Features ####################################################################


@pytest.mark.parametrize('rows', [NUM_ITEMS - 1, NUM_ITEMS + 1])
def test_feature_row_count(make_dataset, assert_rejected, tiny_features,
                           rows):
    features = tiny_features(('visual', 'textual'))
    features['textual'] = tiny_features(('textual', ), num_items=rows)[
        'textual']
    root = make_dataset('diffmm', features=features)
    assert_rejected(root, root / 'text_feat.npy',
                    f'has {rows} feature rows but the interactions have '
                    f'{NUM_ITEMS} items')


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_non_finite_features(make_dataset, assert_rejected, tiny_features,
                             value):
    features = tiny_features()
    features['acoustic'][3, 1] = value
    root = make_dataset('mmssl', features=features)
    assert_rejected(root, root / 'audio_feat.npy',
                    'contains NaN or infinite values in 1 rows '
                    '\\(first: row 3\\)')


@pytest.mark.filterwarnings('ignore:overflow encountered:RuntimeWarning')
def test_float64_overflowing_float32_is_rejected(make_dataset,
                                                 assert_rejected,
                                                 tiny_features):
    features = tiny_features()
    features['visual'] = features['visual'].astype(np.float64)
    features['visual'][1, 0] = 1e300  # inf once cast to float32
    root = make_dataset('diffmm', features=features)
    assert_rejected(root, root / 'image_feat.npy', re.escape(
        'has values beyond the float32 range (|x| > 3.4e38) in 1 rows '
        '(first: row 1)'))


@pytest.mark.parametrize('dtype', [np.int64, np.int32, np.uint8, bool])
def test_non_float_features(make_dataset, assert_rejected, tiny_features,
                            dtype):
    features = tiny_features()
    features['visual'] = np.ones((NUM_ITEMS, 3), dtype=dtype)
    root = make_dataset('tabular', features=features)
    assert_rejected(root, root / 'image_feat.npy',
                    'features must be floating point, got dtype '
                    f'{np.dtype(dtype)}')


@pytest.mark.parametrize('shape', [(NUM_ITEMS, ), (NUM_ITEMS, 2, 2)])
def test_features_not_2d(make_dataset, assert_rejected, tiny_features,
                         shape):
    features = tiny_features()
    features['textual'] = np.ones(shape, dtype=np.float32)
    root = make_dataset('diffmm', features=features)
    assert_rejected(root, root / 'text_feat.npy',
                    re.escape('features must be a 2-D [items, dim] array, '
                              f'got shape {shape}'))


def test_features_with_zero_columns(make_dataset, assert_rejected,
                                    tiny_features):
    features = tiny_features()
    features['visual'] = np.ones((NUM_ITEMS, 0), dtype=np.float32)
    root = make_dataset('diffmm', features=features)
    assert_rejected(root, root / 'image_feat.npy', 'features have zero '
                    'columns')


def test_feature_file_that_is_an_npz_archive(make_dataset, assert_rejected,
                                             tiny_features):
    # np.load returns an NpzFile for a zip: an AttributeError traceback.
    root = make_dataset('diffmm', features=tiny_features())
    with open(root / 'image_feat.npy', 'wb') as f:
        np.savez(f, x=np.ones((NUM_ITEMS, 3), dtype=np.float32))
    assert_rejected(root, root / 'image_feat.npy', 'is an \\.npz archive, '
                    'not a \\.npy array')


def test_feature_file_that_is_a_broken_link(make_dataset, assert_rejected,
                                            tiny_features):
    # It was skipped silently: training went on without the modality.
    root = make_dataset('diffmm', features=tiny_features())
    (root / 'image_feat.npy').unlink()
    (root / 'image_feat.npy').symlink_to(root / 'gone.npy')
    assert_rejected(root, root / 'image_feat.npy', 'is a link to a missing '
                    'file')


def test_load_features_float16(tmp_path):
    array = np.array([[0.5, -1.25], [65504.0, 1e-3]], dtype=np.float16)
    np.save(tmp_path / 'f.npy', array)
    out = load_features(str(tmp_path / 'f.npy'), 2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, array.astype(np.float32))


# Empty and malformed splits ##################################################


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
@pytest.mark.parametrize('layout', ['diffmm', 'mmssl', 'tabular'])
def test_empty_split(make_dataset, assert_rejected, tiny_splits, layout,
                     split):
    tiny_splits[split] = []
    root = make_dataset(layout, tiny_splits)
    name = {'diffmm': DIFFMM_NAMES[split], 'mmssl': MMSSL_NAMES[split],
            'tabular': 'interactions.csv'}[layout]
    assert_rejected(root, root / name,
                    f'the {split} split has no interactions')


def test_diffmm_explicit_zeros_are_no_interactions(make_dataset,
                                                   assert_rejected):
    root = make_dataset('diffmm')
    mat = sp.coo_matrix((np.zeros(2), ([0, 1], [0, 1])),
                        shape=(NUM_USERS, NUM_ITEMS))
    _rewrite(root / 'tstMat.pkl', pickle.dumps(mat))
    assert_rejected(root, root / 'tstMat.pkl',
                    'the test split has no interactions')


def test_tabular_unknown_split_value(make_dataset, assert_rejected,
                                     tiny_splits):
    tiny_splits['validation'] = [(0, 3)]
    tiny_splits['dev'] = [(1, 4)]
    root = make_dataset('tabular', tiny_splits)
    assert_rejected(root, root / 'interactions.csv',
                    re.escape("column 'split' has unknown values ['dev', "
                              "'validation'] (expected train, val, test)"))


@pytest.mark.parametrize('drop', [['split'], ['user', 'item']])
def test_tabular_missing_columns(make_dataset, assert_rejected, drop):
    import pandas as pd
    root = make_dataset('tabular')
    path = root / 'interactions.csv'
    pd.read_csv(path).drop(columns=drop).to_csv(path, index=False)
    assert_rejected(root, path, f"missing column\\(s\\) {', '.join(drop)}")


@pytest.mark.parametrize('values,dtype', [
    (['a', 'b'], '(object|str)'),
    ([0.5, 1.0], 'float64'),
])
def test_tabular_non_integer_ids(make_dataset, assert_rejected, values,
                                 dtype):
    import pandas as pd
    root = make_dataset('tabular')
    path = root / 'interactions.csv'
    frame = pd.read_csv(path)
    frame['item'] = frame['item'].astype(object)
    frame.loc[:1, 'item'] = values
    frame.to_csv(path, index=False)
    assert_rejected(root, path, "column 'item' must hold integer ids, got "
                    f'{dtype}')


# Duplicates ##################################################################


@pytest.mark.parametrize('layout', ['diffmm', 'mmssl', 'tabular'])
def test_duplicates_removed_with_warning(make_dataset, tiny_splits, tmp_path,
                                         layout):
    original = {k: list(v) for k, v in tiny_splits.items()}
    tiny_splits['train'] += [(2, 3), (0, 0), (2, 3)]
    tiny_splits['test'] += [(3, 0)]
    root = make_dataset(layout, tiny_splits)
    train_file = {'diffmm': 'trnMat.pkl', 'mmssl': 'train.json',
                  'tabular': 'interactions.csv'}[layout]
    test_file = {'diffmm': 'tstMat.pkl', 'mmssl': 'test.json',
                 'tabular': 'interactions.csv'}[layout]
    with pytest.warns(UserWarning) as record:
        dataset = MultiModalRecDataset(str(root),
                                       processed_dir=str(tmp_path / 'c'))
    messages = [str(w.message) for w in record]
    assert any(re.fullmatch(
        re.escape(f'{root / train_file}: removed 3 duplicate train '
                  'interactions'), m) for m in messages), messages
    assert any(re.fullmatch(
        re.escape(f'{root / test_file}: removed 1 duplicate test '
                  'interaction'), m) for m in messages), messages
    assert len(dataset.notes) == 2
    store = dataset[0]['user', 'interacts', 'item']
    for key, split in (('edge_index', 'train'), ('val_edge_index', 'val'),
                       ('test_edge_index', 'test')):
        expected = sorted(set(original[split]))
        assert [tuple(e) for e in store[key].t().tolist()] == expected


# Held-out interactions seen in an earlier split #############################

HELDOUT_FILES = {
    'diffmm': DIFFMM_NAMES,
    'mmssl': MMSSL_NAMES,
    'tabular': {s: 'interactions.csv' for s in DIFFMM_NAMES},
    'parquet': {s: 'interactions.parquet' for s in DIFFMM_NAMES},
}


@pytest.mark.parametrize('layout', ['diffmm', 'mmssl', 'tabular', 'parquet'])
def test_heldout_pairs_seen_earlier_removed_with_warning(
        make_dataset, tiny_splits, tmp_path, layout):
    original = {k: list(v) for k, v in tiny_splits.items()}
    tiny_splits['val'] += [(0, 0)]  # a training pair
    tiny_splits['test'] += [(1, 1), (0, 2)]  # a training and a val pair
    root = make_dataset(layout, tiny_splits)
    names = HELDOUT_FILES[layout]
    with pytest.warns(UserWarning) as record:
        dataset = MultiModalRecDataset(str(root),
                                       processed_dir=str(tmp_path / 'c'))
    expected = [
        f"{root / names['val']}: removed 1 val interaction also in the "
        f"train split (evaluation never ranks those items, so they could "
        f"never be hit)",
        f"{root / names['test']}: removed 2 test interactions also in the "
        f"train or val split (evaluation never ranks those items, so they "
        f"could never be hit)",
    ]
    assert [str(w.message) for w in record
            if 'removed' in str(w.message)] == expected
    assert dataset.notes == expected
    store = dataset[0]['user', 'interacts', 'item']
    for key, split in (('edge_index', 'train'), ('val_edge_index', 'val'),
                       ('test_edge_index', 'test')):
        assert [tuple(e) for e in store[key].t().tolist()] == sorted(
            original[split])


@pytest.mark.parametrize('split', ['val', 'test'])
@pytest.mark.parametrize('layout', ['diffmm', 'mmssl', 'tabular'])
def test_heldout_split_of_seen_pairs_only(make_dataset, assert_rejected,
                                          tiny_splits, layout, split):
    if split == 'val':  # e.g. valMat.pkl a copy of trnMat.pkl
        tiny_splits['val'] = list(tiny_splits['train'])
    else:
        tiny_splits['test'] = tiny_splits['val'] + tiny_splits['train'][:1]
    earlier = {'val': 'train', 'test': 'train or val'}[split]
    root = make_dataset(layout, tiny_splits)
    assert_rejected(root, root / HELDOUT_FILES[layout][split], re.escape(
        f'the {split} split has no interactions (all of them are also in '
        f'the {earlier} split)'))


# Users without a possible negative item ######################################


@pytest.mark.parametrize('layout', ['diffmm', 'mmssl', 'tabular'])
def test_user_with_every_item_in_training(make_dataset, assert_rejected,
                                          tiny_splits, layout):
    tiny_splits['train'] += [(3, 0), (3, 1), (3, 3)]  # had 2 and 4
    tiny_splits['test'] = [(2, 4)]
    root = make_dataset(layout, tiny_splits)
    assert_rejected(root, root / HELDOUT_FILES[layout]['train'], re.escape(
        'user 3 has interacted with every item in training: no negative '
        'item can be sampled') + '$')
    tiny_splits['train'] += [(1, 0), (1, 3), (1, 4)]  # had 1 and 2
    tiny_splits['val'] = [(0, 2)]
    root = make_dataset(layout, tiny_splits, name='ds2')
    assert_rejected(root, root / HELDOUT_FILES[layout]['train'], re.escape(
        'user 1 has interacted with every item in training: no negative '
        'item can be sampled (and 1 other user)'))


def test_nothing_written_on_failure_in_default_processed_dir(
        make_dataset, listing, tiny_features):
    r"""Without processed_dir, the cache goes to root/processed: a failed
    load must not leave it behind."""
    features = tiny_features()
    features['visual'][0, 0] = np.nan
    root = make_dataset('diffmm', features=features)
    before = listing(root)
    with pytest.raises(DatasetError, match=re.escape(
            f"{root / 'image_feat.npy'}: contains NaN")):
        MultiModalRecDataset(str(root))
    assert listing(root) == before
    assert not (root / 'processed').exists()


@pytest.mark.parametrize('layout', ['mmssl', 'tabular'])
def test_mostly_unused_user_ids_are_noted(make_dataset, tiny_splits,
                                          tmp_path, layout):
    tiny_splits['train'].append((99, 0))  # one stray id: 100 users
    root = make_dataset(layout, tiny_splits)
    train_file = {'mmssl': 'train.json', 'tabular': 'interactions.csv'}
    with pytest.warns(UserWarning, match='95 of the 100 user ids 0..99 have '
                      'no interaction in any split'):
        dataset = MultiModalRecDataset(str(root),
                                       processed_dir=str(tmp_path / 'c'))
    assert dataset.notes == [
        f'{root / train_file[layout]}: 95 of the 100 user ids 0..99 have no '
        f'interaction in any split (ids are expected to run from 0 without '
        f'large gaps; every user table is sized by the largest id)']
