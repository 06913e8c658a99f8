r"""End-to-end ``prepare``: output layout, features, recipe rebuild, CLI and
bad input."""
import argparse
import json
import os
import re
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from pyg_mmrec.data import MultiModalRecDataset
from pyg_mmrec.errors import ConfigError, DatasetError
from pyg_mmrec.prepare import prepare, rebuild
from pyg_mmrec.prepare.cli import add_prepare_parser, run_prepare

BASE = dict(user_col='uid', item_col='iid', rating_col='stars',
            timestamp_col='ts', user_k=3, item_k=3)


def listing(folder):
    r"""Every path (files and folders, hidden ones included) under
    :obj:`folder`."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), folder))
    return out


def parse(argv):
    parser = argparse.ArgumentParser(prog='pyg-mmrec')
    add_prepare_parser(parser.add_subparsers(dest='command'))
    return parser.parse_args(argv)


def title_length_encoder(items: pd.DataFrame) -> np.ndarray:
    r"""A stand-in for an image model: the image path's number and the
    title length."""
    num = items['image'].str.extract(r'(\d+)')[0].astype(float).to_numpy()
    return np.stack([num, items['title'].str.len().to_numpy()], axis=1)


@pytest.mark.parametrize('split', ['random', 'loo', 'temporal'])
def test_prepare_loads_and_keeps_contract(tables, tmp_path, split):
    out = tmp_path / 'out'
    result = prepare(tables['inter.csv'], tables['items.csv'], str(out),
                     split=split, seed=1, rating_threshold=2,
                     features={'visual': tables['vis.npy']},
                     encoders={'acoustic': title_length_encoder}, **BASE)
    assert sorted(os.listdir(out)) == sorted(result.files) == [
        'audio_feat.npy', 'image_feat.npy', 'interactions.csv', 'items.csv',
        'recipe.json', 'users.csv']
    data = MultiModalRecDataset(str(out))[0]
    num_users = int(data['user'].num_nodes)
    num_items = int(data['item'].num_nodes)
    store = data['user', 'interacts', 'item']
    train = store.edge_index
    # Every user and item has a training interaction; held-out ids are in
    # the training range; val and test are not empty.
    assert torch.unique(train[0]).numel() == num_users
    assert torch.unique(train[1]).numel() == num_items
    for key in ('val_edge_index', 'test_edge_index'):
        assert store[key].size(1) > 0
    counts = result.summary['interactions']
    assert (train.size(1), store.val_edge_index.size(1),
            store.test_edge_index.size(1)) == \
        (counts['train'], counts['val'], counts['test'])

    # Features follow the item id column: feature 0 of vis.npy is the raw
    # id of its row, and items.csv maps new ids to raw ids.
    items = pd.read_csv(out / 'items.csv')
    assert list(items.columns) == ['item', 'raw_id', 'title', 'image']
    assert items['item'].tolist() == list(range(num_items))
    assert data['item'].visual[:, 0].tolist() == items['raw_id'].tolist()
    assert torch.equal(data['item'].acoustic, torch.from_numpy(
        title_length_encoder(items).astype(np.float32)))
    users = pd.read_csv(out / 'users.csv')
    assert users['raw_id'].is_monotonic_increasing
    assert users['raw_id'].min() >= 1000

    # The rating threshold was applied and every kept pair is a raw pair.
    raw = pd.read_csv(tables['inter.csv'])
    inter = pd.read_csv(out / 'interactions.csv')
    assert inter['rating'].min() >= 2
    pairs = set(zip(raw['uid'], raw['iid']))
    got = zip(users['raw_id'].to_numpy()[inter['user']],
              items['raw_id'].to_numpy()[inter['item']])
    assert set(got) <= pairs


def test_rebuild_is_byte_identical(tables, tmp_path, tree):
    def local_encoder(items):  # cannot be imported back by name
        return title_length_encoder(items)

    first = tmp_path / 'first'
    prepare(tables['inter.csv'], tables['items.csv'], str(first),
            split='temporal', seed=7, ratios=(7, 2, 1), rating_threshold=2,
            features={'visual': tables['vis.npy']},
            encoders={'acoustic': local_encoder}, **BASE)
    before = tree(first)
    recipe = json.loads(before['recipe.json'])
    assert recipe['options']['seed'] == 7
    assert recipe['inputs']['interactions']['sha256']
    assert not recipe['inputs']['encoders']['acoustic']['importable']

    # A callable defined outside a module must be passed again ...
    with pytest.raises(ConfigError, match="rebuild with the Python API"):
        rebuild(str(first / 'recipe.json'), str(tmp_path / 'nope'))
    assert not (tmp_path / 'nope').exists()
    # ... and then the rebuild gives the same bytes, recipe included.
    rebuild(str(first / 'recipe.json'), str(tmp_path / 'second'),
            encoders={'acoustic': local_encoder})
    assert tree(tmp_path / 'second') == before

    # A changed input is refused before anything is written.
    with open(tables['inter.csv'], 'a') as f:
        f.write('1000,0,5,1\n')
    with pytest.raises(DatasetError, match='SHA-256 mismatch'):
        rebuild(str(first / 'recipe.json'), str(tmp_path / 'third'),
                encoders={'acoustic': local_encoder})
    assert not (tmp_path / 'third').exists()


@pytest.mark.parametrize('tamper, error, match', [
    (lambda r: r['inputs'].update(encoders=[1]), DatasetError,
     "recipe inputs.encoders must map each modality to a record with a "
     "'callable'"),
    (lambda r: r['inputs'].update(features='x'), DatasetError,
     "recipe inputs.features must map each modality to a record with a "
     "'path'"),
    (lambda r: r['inputs'].update(text_model='x'), DatasetError,
     "recipe inputs.text_model must have a 'path' and a 'sha256'"),
    (lambda r: r['inputs']['items'].update(path=3), DatasetError,
     'recipe has no inputs.items.path'),
    (lambda r: r['options'].update(ratios=5), DatasetError,
     r'recipe\.json: options\.ratios needs three values train:val:test, '
     r'got 5$'),
    # Fields of the wrong type are named as the recipe spells them.
    (lambda r: r['options'].update(user_col=5), DatasetError,
     r'recipe\.json: options\.user_col must be a string, got 5$'),
    (lambda r: r['options'].update(item_id_col=3), DatasetError,
     r'recipe\.json: options\.item_id_col must be a string, got 3$'),
    (lambda r: r['options'].update(text_columns='title'), DatasetError,
     r"options\.text_columns must be a list of column names, got 'title'$"),
    (lambda r: r['options'].update(seed=None), DatasetError,
     r'recipe\.json: options\.seed must be a non-negative integer, got '
     r'None$'),
    (lambda r: r['options'].update(split='temporal', timestamp_col=None),
     DatasetError, r'options\.split temporal needs options\.timestamp_col$'),
    (lambda r: r.update(outputs=[1]), DatasetError,
     r'recipe\.json: recipe outputs must map each file name to its '
     r'SHA-256$'),
])
def test_malformed_recipe_is_one_error(tables, tmp_path, tamper, error,
                                       match):
    first = tmp_path / 'first'
    prepare(tables['inter.csv'], tables['items.csv'], str(first),
            features={'visual': tables['vis.npy']}, **BASE)
    recipe = json.loads((first / 'recipe.json').read_text())
    tamper(recipe)
    path = tmp_path / 'recipe.json'
    path.write_text(json.dumps(recipe))
    with pytest.raises(error, match=match):
        rebuild(str(path), str(tmp_path / 'again'))
    assert not (tmp_path / 'again').exists()


def test_cli_prepare_and_recipe_rebuild(tables, tmp_path, tree, capsys):
    enc = tmp_path / 'my_encoders.py'
    enc.write_text(textwrap.dedent('''
        import numpy as np

        def image_stub(items):
            return np.stack([items['title'].str.len().to_numpy(),
                             np.zeros(len(items))], axis=1)
    '''))
    out = tmp_path / 'cli'
    args = parse(['prepare', '--interactions', tables['inter.csv'],
                  '--items', tables['items.csv'], '--out', str(out),
                  '--user-col', 'uid', '--item-col', 'iid', '--rating-col',
                  'stars', '--rating-threshold', '3', '--k-core', '2',
                  '--split', 'loo', '--seed', '5', '--features',
                  f"acoustic={tables['vis.npy']}", '--encoder',
                  f'visual={enc}:image_stub'])
    assert args.func is run_prepare
    assert run_prepare(args) == 0
    assert 'users' in capsys.readouterr().out
    recipe = json.loads((out / 'recipe.json').read_text())
    assert recipe['options']['split'] == 'loo'
    assert recipe['options']['user_k'] == recipe['options']['item_k'] == 2
    assert recipe['inputs']['encoders']['visual']['importable']

    again = tmp_path / 'again'
    assert run_prepare(parse(['prepare', '--recipe', str(out / 'recipe.json'),
                              '--out', str(again)])) == 0
    assert tree(again) == tree(out)

    # Options other than the inputs and the output clash with --recipe.
    with pytest.raises(ConfigError, match='--recipe takes every option'):
        run_prepare(parse(['prepare', '--recipe', str(out / 'recipe.json'),
                           '--out', str(tmp_path / 'x'), '--seed', '1']))
    # A bad --k-core is reported as --k-core, the option that was given.
    with pytest.raises(ConfigError, match=r'^--k-core must be a non-negative '
                       r'integer, got -1$'):
        run_prepare(parse(['prepare', '--interactions', tables['inter.csv'],
                           '--items', tables['items.csv'], '--out',
                           str(tmp_path / 'y'), '--k-core', '-1']))
    assert not (tmp_path / 'y').exists()
    # An existing data set is replaced only with --overwrite.
    with pytest.raises(ConfigError, match='pass --overwrite'):
        run_prepare(parse(['prepare', '--recipe', str(out / 'recipe.json'),
                           '--out', str(again)]))
    assert run_prepare(parse(['prepare', '--recipe',
                              str(out / 'recipe.json'), '--out', str(again),
                              '--overwrite'])) == 0
    assert tree(again) == tree(out)


def test_parquet_and_string_ids(tmp_path, make_tables):
    paths = make_tables(str(tmp_path))
    inter = pd.read_csv(paths['inter.csv'])
    inter['uid'] = 'u' + inter['uid'].astype(str)
    inter['iid'] = 'i' + inter['iid'].astype(str)
    inter.to_parquet(tmp_path / 'inter.parquet')
    items = pd.read_csv(paths['items.csv'])
    items['iid'] = 'i' + items['iid'].astype(str)
    items.to_parquet(tmp_path / 'items.parquet')
    kwargs = dict(BASE, ids='str', features={'visual': paths['vis.npy']})
    prepare(str(tmp_path / 'inter.parquet'), str(tmp_path / 'items.parquet'),
            str(tmp_path / 'out'), **kwargs)
    mapping = pd.read_csv(tmp_path / 'out' / 'items.csv')
    assert mapping['raw_id'].str.startswith('i').all()
    assert mapping['raw_id'].tolist() == sorted(mapping['raw_id'])
    data = MultiModalRecDataset(str(tmp_path / 'out'))[0]
    assert data['item'].visual[:, 0].tolist() == \
        [float(r[1:]) for r in mapping['raw_id']]
    # Integer ids declared on string ids: one clear error.
    with pytest.raises(DatasetError) as err:
        prepare(str(tmp_path / 'inter.parquet'),
                str(tmp_path / 'items.parquet'), str(tmp_path / 'out2'),
                **dict(kwargs, ids='int'))
    assert str(err.value).startswith(str(tmp_path / 'inter.parquet'))
    assert "column 'uid' has" in str(err.value)
    assert not (tmp_path / 'out2').exists()


# Bad input: one clear error, nothing written #################################


def _bad_case(tmp_path, case):
    src = tmp_path
    inter = pd.DataFrame({'user': [1, 1, 1, 2, 2, 2, 3, 3, 3],
                          'item': [1, 2, 3, 1, 2, 3, 1, 2, 3],
                          'rating': [5, 4, 5, 4, 5, 1, 3, 3, 3]})
    items = pd.DataFrame({'item': [1, 2, 3], 'title': ['a', 'b', 'c']})
    options = dict(user_k=1, item_k=1, split='loo')
    if case == 'missing_columns':
        inter = inter.drop(columns=['item'])
        options.update(rating_col='stars')
        expected = ("inter.csv: missing column(s) item, stars (found: user, "
                    "rating)")
    elif case == 'non_numeric':
        inter['user'] = inter['user'].astype(str)
        inter.loc[4, 'user'] = 'bob'
        expected = ("inter.csv: column 'user' has 1 non-numeric ids but "
                    "integer ids were declared (first: 'bob' on data row 4);"
                    " use --ids str for string ids")
    elif case == 'empty':
        options.update(rating_col='rating', rating_threshold=6)
        expected = ("inter.csv: no interactions left after the rating "
                    "threshold (9 rows read; user_k=1, item_k=1, "
                    "rating_threshold=6)")
    elif case == 'empty_kcore':
        options.update(user_k=5)
        expected = ("inter.csv: no interactions left after k-core "
                    "filtering (9 rows read; user_k=5, item_k=1)")
    elif case == 'empty_val':
        inter = inter[inter['item'] != 3]
        expected = ("inter.csv: the val split is empty after splitting (6 "
                    "interactions, split=loo")
    elif case == 'duplicate_items':
        items = pd.DataFrame({'item': [1, 2, 2, 3],
                              'title': ['a', 'b', 'c', 'd']})
        expected = ("items.csv: 1 item id(s) appear in more than one row of "
                    "column 'item' (first: '2'); the item table needs "
                    "exactly one row per item")
    elif case == 'bad_npy':
        np.save(src / 'f.npy', np.ones((2, 2), np.float32))
        expected = ("f.npy: has shape (2, 2) but must be 2-D with one row "
                    "per item table row (3)")
    inter.to_csv(src / 'inter.csv', index=False)
    items.to_csv(src / 'items.csv', index=False)
    if case != 'bad_npy':
        np.save(src / 'f.npy', np.ones((len(items), 2), np.float32))
    return options, expected


@pytest.mark.parametrize('case', ['missing_columns', 'non_numeric', 'empty',
                                  'empty_kcore', 'empty_val',
                                  'duplicate_items', 'bad_npy'])
def test_bad_tables_fail_clearly_and_write_nothing(tmp_path, case):
    options, expected = _bad_case(tmp_path, case)
    before = listing(tmp_path)
    with pytest.raises(DatasetError) as err:
        prepare(str(tmp_path / 'inter.csv'), str(tmp_path / 'items.csv'),
                str(tmp_path / 'out'),
                features={'visual': str(tmp_path / 'f.npy')}, **options)
    message = str(err.value)
    assert '\n' not in message
    assert message.startswith(str(tmp_path) + os.sep)
    assert expected in message
    assert listing(tmp_path) == before


def test_bad_options(tables, tmp_path):
    before = listing(tmp_path)
    cases = [
        (dict(), 'no item features'),
        (dict(features={'smell': tables['vis.npy']}),
         "unknown modality 'smell'"),
        (dict(features={'visual': tables['vis.npy']},
              encoders={'visual': 'numpy:ones'}),
         "modality 'visual' has two sources"),
        (dict(features={'visual': tables['vis.npy']}, split='temporal',
              timestamp_col=None), '--split temporal needs --timestamp-col'),
        (dict(features={'visual': tables['vis.npy']}, rating_col=None,
              rating_threshold=3), '--rating-threshold needs --rating-col'),
        (dict(encoders={'visual': 'no_such_module_xyz:f'}),
         "encoder 'no_such_module_xyz:f' cannot be imported"),
        (dict(encoders={'visual': lambda items: np.ones((len(items), 2,
                                                         2))}),
         'visual features must have shape'),
        (dict(features={'visual': tables['vis.npy']}, bogus=1),
         'unknown prepare option'),
    ]
    for extra, match in cases:
        kwargs = dict(BASE, **extra)
        with pytest.raises(ConfigError, match=match):
            prepare(tables['inter.csv'], tables['items.csv'],
                    str(tmp_path / 'out'), **kwargs)
    assert listing(tmp_path) == before


def test_refuses_to_replace_unrelated_folder(tables, tmp_path):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    with pytest.raises(ConfigError, match='holds no recipe.json'):
        prepare(tables['inter.csv'], tables['items.csv'], str(out),
                overwrite=True, features={'visual': tables['vis.npy']},
                **BASE)
    assert os.listdir(out) == ['notes.txt']


def test_unknown_items_and_duplicates_are_counted(tmp_path):
    inter = pd.DataFrame({'user': [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 0],
                          'item': [0, 1, 2, 0, 1, 2, 9, 0, 1, 2, 0],
                          'ts': [5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1]})
    inter.to_csv(tmp_path / 'inter.csv', index=False)
    pd.DataFrame({'item': [2, 1, 0]}).to_csv(tmp_path / 'items.csv',
                                             index=False)
    np.save(tmp_path / 'f.npy', np.eye(3, dtype=np.float32))
    # Dropped unknown items are also said, not only counted.
    warning = (f"{tmp_path / 'inter.csv'}: removed 1 of 10 interactions "
               f"whose item is not in the item table "
               f"{tmp_path / 'items.csv'} (first: '9')")
    with pytest.warns(UserWarning, match=re.escape(warning)):
        result = prepare(str(tmp_path / 'inter.csv'),
                         str(tmp_path / 'items.csv'), str(tmp_path / 'out'),
                         user_k=1, item_k=1, timestamp_col='ts',
                         split='loo',
                         features={'visual': str(tmp_path / 'f.npy')})
    s = result.summary
    assert (s['rows_read'], s['duplicates_removed'],
            s['unknown_items_removed']) == (11, 1, 1)
    out = pd.read_csv(tmp_path / 'out' / 'interactions.csv')
    # The earliest of the duplicate (0, 0) rows is kept.
    assert out.query('user == 0 and item == 0')['timestamp'].tolist() == [1]
    # Item table row r has id 2 - r: features are reordered to new ids.
    assert np.array_equal(np.load(tmp_path / 'out' / 'image_feat.npy'),
                          np.eye(3, dtype=np.float32)[::-1])
