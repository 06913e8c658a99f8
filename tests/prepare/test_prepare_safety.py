r"""``prepare`` never writes a data set the loader refuses, never deletes a
file it did not write, and reports bad input in one line naming the file,
the row or the option at fault."""
import errno
import json
import os
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from pyg_mmrec.cli import main
from pyg_mmrec.data import MultiModalRecDataset
from pyg_mmrec.data.readers import read_dataset
from pyg_mmrec.errors import ConfigError, DatasetError, MMRecError, \
    OutputError
from pyg_mmrec.prepare import pipeline, prepare, rebuild
from pyg_mmrec.prepare.features import check_device
from pyg_mmrec.prepare.tables import parse_ids

BASE = dict(user_col='uid', item_col='iid', rating_col='stars',
            timestamp_col='ts', user_k=3, item_k=3)


def write_tables(folder, rows, item_ids, dim=4, seed=0):
    r"""``inter.csv`` (user, item, ts), ``items.csv`` (item, title) and
    ``f.npy`` (one row per item table row) in :obj:`folder`."""
    pd.DataFrame(rows, columns=['user', 'item', 'ts']).to_csv(
        folder / 'inter.csv', index=False)
    pd.DataFrame({'item': item_ids,
                  'title': [f'title {i}' for i in item_ids]}).to_csv(
        folder / 'items.csv', index=False)
    rng = np.random.default_rng(seed)
    np.save(folder / 'f.npy', rng.random((len(item_ids), dim)))
    return {name: str(folder / name)
            for name in ('inter.csv', 'items.csv', 'f.npy')}


def run_cli(argv, capsys):
    r"""Runs ``pyg-mmrec`` and returns ``(status, stderr)``."""
    status = main(argv)
    return status, capsys.readouterr().err


# The output always loads #####################################################


def full_user_tables(folder):
    r"""User 0 has items 0..5 (in time order); users 1..29 have three of
    items 0..3. A temporal 6:2:2 split holds out items 4 and 5, which only
    user 0 has."""
    rng = np.random.default_rng(0)
    rows = [(0, i, i) for i in range(6)]
    for u in range(1, 30):
        rows += [(u, int(i), int(rng.integers(100)))
                 for i in rng.choice(4, 3, replace=False)]
    return write_tables(folder, rows, list(range(6)))


@pytest.mark.parametrize('cold_items, kept', [('drop', 4), ('train', 6)])
def test_user_with_every_item_is_refused(tmp_path, capsys, cold_items,
                                         kept):
    # Dropping the cold items 4 and 5 leaves user 0 with every other item
    # in training; moving them to training gives user 0 all six.
    paths = full_user_tables(tmp_path)
    out = tmp_path / 'out'
    status, err = run_cli([
        'prepare', '--interactions', paths['inter.csv'], '--items',
        paths['items.csv'], '--features', f"visual={paths['f.npy']}",
        '--k-core', '0', '--split', 'temporal', '--timestamp-col', 'ts',
        '--ratios', '6:2:2', '--cold-items', cold_items, '--out', str(out)],
        capsys)
    assert status == 2 and err.count('\n') == 1
    assert err.startswith(f"pyg-mmrec: error: {paths['inter.csv']}: user "
                          f"'0' has a training interaction with every one "
                          f'of the {kept} items')
    assert f'cold_items={cold_items}' in err
    assert 'remove such users' in err
    assert not out.exists()


def test_split_emptied_by_cold_items_is_refused(tmp_path):
    # Every user has items 0, 1, 2 in that order: a temporal 1:1:1 split
    # holds out 1 and 2, which then have no training interaction.
    rows = [(u, i, i) for u in range(5) for i in range(3)]
    paths = write_tables(tmp_path, rows, [0, 1, 2])
    with pytest.raises(DatasetError) as err:
        prepare(paths['inter.csv'], paths['items.csv'],
                str(tmp_path / 'out'), user_k=0, item_k=0,
                split='temporal', timestamp_col='ts', ratios=(1, 1, 1),
                features={'visual': paths['f.npy']})
    assert str(err.value).startswith(
        f"{paths['inter.csv']}: the val split is empty after splitting")
    assert '10 held-out interactions of items without a training ' \
        'interaction dropped (cold_items=drop)' in str(err.value)
    assert not (tmp_path / 'out').exists()


#: The seeds of test_whatever_prepare_writes_loads whose tables leave a
#: held-out split empty (28 of the 32 are prepared).
TOO_SMALL_TO_SPLIT = {11, 12, 25, 29}


@pytest.mark.parametrize('seed', range(32))
def test_whatever_prepare_writes_loads(tmp_path, seed):
    # Small random tables and options: prepare either refuses with one
    # error or writes a folder the reader accepts. User 0 has every item,
    # the rarest last in time, the shape that can leave a user without
    # negative items.
    rng = np.random.default_rng(seed)
    num_users, num_items = int(rng.integers(3, 12)), int(rng.integers(3, 8))
    popular = num_items - int(rng.integers(0, 3))
    rows = [(u, i, 10 + i if u == 0 else int(rng.integers(10)))
            for u in range(num_users)
            for i in range(num_items if u == 0 else popular)
            if u == 0 or rng.random() < 0.8]
    paths = write_tables(tmp_path, rows, list(range(num_items)))
    out = tmp_path / 'out'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tqdm and the reader's notes
        try:
            prepare(paths['inter.csv'], paths['items.csv'], str(out),
                    user_k=int(rng.integers(3)), item_k=int(rng.integers(2)),
                    split=['random', 'loo', 'temporal'][seed % 3],
                    timestamp_col='ts',
                    ratios=tuple(rng.integers(1, 4, size=3).tolist()),
                    cold_items=['drop', 'train'][seed // 3 % 2], seed=seed,
                    features={'visual': paths['f.npy']})
        except MMRecError as err:
            # Only tables too small for the split are refused: a prepare
            # that refused everything would otherwise pass.
            assert seed in TOO_SMALL_TO_SPLIT, err
            assert re.search('the (val|test) split is empty after splitting',
                             str(err))
            assert not out.exists()
            return
        assert seed not in TOO_SMALL_TO_SPLIT
        read_dataset(str(out))


# Nothing but prepare's own files is ever deleted #############################


def prepared(tables, out, **extra):
    return prepare(tables['inter.csv'], tables['items.csv'], str(out),
                   features={'visual': tables['vis.npy']},
                   **dict(BASE, **extra))


@pytest.mark.parametrize('what', ['interactions', 'items', 'features',
                                  'encoder'])
def test_inputs_inside_out_are_refused(tables, tmp_path, tree, what):
    out = tmp_path / 'ds'
    prepared(tables, out)
    encoder = tmp_path / 'enc.py'
    encoder.write_text('import numpy as np\n\n\ndef enc(items):\n'
                       '    return np.ones((len(items), 2))\n')
    inputs = {'interactions': tables['inter.csv'],
              'items': tables['items.csv'], 'features': tables['vis.npy'],
              'encoder': str(encoder)}
    moved = out / os.path.basename(inputs[what])
    shutil.copy(inputs[what], moved)
    inputs[what] = str(moved)
    before = tree(out)
    with pytest.raises(ConfigError) as err:
        prepare(inputs['interactions'], inputs['items'], str(out),
                overwrite=True, features={'visual': inputs['features']},
                encoders={'acoustic': f"{inputs['encoder']}:enc"}, **BASE)
    assert f"'{moved}' lies inside --out '{out}'" in str(err.value)
    assert tree(out) == before


def test_overwrite_keeps_files_prepare_did_not_write(tables, tmp_path, tree):
    out = tmp_path / 'ds'
    prepared(tables, out)
    # A file prepare did not write, or one it wrote that was replaced since
    # (an items.csv with the same name as the output), is never deleted.
    for name, content in (('notes.txt', b'keep me'),
                          ('items.csv', b'iid,title\n1,mine\n')):
        original = (out / name).read_bytes() if (out / name).exists() \
            else None
        (out / name).write_bytes(content)
        before = tree(out)
        with pytest.raises(ConfigError, match=f'holds {name}, which prepare '
                           'did not write or which changed since'):
            prepared(tables, out, overwrite=True)
        assert tree(out) == before
        if original is None:
            (out / name).unlink()
        else:
            (out / name).write_bytes(original)
    # A recipe that records no outputs: nothing is known to be ours.
    recipe = json.loads((out / 'recipe.json').read_text())
    (out / 'recipe.json').write_text(json.dumps(
        dict(recipe, outputs=None)))
    with pytest.raises(ConfigError, match='which prepare did not write'):
        prepared(tables, out, overwrite=True)
    (out / 'recipe.json').write_text(json.dumps(recipe))
    # The loader's cache is derived data: replaced with the data set.
    MultiModalRecDataset(str(out))
    assert (out / 'processed').is_dir()
    prepared(tables, out, overwrite=True, seed=3)
    assert not (out / 'processed').exists()
    # A rebuild into the recipe's own folder replaces it.
    rebuild(str(out / 'recipe.json'), str(out), overwrite=True)
    assert json.loads((out / 'recipe.json').read_text())['options'][
        'seed'] == 3


def test_pathlib_paths_are_accepted(tables, tmp_path):
    # A pathlib feature path was refused by the type checks (not a str).
    from pathlib import Path
    result = prepare(Path(tables['inter.csv']), Path(tables['items.csv']),
                     tmp_path / 'ds',
                     features={'visual': Path(tables['vis.npy'])}, **BASE)
    assert 'image_feat.npy' in result.files


def test_rebuild_in_place_from_inside_the_folder(tables, tmp_path,
                                                 monkeypatch, capsys):
    # '--out .' names the working directory, which the replacement moves
    # away: the result path used to be computed afterwards (traceback).
    out = tmp_path / 'ds'
    prepared(tables, out)
    loader_leftover = out / 'processed' / '.data_0123456789abcdef.pt.x1.tmp'
    loader_leftover.parent.mkdir()
    loader_leftover.write_bytes(b'an interrupted cache write')
    monkeypatch.chdir(out)
    status = main(['prepare', '--recipe', 'recipe.json', '--out', '.',
                   '--overwrite'])
    assert status == 0, capsys.readouterr().err
    outputs = json.loads((out / 'recipe.json').read_text())['outputs']
    assert sorted(os.listdir(out)) == sorted([*outputs, 'recipe.json'])


def test_symlinked_out_is_refused(tables, tmp_path, tree):
    # Replacing the link replaced the link, not the folder it names, and
    # left the old folder's link behind.
    out = tmp_path / 'ds'
    prepared(tables, out)
    link = tmp_path / 'link'
    link.symlink_to(out)
    before = tree(out)
    with pytest.raises(ConfigError, match=f"--out '{link}' is a symbolic "
                       f'link: give the folder it points to'):
        prepared(tables, link, overwrite=True)
    assert tree(out) == before and link.is_symlink()


def test_storage_error_is_one_output_error(tables, tmp_path, monkeypatch,
                                           capsys):
    def full_disk(path, mode='r', *args, **kwargs):
        if path.endswith('.npy'):  # after the CSV files were written
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(pipeline, 'open', full_disk, raising=False)
    out = tmp_path / 'out'
    before = set(os.listdir(tmp_path))
    status, err = run_cli([
        'prepare', '--interactions', tables['inter.csv'], '--items',
        tables['items.csv'], '--out', str(out), '--user-col', 'uid',
        '--item-col', 'iid', '--features', f"visual={tables['vis.npy']}"],
        capsys)
    assert (status, err) == (2, f"pyg-mmrec: error: {out / 'image_feat.npy'}"
                             ': cannot be written (File too large)\n')
    assert set(os.listdir(tmp_path)) == before  # no staging folder left
    with pytest.raises(OutputError):
        prepared(tables, out)


# Ids and messages ############################################################


def test_integer_ids_beyond_float_precision(tmp_path):
    big = 2**53 + 1  # 9007199254740993: not a float64
    rows = [(big + u, i, 0) for u in range(6) for i in range(5)
            if (u + i) % 5]
    paths = write_tables(tmp_path, rows, list(range(5)))
    prepare(paths['inter.csv'], paths['items.csv'], str(tmp_path / 'out'),
            user_k=0, item_k=0, split='loo',
            features={'visual': paths['f.npy']})
    users = pd.read_csv(tmp_path / 'out' / 'users.csv', dtype={'raw_id': str})
    assert users['raw_id'].tolist() == [str(big + u) for u in range(6)]


@pytest.mark.parametrize('values, expected', [
    (['9223372036854775807', '-9223372036854775808', ' +7 ', '007'],
     [2**63 - 1, -2**63, 7, 7]),
    (['9007199254740993', '3.0'], [2**53 + 1, 3]),
    (['9223372036854775808', '1'], 'outside the int64 range'),
    (['1', '2.5'], "non-numeric ids but integer ids were declared (first: "
     "'2.5' on data row 1)"),
    (['1', 'nan'], 'non-numeric ids'),
    (np.array([2**64 - 1, 1], dtype=np.uint64), 'outside the int64 range'),
])
def test_parse_ids_is_exact(values, expected):
    frame = pd.DataFrame({'id': values},
                         dtype=None if isinstance(values, np.ndarray)
                         else str)
    if isinstance(expected, str):
        with pytest.raises(DatasetError, match=expected.replace('(', r'\(')
                           .replace(')', r'\)').replace('+', r'\+')):
            parse_ids('t.csv', frame, 'id', 'int')
    else:
        assert parse_ids('t.csv', frame, 'id', 'int').tolist() == expected


def shuffled_tables(folder):
    r"""Items 0..4 in the item table rows 3, 0, 4, 2, 1 (row r holds item
    ``ORDER[r]``); every user has four of them."""
    rows = [(u, i, 0) for u in range(6) for i in range(5) if (u + i) % 5]
    return write_tables(folder, rows, ORDER)


ORDER = [3, 0, 4, 2, 1]


def nan_encoder(items):
    out = np.ones((len(items), 2))
    out[items['item'].astype(int).to_numpy() == 2] = np.nan
    return out


@pytest.mark.parametrize('source', ['features', 'encoder', 'float64'])
def test_bad_feature_rows_are_named_by_the_item_table(tmp_path, source):
    paths = shuffled_tables(tmp_path)
    kwargs = dict(user_k=0, item_k=0, split='loo')
    if source == 'encoder':
        kwargs.update(encoders={'visual': nan_encoder},
                      encoder_batch_size=2)
        error, expected = ConfigError, (
            "visual features have NaN or infinite values in 1 rows (first: "
            f"item '2', row 3 of {paths['items.csv']})")
    else:
        array = np.load(paths['f.npy'])
        # Item table row 2 is item 4, the last new id.
        array[2, 1] = np.nan if source == 'features' else 1e39
        np.save(paths['f.npy'], array)
        kwargs.update(features={'visual': paths['f.npy']})
        problem = 'NaN or infinite values' if source == 'features' else \
            'values beyond the float32 range (|x| > 3.4e38)'
        error, expected = DatasetError, (
            f"{paths['f.npy']}: visual features have {problem} in 1 rows "
            '(first: row 2)')
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)  # no cast overflow
        with pytest.raises(error) as err:
            prepare(paths['inter.csv'], paths['items.csv'],
                    str(tmp_path / 'out'), **kwargs)
    assert str(err.value).endswith(expected)


def test_device_is_checked_before_the_text_model(tmp_path):
    with pytest.raises(ConfigError, match=r"^--device 'cuda:99' cannot be "
                       r'used on this machine \('):
        check_device('cuda:99')
    paths = shuffled_tables(tmp_path)
    # Not a model folder either: the device is what is reported.
    with pytest.raises(ConfigError, match=r"^--device 'nodevice' cannot"):
        prepare(paths['inter.csv'], paths['items.csv'],
                str(tmp_path / 'out'), user_k=0, item_k=0, split='loo',
                text_columns=['title'], text_model=str(tmp_path),
                device='nodevice')
