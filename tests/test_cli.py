r"""The ``pyg-mmrec`` command, in-process through :func:`main` and once as a
real process.

A fresh process always starts from the same global RNG state, so the
in-process calls below reset the global seed first to behave like separate
processes."""
import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyg_mmrec.cli import main
from pyg_mmrec.data.hetero import split_edge_index

TINY = ['--set', 'data.num_users=150', '--set', 'data.num_items=80']
METRIC_KEYS = {'recall@20', 'ndcg@20', 'precision@20'}


def run(argv, capsys):
    r"""``main(argv)`` as a fresh process would run it: returns
    ``(status, stdout, stderr)``."""
    torch.manual_seed(0)
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    r"""A tiny run trained once for the whole module."""
    out = tmp_path_factory.mktemp('run')
    torch.manual_seed(0)
    status = main(['train', *TINY, '--epochs', '2', '--quiet', '--out',
                   str(out)])
    assert status == 0
    return out


def _assert_usage_error(status, out, err, match):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('pyg-mmrec: error: ')
    assert match in lines[0], lines[0]
    assert 'Traceback' not in err and 'Traceback' not in out


# Success ####################################################################


def test_train_writes_metrics_and_checkpoint(trained):
    assert sorted(os.listdir(trained)) == ['checkpoint.pt', 'last.pt',
                                           'metrics.json']
    with open(trained / 'metrics.json') as f:
        metrics = json.load(f)
    assert {'model', 'dataset', 'best_epoch', 'val', 'test', 'epochs'} <= \
        set(metrics)
    assert metrics['model'] == 'lightgcn'
    assert metrics['dataset'] == 'synthetic'
    assert metrics['seed'] == 0
    assert metrics['threads'] == torch.get_num_threads()
    assert metrics['device'] == 'cpu'
    ckpt = torch.load(trained / 'checkpoint.pt', weights_only=True)
    assert ckpt['device'] == 'cpu'
    assert isinstance(metrics['best_epoch'], int)
    assert set(metrics['val']) == METRIC_KEYS
    assert set(metrics['test']) == METRIC_KEYS
    assert [e['epoch'] for e in metrics['epochs']] == [0, 1]
    for record in metrics['epochs']:
        assert {'epoch', 'seconds', 'loss', 'val'} <= set(record)
        assert set(record['val']) == METRIC_KEYS
        assert isinstance(record['seconds'], float) and record['seconds'] > 0
        assert 0 < record['loss'] < 1  # BPR starts at log(2)
    recalls = [e['val']['recall@20'] for e in metrics['epochs']]
    assert metrics['best_epoch'] == recalls.index(max(recalls))
    assert metrics['val'] == metrics['epochs'][metrics['best_epoch']]['val']
    for value in [*metrics['val'].values(), *metrics['test'].values()]:
        assert 0 < value <= 1


def test_train_prints_summary(tmp_path, capsys):
    status, out, err = run(['train', *TINY, '--epochs', '1', '--quiet',
                            '--seed', '3', '--out', str(tmp_path)], capsys)
    assert status == 0
    summary = json.loads(out)
    with open(tmp_path / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['seed'] == 3
    assert summary == {k: metrics[k]
                       for k in ('model', 'best_epoch', 'val', 'test')}
    assert str(tmp_path / 'metrics.json') in err


def test_evaluate_reproduces_test_metrics(trained, capsys):
    status, out, _ = run(['evaluate', '--checkpoint',
                          str(trained / 'checkpoint.pt')], capsys)
    assert status == 0
    report = json.loads(out)
    with open(trained / 'metrics.json') as f:
        metrics = json.load(f)
    assert report['epoch'] == metrics['best_epoch']
    assert report['test'] == pytest.approx(metrics['test'], abs=1e-6)
    assert report['val'] == pytest.approx(metrics['val'], abs=1e-6)


def test_evaluate_reproduces_metrics_bit_for_bit(tmp_path, capsys):
    # With the run's own evaluation batch size: another one splits the
    # metric sums differently (NDCG differed in the 9th digit).
    status, _, err = run(['train', *TINY, '--epochs', '1', '--quiet',
                          '--set', 'train.eval_batch_size=7', '--set',
                          'train.k=10', '--out', str(tmp_path)], capsys)
    assert status == 0, err
    status, out, err = run(['evaluate', '--checkpoint',
                            str(tmp_path / 'checkpoint.pt')], capsys)
    assert status == 0, err
    with open(tmp_path / 'metrics.json') as f:
        metrics = json.load(f)
    report = json.loads(out)
    assert (report['val'], report['test']) == (metrics['val'],
                                               metrics['test'])


def test_evaluation_defaults_to_the_training_device(monkeypatch):
    # A GPU run is evaluated on its GPU where there is one (a CPU rounds
    # differently), else on the CPU; old checkpoints count as CPU runs.
    from pyg_mmrec.train.run import checkpoint_device
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert checkpoint_device({'device': 'cuda:0'}) == 'cpu'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert checkpoint_device({'device': 'cuda:0'}) == 'cuda:0'
    assert checkpoint_device({'device': 'cuda:1'}) == 'cpu'
    assert checkpoint_device({'device': 'cpu'}) == 'cpu'
    assert checkpoint_device({}) == 'cpu'


def _training_items(trained, splits=('train', )):
    from pyg_mmrec.train.run import restore
    torch.manual_seed(0)
    _, data, _ = restore(str(trained / 'checkpoint.pt'))
    edges = torch.cat([split_edge_index(data, s) for s in splits], dim=1)
    return {u: set(edges[1, edges[0] == u].tolist()) for u in range(150)}


def test_recommend_csv_and_json(trained, capsys, tmp_path):
    seen = _training_items(trained)
    status, out, _ = run(['recommend', '--checkpoint',
                          str(trained / 'checkpoint.pt'), '--users', '0,1',
                          '--k', '5'], capsys)
    assert status == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ['user', 'rank', 'item']
    from_csv = {}
    for user, rank, item in rows[1:]:
        from_csv.setdefault(int(user), []).append((int(rank), int(item)))
    assert sorted(from_csv) == [0, 1]
    for user, ranked in from_csv.items():
        assert [r for r, _ in ranked] == [1, 2, 3, 4, 5]
        items = [i for _, i in ranked]
        assert len(set(items)) == 5
        assert all(0 <= i < 80 for i in items)
        assert not set(items) & seen[user]
    status, out, _ = run(['recommend', '--checkpoint',
                          str(trained / 'checkpoint.pt'), '--users', '0,1',
                          '--k', '5', '--format', 'json', '--output',
                          str(tmp_path / 'rec.json')], capsys)
    assert status == 0 and out == ''
    with open(tmp_path / 'rec.json') as f:
        from_json = json.load(f)
    assert from_json == {str(u): [i for _, i in r]
                         for u, r in from_csv.items()}


def test_recommend_lists_a_repeated_user_once(trained, capsys):
    argv = ['recommend', '--checkpoint', str(trained / 'checkpoint.pt'),
            '--users', '1,0,1', '--k', '3']
    status, out, _ = run(argv, capsys)
    assert status == 0
    users = [row[0] for row in csv.reader(io.StringIO(out))][1:]
    assert users == ['1'] * 3 + ['0'] * 3
    status, out, _ = run([*argv, '--format', 'json'], capsys)
    assert list(json.loads(out)) == ['1', '0']


def test_recommend_never_returns_training_items(trained, capsys):
    seen = _training_items(trained)
    users = [u for u in range(150) if len(seen[u]) >= 5][:40]
    status, out, _ = run(['recommend', '--checkpoint',
                          str(trained / 'checkpoint.pt'), '--users',
                          ','.join(map(str, users)), '--k', '20',
                          '--format', 'json'], capsys)
    assert status == 0
    recs = json.loads(out)
    assert sorted(map(int, recs)) == sorted(users)
    for user, items in recs.items():
        assert len(items) == 20
        assert not set(items) & seen[int(user)]

    # Asking for every item lists exactly the unseen ones (no padding with
    # seen items, which used to fill the tail of the ranking). Unseen means
    # in none of the data set's splits: a user's held-out items are known
    # interactions too (they used to be recommended).
    known = _training_items(trained, ('train', 'val', 'test'))
    held_out = [u for u in users if known[u] - seen[u]][:3]
    assert held_out
    argv = ['recommend', '--checkpoint', str(trained / 'checkpoint.pt'),
            '--users', ','.join(map(str, held_out)), '--k', '80',
            '--format', 'json']
    status, out, _ = run(argv, capsys)
    assert status == 0
    for user, items in json.loads(out).items():
        assert sorted(items) == sorted(set(range(80)) - known[int(user)])
    for exclude, hidden in (('train', seen), (' val, train,val', None),
                            ('none', {u: set() for u in held_out})):
        if hidden is None:
            hidden = _training_items(trained, ('train', 'val'))
        status, out, _ = run([*argv, '--exclude', exclude], capsys)
        assert status == 0
        for user, items in json.loads(out).items():
            assert sorted(items) == sorted(set(range(80)) - hidden[int(user)])
    for bad in ('train,tset', '', ','):
        status, out, err = run([*argv, '--exclude', bad], capsys)
        _assert_usage_error(status, out, err, "--exclude must name splits "
                            "among train, val, test, or be 'none', got "
                            f"'{bad}'")


def test_recommend_without_a_validation_split(trained, capsys, monkeypatch):
    # A data set made in Python may lack a held-out split: the default
    # leaves out the splits it has, and naming a missing one is an error.
    from pyg_mmrec.train import run as run_module
    restore = run_module.restore

    def without_val(*args, **kwargs):
        model, data, ckpt = restore(*args, **kwargs)
        del data['user', 'interacts', 'item'].val_edge_index
        return model, data, ckpt

    known = _training_items(trained, ('train', 'test'))
    every = _training_items(trained, ('train', 'val', 'test'))
    assert every[0] != known[0] or every[1] != known[1]  # val items to see
    monkeypatch.setattr(run_module, 'restore', without_val)
    argv = ['recommend', '--checkpoint', str(trained / 'checkpoint.pt'),
            '--users', '0,1', '--k', '80', '--format', 'json']
    status, out, _ = run(argv, capsys)
    assert status == 0
    for user, items in json.loads(out).items():
        assert sorted(items) == sorted(set(range(80)) - known[int(user)])
    status, out, err = run([*argv, '--exclude', 'train,val'], capsys)
    _assert_usage_error(status, out, err, '--exclude names the val split, '
                        'which the data set does not have')


# Bad input ##################################################################


def test_missing_dataset_dir(tmp_path, capsys):
    out_dir = tmp_path / 'out'
    status, out, err = run(['train', '--dataset', str(tmp_path / 'nope'),
                            '--quiet', '--out', str(out_dir)], capsys)
    _assert_usage_error(status, out, err,
                        f"{tmp_path / 'nope'}: data set folder not found")
    assert not out_dir.exists()


def test_dataset_with_nan_features(make_dataset, tiny_features, listing,
                                   tmp_path, capsys):
    features = tiny_features()
    features['acoustic'][2, 0] = np.nan
    root = make_dataset('diffmm', features=features)
    before = listing(root)
    out_dir = tmp_path / 'out'
    status, out, err = run(['train', '--dataset', str(root), '--epochs', '1',
                            '--quiet', '--out', str(out_dir)], capsys)
    _assert_usage_error(status, out, err,
                        f"{root / 'audio_feat.npy'}: contains NaN or "
                        'infinite values')
    assert listing(out_dir) == []  # at most the empty folder
    assert listing(root) == before  # no processed/ cache either


@pytest.mark.parametrize('argv,match', [
    (['--set', 'train.nope=1'], "unknown option 'train.nope' (known: "),
    (['--set', 'bogus=1'], "unknown option 'bogus'"),
    (['--set', 'train.epochs=many'], "cannot set 'train.epochs' to 'many'"),
    (['--set', 'novalue'], "override 'novalue' is not of the form"),
    (['--epochs', '0'], 'epochs must be >= 1, got 0'),
    (['--lr', 'nan'], 'lr must be > 0, got nan'),
    # Adam's float32 step overflows beyond (traceback from the optimiser).
    (['--lr', '1e38'], 'lr must be at most 1e+30, got 1e+38'),
    (['--model', 'diffmm', '--set', 'num_layers=-1'],
     'num_layers must be >= 0, got -1'),
    (['--model', 'mmssl', '--set', 'graph_rate=2'],
     'graph_rate must be in (0, 1], got 2.0'),
    (['--set', 'data.num_users=1'], 'at least 2 users'),
    (['--seed', '-1'], 'seed must be in [0, 2**32), got -1'),
    (['--seed', str(2**70)], 'seed must be in [0, 2**32)'),
])
def test_bad_options(tmp_path, capsys, argv, match):
    out_dir = tmp_path / 'out'
    status, out, err = run(['train', *TINY, *argv, '--quiet', '--out',
                            str(out_dir)], capsys)
    _assert_usage_error(status, out, err, match)
    assert not out_dir.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available')
def test_cuda_without_cuda(tmp_path, capsys):
    out_dir = tmp_path / 'out'
    status, out, err = run(['train', *TINY, '--device', 'cuda', '--quiet',
                            '--out', str(out_dir)], capsys)
    _assert_usage_error(status, out, err,
                        "device 'cuda' requested but CUDA is not available")
    assert not out_dir.exists()


@pytest.mark.parametrize('command', ['evaluate', 'recommend'])
def test_missing_checkpoint(tmp_path, capsys, command):
    path = tmp_path / 'none.pt'
    argv = [command, '--checkpoint', str(path)]
    if command == 'recommend':
        argv += ['--users', '0']
    status, out, err = run(argv, capsys)
    _assert_usage_error(status, out, err, f'{path}: file not found')


def test_checkpoint_that_is_not_a_file(tmp_path, capsys, trained):
    # A run folder given for its checkpoint, and a device file: named as
    # what they are, not "file not found".
    held = ', '.join(sorted(n for n in os.listdir(trained)
                            if n.endswith('.pt')))
    for argv, message in (
            (['evaluate', '--checkpoint', str(trained)],
             f'{trained}: is a folder, not a checkpoint file (it holds '
             f'{held})'),
            (['evaluate', '--checkpoint', str(tmp_path)],
             f'{tmp_path}: is a folder, not a checkpoint file'),
            (['train', '--resume', str(trained), '--quiet', '--out',
              str(tmp_path / 'resumed')],
             f'{trained}: is a folder, not a checkpoint file'),
            (['evaluate', '--checkpoint', os.devnull],
             f'{os.devnull}: is not a regular file')):
        status, out, err = run(argv, capsys)
        _assert_usage_error(status, out, err, message)
    assert not (tmp_path / 'resumed').exists()


def test_checkpoint_folder_listing(tmp_path, monkeypatch):
    from pyg_mmrec.errors import CheckpointError
    from pyg_mmrec.train import checkpoint
    for name in ('a.pt', 'b.pt', 'c.pt', 'd.pt', 'notes.txt'):
        (tmp_path / name).write_text('')
    with pytest.raises(CheckpointError, match=re.escape(
            f'{tmp_path}: is a folder, not a checkpoint file (it holds '
            f'a.pt, b.pt, c.pt, ...)')):
        checkpoint.load_checkpoint(str(tmp_path))

    def unreadable(path):
        raise PermissionError(13, 'Permission denied', path)

    monkeypatch.setattr(checkpoint.os, 'listdir', unreadable)
    with pytest.raises(CheckpointError, match=re.escape(
            f'{tmp_path}: is a folder, not a checkpoint file') + '$'):
        checkpoint.load_checkpoint(str(tmp_path))


def test_corrupt_checkpoint(tmp_path, capsys, trained):
    garbage = tmp_path / 'bad.pt'
    garbage.write_bytes(b'not a checkpoint')
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes((trained / 'checkpoint.pt').read_bytes()[:4096])
    for path in (garbage, truncated):
        status, out, err = run(['evaluate', '--checkpoint', str(path)],
                               capsys)
        _assert_usage_error(status, out, err,
                            f'{path}: cannot be read as a checkpoint: not an '
                            f'archive written by torch.save')
        assert 'weights_only' not in err  # torch's advice to unpickle all

    pickled = tmp_path / 'object.pt'
    torch.save({'module': torch.nn.Linear(2, 2)}, pickled)
    status, out, err = run(['evaluate', '--checkpoint', str(pickled)], capsys)
    _assert_usage_error(status, out, err,
                        f'{pickled}: cannot be read as a checkpoint: it holds '
                        f'objects other than tensors and plain data')


def test_checkpoint_of_other_data_set(tmp_path, capsys, trained,
                                      make_dataset):
    ckpt = str(trained / 'checkpoint.pt')
    status, out, err = run(['evaluate', '--checkpoint', ckpt, '--dataset',
                            str(make_dataset('diffmm'))], capsys)
    _assert_usage_error(
        status, out, err,
        f"{ckpt}: does not fit the model built for this data set (4 users, "
        f"5 items; the checkpoint was trained on 'synthetic'): "
        f"'lightgcn.embedding.weight' has shape [230, 64] in the checkpoint "
        f"but [9, 64] in the model")
    # Resuming on a synthetic data set of another size is refused before
    # anything is written.
    out_dir = tmp_path / 'out'
    status, out, err = run(['train', '--resume', str(trained / 'last.pt'),
                            '--set', 'data.num_users=170', '--epochs', '3',
                            '--quiet', '--out', str(out_dir)], capsys)
    _assert_usage_error(status, out, err, 'data.num_users cannot change when '
                        'resuming')
    assert not out_dir.exists()

    state = torch.load(ckpt, weights_only=True)
    state['state_dict']['extra'] = torch.zeros(1)
    extra = tmp_path / 'extra.pt'
    torch.save(state, extra)
    status, out, err = run(['evaluate', '--checkpoint', str(extra)], capsys)
    _assert_usage_error(status, out, err, "it has 'extra', which the model "
                        "does not")
    del state['state_dict']['extra']
    del state['state_dict']['lightgcn.embedding.weight']
    torch.save(state, extra)
    status, out, err = run(['evaluate', '--checkpoint', str(extra)], capsys)
    _assert_usage_error(status, out, err,
                        "it lacks 'lightgcn.embedding.weight'")


@pytest.mark.parametrize('users,match', [
    ('0,150', 'user id 150 is out of range 0..149'),
    ('-1', 'user id -1 is out of range 0..149'),
    ('0,x', "--users must be 'all', a comma-separated list"),
])
def test_recommend_bad_users(trained, tmp_path, capsys, users, match):
    output = tmp_path / 'rec.csv'
    status, out, err = run(['recommend', '--checkpoint',
                            str(trained / 'checkpoint.pt'), '--users', users,
                            '--output', str(output)], capsys)
    _assert_usage_error(status, out, err, match)
    assert not output.exists()


def test_recommend_users_file_not_text(trained, tmp_path, capsys):
    users = tmp_path / 'users.txt'
    users.write_bytes(b'0,1\n\xff\xfe\x00garbage')
    status, out, err = run(['recommend', '--checkpoint',
                            str(trained / 'checkpoint.pt'), '--users',
                            str(users)], capsys)
    _assert_usage_error(status, out, err, f'{users}: cannot be read as a '
                        f'list of user ids (')


@pytest.mark.parametrize('text,problem', [
    ('user\n0\n1\n', "line 1: 'user' is not a user id (the file holds "
     "user ids only, no header)"),
    ('0\n1, abc\n', "line 2: 'abc' is not a user id"),
    ('0\n150\n', 'line 2: user id 150 is out of range 0..149'),
    ('\n \n', 'names no user'),
])
def test_recommend_users_file_problems_name_the_file(trained, tmp_path,
                                                     capsys, text, problem):
    users = tmp_path / 'users.csv'
    users.write_text(text)
    status, out, err = run(['recommend', '--checkpoint',
                            str(trained / 'checkpoint.pt'), '--users',
                            str(users)], capsys)
    _assert_usage_error(status, out, err, '')
    assert err == f'pyg-mmrec: error: {users}: {problem}\n', err


def test_recommend_users_folder(trained, tmp_path, capsys, monkeypatch):
    status, out, err = run(['recommend', '--checkpoint',
                            str(trained / 'checkpoint.pt'), '--users',
                            str(tmp_path)], capsys)
    _assert_usage_error(status, out, err,
                        f'{tmp_path}: is a folder, not a file of user ids')
    # A folder named like a user id (a seed's run folder) does not shadow
    # the id.
    (tmp_path / '0').mkdir()
    monkeypatch.chdir(tmp_path)
    status, out, err = run(['recommend', '--checkpoint',
                            str(trained / 'checkpoint.pt'), '--users', '0',
                            '--format', 'json'], capsys)
    assert status == 0, err
    assert list(json.loads(out)) == ['0']


def test_recommend_users_file_with_byte_order_mark(trained, tmp_path,
                                                   capsys):
    users = tmp_path / 'users.csv'
    users.write_bytes('\ufeff3\r\n1,3\r\n'.encode())
    status, out, err = run(['recommend', '--checkpoint',
                            str(trained / 'checkpoint.pt'), '--users',
                            str(users), '--format', 'json'], capsys)
    assert status == 0, err
    assert list(json.loads(out)) == ['3', '1']


def test_info_expands_the_home_folder(make_dataset, tiny_features,
                                      monkeypatch, tmp_path, capsys):
    features = tiny_features(('visual', ))
    features['visual'] = features['visual'].astype(np.float16)
    (tmp_path / 'home').mkdir()
    make_dataset('mmssl', features=features, name='home/ds')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    status, out, err = run(['info', '--dataset', '~/ds'], capsys)
    assert status == 0, err
    assert json.loads(out)['features']['visual']['dtype'] == 'float16'


def test_real_process_exit_status(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'pyg_mmrec.cli', 'train', '--dataset',
         str(tmp_path / 'nope'), '--quiet', '--out', str(tmp_path / 'out')],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"pyg-mmrec: error: {tmp_path / 'nope'}: data set folder not found"]
    assert proc.stdout == ''
    assert not (tmp_path / 'out').exists()


def test_info_reports_the_feature_files_dtypes(make_dataset, tiny_features,
                                               capsys):
    # Loaded features are float32 whatever the files hold; info describes
    # the files.
    features = tiny_features(('visual', 'acoustic'))
    features['visual'] = features['visual'].astype(np.float16)
    features['acoustic'] = features['acoustic'].astype(np.float64)
    root = make_dataset('diffmm', features=features)
    status, out, err = run(['info', '--dataset', str(root)], capsys)
    assert status == 0, err
    stats = json.loads(out)['features']
    assert stats['visual']['dtype'] == 'float16'
    assert stats['acoustic']['dtype'] == 'float64'
    status, out, err = run(['info'], capsys)  # synthetic: in memory
    assert {f['dtype'] for f in json.loads(out)['features'].values()} == \
        {'float32'}


def test_real_process_warnings_are_one_line(tmp_path, make_dataset,
                                            tiny_splits):
    tiny_splits['train'] += [(2, 3), (2, 3)]
    root = make_dataset('mmssl', tiny_splits)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'pyg_mmrec.cli', 'info',
                           '--dataset', str(root)],
                          capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"pyg-mmrec: warning: {root / 'train.json'}: removed 2 duplicate "
        f"train interactions"]


def test_closed_output_pipe_is_a_quiet_stop():
    # `pyg-mmrec info ... | head` ended in a BrokenPipeError traceback.
    env = dict(os.environ, OMP_NUM_THREADS='1')
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, '-m', 'pyg_mmrec.cli', 'info'],
                              stdout=write, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 128 + 13, proc.stderr
    assert proc.stderr == ''


@pytest.mark.parametrize('model, override, message', [
    ('diffmm', 'noise_min=0.5', 'need 0 < noise_min <= noise_max'),
    ('mmssl', 'heads=3', 'heads must be >= 1 and divide channels'),
])
def test_invalid_hyper_parameter_is_one_line_exit_2(tmp_path, capsys, model,
                                                    override, message):
    status = main(['train', '--model', model, '--set', override, '--set',
                   'data.num_users=60', '--set', 'data.num_items=40',
                   '--quiet', '--out', str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"pyg-mmrec: error: invalid '{model}' "
                          f"configuration: {message}")
    assert err.count('\n') == 1 and 'Traceback' not in err


def test_resume_with_an_optimiser_state_of_another_model(trained, tmp_path,
                                                         capsys):
    ckpt = torch.load(trained / 'last.pt', weights_only=True)
    ckpt['optimizer']['param_groups'][0]['params'] = [0, 1, 2]
    path = tmp_path / 'last.pt'
    torch.save(ckpt, path)
    # (checkpoint.pt beside it must be of the same run)
    (tmp_path / 'checkpoint.pt').write_bytes(
        (trained / 'checkpoint.pt').read_bytes())
    out_dir = tmp_path / 'out'
    status, out, err = run(['train', '--resume', str(path), '--epochs', '3',
                            '--quiet', '--out', str(out_dir)], capsys)
    _assert_usage_error(status, out, err, f'{path}: holds an optimiser state '
                        f'that does not fit the model')
    assert not out_dir.exists()


@pytest.mark.parametrize('name', ['metrics.json', 'last.pt',
                                  'checkpoint.pt'])
def test_folder_where_the_run_writes_a_file(tmp_path, capsys, name):
    # The run trained an epoch and wrote its checkpoints before failing on
    # metrics.json: checkpoints with no metrics.json to describe them.
    (tmp_path / name).mkdir()
    status, out, err = run(['train', *TINY, '--quiet', '--out',
                            str(tmp_path)], capsys)
    _assert_usage_error(status, out, err, f'{tmp_path / name}: is a folder '
                        f'where the run writes a file')
    assert os.listdir(tmp_path) == [name]


def test_empty_dataset_option_is_not_the_synthetic_data(tmp_path, capsys):
    # `--dataset "$DATA"` with DATA unset trained on the synthetic data.
    status, out, err = run(['train', '--dataset', '', '--quiet', '--out',
                            str(tmp_path / 'out')], capsys)
    _assert_usage_error(status, out, err, 'the data set folder is an empty '
                        'path')
    assert not (tmp_path / 'out').exists()


def test_diverging_run_stops_with_one_line(tmp_path, capsys):
    # A learning rate of 1e30 sends the scores to infinity after the first
    # epoch (and the loss to NaN in the second); no such model may be
    # selected or reported (epoch 0 used to be, with metrics of inf scores).
    out_dir = tmp_path / 'made' / 'for' / 'out'
    status, out, err = run(['train', *TINY, '--epochs', '3', '--lr', '1e30',
                            '--quiet', '--out', str(out_dir)], capsys)
    _assert_usage_error(status, out, err, 'the model scores items as NaN '
                        'or infinite: it diverged')
    # Nothing was written: the folders the run made are gone too.
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('argv,match', [
    (['--dataset', 'elsewhere'], '--dataset elsewhere: the resumed run '
     'trained on synthetic (leave --dataset out to continue on it)'),
    (['--preset', 'tiktok'], '--preset tiktok: the resumed run used no '
     'preset'),
    (['--model', 'diffmm'], "holds a 'lightgcn' model, not 'diffmm'"),
    (['--set', 'data.seed=3'], 'data.seed cannot change when resuming'),
    (['--set', 'k=10'], 'train.k cannot change when resuming'),
    # The earlier epochs trained with the checkpoint's seed, which
    # metrics.json would have misreported.
    (['--seed', '7'], 'train.seed cannot change when resuming'),
])
def test_resume_refuses_other_data_or_selection(trained, tmp_path, capsys,
                                                argv, match):
    out_dir = tmp_path / 'out'
    status, out, err = run(['train', '--resume', str(trained / 'last.pt'),
                            *argv, '--epochs', '3', '--quiet', '--out',
                            str(out_dir)], capsys)
    _assert_usage_error(status, out, err, match)
    assert not out_dir.exists()


def test_resume_with_the_original_command_line(trained, tmp_path, capsys):
    # Repeating the first run's options (same data, same model) is fine.
    status, _, _ = run(['train', *TINY, '--model', 'lightgcn', '--resume',
                        str(trained / 'last.pt'), '--epochs', '3',
                        '--quiet', '--out', str(tmp_path / 'out')], capsys)
    assert status == 0
    with open(tmp_path / 'out' / 'metrics.json') as f:
        assert len(json.load(f)['epochs']) == 3


def test_resume_without_out_goes_on_in_the_checkpoints_folder(
        tmp_path, capsys, monkeypatch):
    # It used to write runs/latest under the working folder, beside the
    # run it was asked to continue.
    first = tmp_path / 'exp'
    assert run(['train', *TINY, '--epochs', '2', '--quiet', '--out',
                str(first)], capsys)[0] == 0
    monkeypatch.chdir(tmp_path)
    status, _, err = run(['train', '--resume', str(first / 'last.pt'),
                          '--epochs', '3', '--quiet'], capsys)
    assert status == 0
    assert f"wrote {first / 'metrics.json'} and " in err
    assert sorted(os.listdir(tmp_path)) == ['exp']
    with open(first / 'metrics.json') as f:
        assert [e['epoch'] for e in json.load(f)['epochs']] == [0, 1, 2]
    # A bare file name: the working folder.
    monkeypatch.chdir(first)
    status, _, _ = run(['train', '--resume', 'last.pt', '--epochs', '4',
                        '--quiet'], capsys)
    assert status == 0
    assert sorted(os.listdir(first)) == ['checkpoint.pt', 'last.pt',
                                         'metrics.json']
    with open(first / 'metrics.json') as f:
        assert len(json.load(f)['epochs']) == 4
    # From a best checkpoint older than last.pt (nothing is learnt at this
    # rate, so epoch 0 stays best), in place would replace the later
    # epochs: that still goes to runs/latest.
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / 'stale'
    assert run(['train', *TINY, '--epochs', '3', '--patience', '0', '--lr',
                '1e-12', '--quiet', '--out', str(stale)], capsys)[0] == 0
    before = (stale / 'last.pt').read_bytes()
    assert (stale / 'checkpoint.pt').read_bytes() != before
    status, _, err = run(['train', '--resume', str(stale / 'checkpoint.pt'),
                          '--epochs', '4', '--quiet'], capsys)
    assert status == 0 and 'wrote runs/latest/metrics.json' in err
    assert (stale / 'last.pt').read_bytes() == before
    assert (tmp_path / 'runs' / 'latest' / 'metrics.json').exists()
    # A link to a run's last.pt goes on in that run.
    os.symlink(first / 'last.pt', tmp_path / 'current.pt')
    status, _, err = run(['train', '--resume', 'current.pt', '--epochs', '5',
                          '--quiet'], capsys)
    assert status == 0 and f"wrote {first / 'metrics.json'}" in err
    with open(first / 'metrics.json') as f:
        assert len(json.load(f)['epochs']) == 5
    assert sorted(os.listdir(tmp_path)) == ['current.pt', 'exp', 'runs',
                                            'stale']


def test_unusable_output_folder_is_refused_before_training(tmp_path,
                                                           capsys):
    (tmp_path / 'file').write_text('x')
    for out_dir, problem in [
            (tmp_path / 'file', f"{tmp_path / 'file'} is a file, not a "
             f'folder'),
            (tmp_path / 'file' / 'run', f"{tmp_path / 'file'} is a file, "
             f'not a folder')]:
        status, out, err = run(['train', *TINY, '--quiet', '--out',
                                str(out_dir)], capsys)
        _assert_usage_error(status, out, err, f'{out_dir}: cannot be the '
                            f'output folder: {problem}')
    assert os.listdir(tmp_path) == ['file']
    # An unset shell variable: named as such, not as ": cannot be created".
    status, out, err = run(['train', *TINY, '--quiet', '--out', ''], capsys)
    _assert_usage_error(status, out, err,
                        'pyg-mmrec: error: the output folder is an empty path')


def test_incomplete_or_newer_checkpoint(trained, tmp_path, capsys):
    state = torch.load(trained / 'checkpoint.pt', weights_only=True)
    del state['rng']
    path = tmp_path / 'ckpt.pt'
    torch.save(state, path)
    status, out, err = run(['evaluate', '--checkpoint', str(path)], capsys)
    _assert_usage_error(status, out, err, f"{path}: lacks 'rng'")
    state = torch.load(trained / 'checkpoint.pt', weights_only=True)
    state['configs']['train']['warmup'] = 3  # as a newer version might
    torch.save(state, path)
    status, out, err = run(['evaluate', '--checkpoint', str(path)], capsys)
    _assert_usage_error(status, out, err, f'{path}: holds settings this '
                        f'version of pyg_mmrec cannot read')


def _no_train_state(ckpt):
    ckpt['train_state'] = {}


def _no_data_config(ckpt):
    del ckpt['configs']['data']


def _numeric_dataset(ckpt):
    ckpt['dataset'] = 123


def _text_configs(ckpt):
    ckpt['configs'] = 'x'


def _set(*keys_value):
    # ckpt[k1][k2]... = value
    *keys, value = keys_value

    def corrupt(ckpt):
        for key in keys[:-1]:
            ckpt = ckpt[key]
        ckpt[keys[-1]] = value
    return corrupt


@pytest.mark.parametrize('corrupt, problem', [
    (_no_train_state, "'train_state' lacks best_epoch, best_test, "
     "best_val, epochs_without_improvement, history, next_epoch, "
     "stopped_early"),
    # Hand-edited fields that used to pass the checks and then end in a
    # TypeError, AttributeError or an epoch of -6 in metrics.json.
    (_set('model', ['lightgcn']), "'model' is not a name"),
    (_set('rng', 'x'), "'rng' is not a random generator state"),
    (_set('rng', torch.zeros(3)), "'rng' is not a random generator state"),
    (_set('optimizer', 'adam'), "'optimizer' is not an optimiser state"),
    (_set('train_state', 'next_epoch', '2'), "'train_state.next_epoch' is "
     "not a count (an integer >= 0)"),
    (_set('train_state', 'next_epoch', -6), "'train_state.next_epoch' is "
     "not a count (an integer >= 0)"),
    (_set('train_state', 'best_epoch', True), "'train_state.best_epoch' is "
     "not an epoch (an integer >= -1)"),
    (_set('train_state', 'history', {}), "'train_state.history' is not a "
     "list"),
    (_no_data_config, "'configs' does not hold the sections train, model "
     "and data"),
    (_numeric_dataset, "'dataset' is not a path"),
    (_text_configs, "'configs' does not hold the sections train, model "
     "and data"),
])
@pytest.mark.parametrize('command', ['evaluate', 'recommend'])
def test_checkpoint_of_wrong_structure(trained, tmp_path, capsys, corrupt,
                                       problem, command):
    # Each used to end in a KeyError, TypeError or AttributeError.
    ckpt = torch.load(trained / 'checkpoint.pt', weights_only=True)
    corrupt(ckpt)
    path = tmp_path / 'ckpt.pt'
    torch.save(ckpt, path)
    users = ['--users', '0'] if command == 'recommend' else []
    status, out, err = run([command, '--checkpoint', str(path), *users],
                           capsys)
    _assert_usage_error(status, out, err, f'{path}: not a complete '
                        f'pyg_mmrec checkpoint: {problem}')


def test_checkpoint_finds_its_data_set_from_any_folder(
        tmp_path, capsys, make_dataset, monkeypatch):
    root = make_dataset('diffmm')
    monkeypatch.chdir(root.parent)
    status, _, _ = run(['train', '--dataset', root.name, '--epochs', '1',
                        '--quiet', '--out', 'run'], capsys)
    assert status == 0
    monkeypatch.chdir('/')
    status, out, err = run(['evaluate', '--checkpoint',
                            str(root.parent / 'run' / 'checkpoint.pt')],
                           capsys)
    assert status == 0, err
    assert json.loads(out)['dataset'] == str(root)


def test_evaluate_reports_the_epoch_of_the_weights(trained, tmp_path,
                                                   capsys):
    # last.pt after an epoch that did not improve: its weights are that
    # epoch's, while the best epoch is an earlier one.
    state = torch.load(trained / 'last.pt', weights_only=True)
    last = state['train_state']['next_epoch'] - 1
    state['train_state']['best_epoch'] = last - 1
    torch.save(state, tmp_path / 'last.pt')
    status, out, _ = run(['evaluate', '--checkpoint',
                          str(tmp_path / 'last.pt')], capsys)
    assert status == 0 and json.loads(out)['epoch'] == last


def test_synthetic_options_with_a_data_set_folder(tmp_path, capsys,
                                                  make_dataset):
    root = make_dataset('diffmm')
    status, out, err = run(['train', '--dataset', str(root), '--set',
                            'data.num_users=50', '--quiet', '--out',
                            str(tmp_path / 'out')], capsys)
    _assert_usage_error(status, out, err, 'data.num_users configures the '
                        f'synthetic data set, but --dataset is {root}')


def test_epoch_lines_leave_stdout_to_the_json_summary(tmp_path, capsys):
    # The per-epoch lines used to go to stdout, before the JSON summary, so
    # `pyg-mmrec train | python -m json.tool` failed.
    status, out, err = run(['train', *TINY, '--epochs', '2', '--out',
                            str(tmp_path / 'out')], capsys)
    assert status == 0
    assert set(json.loads(out)) == {'model', 'best_epoch', 'val', 'test'}
    assert 'epoch   1  loss' in err


def test_sigterm_is_an_orderly_stop(tmp_path, capsys, monkeypatch):
    # SIGTERM (timeout, batch schedulers, docker stop) used to kill the
    # process at once, leaving a checkpoint's temporary file behind.
    import signal
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip('the test runner handles SIGTERM itself')

    import pyg_mmrec.train.run as run_module
    real_save = run_module.save_torch

    def save_then_terminate(obj, path):
        real_save(obj, path)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(run_module, 'save_torch', save_then_terminate)
    out_dir = tmp_path / 'out'
    status, out, err = run(['train', *TINY, '--epochs', '3', '--quiet',
                            '--out', str(out_dir)], capsys)
    assert status == 128 + signal.SIGTERM
    assert err == 'pyg-mmrec: interrupted\n'
    # The signal waited for the epoch's files: all three, no temporary one.
    assert sorted(os.listdir(out_dir)) == ['checkpoint.pt', 'last.pt',
                                           'metrics.json']
    with open(out_dir / 'metrics.json') as f:
        assert len(json.load(f)['epochs']) == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_ctrl_c_while_torch_is_imported_is_an_orderly_stop():
    # The CLI module imported torch at its top, before main() could catch
    # anything: a Ctrl-C in the first ~2 s printed a traceback.
    import signal
    import time
    if not os.path.exists('/proc/self/maps'):
        pytest.skip('needs /proc to see when torch starts loading')
    code = ('import sys; from pyg_mmrec.cli import main; '
            "sys.exit(main(['info']))")
    proc = subprocess.Popen([sys.executable, '-c', code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    loading = False
    while not loading and time.monotonic() < deadline \
            and proc.poll() is None:
        try:
            with open(f'/proc/{proc.pid}/maps') as f:
                loading = 'libtorch' in f.read()
        except OSError:
            break
        time.sleep(0.005)
    if not loading:
        proc.kill()
        proc.communicate()
        pytest.skip('torch was not seen loading')
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert 'Traceback' not in err
    # Some releases' import code swallows a KeyboardInterrupt in a bare
    # `except:` (torch 2.4 here, at random), and the command then completes.
    if proc.returncode != 0:
        assert proc.returncode == 128 + signal.SIGINT, err
        assert err.endswith('pyg-mmrec: interrupted\n')


@pytest.mark.parametrize('argv,match', [
    (['train', '--epochs', 'abc'], "argument --epochs: invalid int value: "
     "'abc' (see 'pyg-mmrec train --help')"),
    (['train', '--model', 'foo'], "argument --model: invalid choice: 'foo'"),
    (['evaluate'], 'the following arguments are required: --checkpoint'),
    (['train', '--bogus'], "unrecognized arguments: --bogus (see "
     "'pyg-mmrec train --help')"),
    (['--bogus'], "unrecognized arguments: --bogus (see 'pyg-mmrec "
     "--help')"),
])
def test_option_errors_are_one_line(argv, match, capsys):
    # argparse printed its usage block before the error.
    status, out, err = run(argv, capsys)
    _assert_usage_error(status, out, err, match)


def test_checkpoint_whose_data_set_is_gone(trained, tmp_path, capsys):
    # The path comes from the checkpoint: say so, and how to give another.
    ckpt = torch.load(trained / 'checkpoint.pt', weights_only=True)
    gone = tmp_path / 'gone'
    ckpt['dataset'] = str(gone)
    path = tmp_path / 'ckpt.pt'
    torch.save(ckpt, path)
    status, out, err = run(['evaluate', '--checkpoint', str(path)], capsys)
    _assert_usage_error(status, out, err, f'{gone}: data set folder not '
                        f'found (the data set folder recorded in {path}; '
                        f'pass --dataset to use another)')
    # An empty --dataset (an unset shell variable) is no "default".
    status, out, err = run(['evaluate', '--checkpoint', str(path),
                            '--dataset', ''], capsys)
    _assert_usage_error(status, out, err, 'the data set folder is an empty '
                        'path')


def test_checkpoint_with_nan_weights_is_named(trained, tmp_path, capsys):
    ckpt = torch.load(trained / 'checkpoint.pt', weights_only=True)
    ckpt['state_dict']['lightgcn.embedding.weight'].fill_(float('nan'))
    path = tmp_path / 'ckpt.pt'
    torch.save(ckpt, path)
    for command in (['evaluate'], ['recommend', '--users', '0']):
        status, out, err = run([*command, '--checkpoint', str(path)], capsys)
        _assert_usage_error(status, out, err, f'{path}: holds a model that '
                            f'scores items as NaN or infinite')


@pytest.mark.parametrize('message,detail', [
    ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
     "can't allocate memory: you tried to allocate 1200000000000 bytes.",
     "DefaultCPUAllocator: can't allocate memory: you tried to allocate "
     "1200000000000 bytes."),
    # GPU libraries that allocate outside torch's caching allocator fail
    # with a plain RuntimeError, which used to end in a traceback.
    ('CUDA error: out of memory\nCUDA kernel errors might be asynchronously '
     'reported', 'CUDA error: out of memory'),
    ('CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling '
     '`cublasCreate(handle)`', 'CUDA error: CUBLAS_STATUS_ALLOC_FAILED when '
     'calling `cublasCreate(handle)`'),
    ('CUDA error: CUSPARSE_STATUS_ALLOC_FAILED', 'CUDA error: '
     'CUSPARSE_STATUS_ALLOC_FAILED'),
], ids=['cpu', 'cuda', 'cublas', 'cusparse'])
def test_out_of_memory_is_one_line(monkeypatch, tmp_path, capsys, message,
                                   detail):
    # (Simulated: a real allocation of that size could wake the OOM killer
    # on a machine that overcommits memory.)
    from pyg_mmrec.train import run as run_module

    def train(options):
        raise RuntimeError(message)

    monkeypatch.setattr(run_module, 'train', train)
    status, out, err = run(['train', '--quiet', '--out',
                            str(tmp_path / 'out')], capsys)
    assert status == 1 and 'Traceback' not in err
    assert err.splitlines() == [
        f"pyg-mmrec: error: out of memory ({detail}); reduce the batch, "
        f"embedding or data sizes"]


def test_other_runtime_errors_still_raise(monkeypatch, tmp_path, capsys):
    # Only allocation failures become one line: a bug keeps its traceback.
    from pyg_mmrec.train import run as run_module

    def train(options):
        raise RuntimeError('index 7 is out of bounds for dimension 0')

    monkeypatch.setattr(run_module, 'train', train)
    with pytest.raises(RuntimeError, match='out of bounds'):
        run(['train', '--quiet', '--out', str(tmp_path / 'out')], capsys)


def test_train_help_states_every_models_defaults(capsys):
    # Read from TrainConfig, the models' own defaults and their presets,
    # not written out by hand.
    with pytest.raises(SystemExit) as stop:
        main(['train', '--help'])
    assert stop.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    assert ('early-stopping patience in epochs, 0: off (default: 10; '
            'diffmm presets: 0; mmssl: 7)') in text
    assert 'learning rate (default: 0.001; mmssl: 0.00055)' in text
    assert 'maximum number of epochs (default: 50)' in text
