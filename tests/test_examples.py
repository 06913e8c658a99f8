import json
import os.path as osp
import runpy
import sys

import pytest
import torch

from pyg_mmrec.errors import exit_on_input_error

EXAMPLES = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                    'examples')


def run_example(name, args, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [name, *args])
    runpy.run_path(osp.join(EXAMPLES, name), run_name='__main__')


def test_custom_recommender_trains_one_epoch(monkeypatch, capsys):
    torch.manual_seed(0)
    run_example('custom_recommender.py', ['--epochs', '1'], monkeypatch)
    report = json.loads(capsys.readouterr().out)  # stdout: JSON only
    assert report['best_epoch'] == 0
    recall = report['test']['recall@20']
    # One epoch gives 0.19; random is 0.025 (20 of 800 items), and a
    # flipped BPR sign 0.013.
    assert recall > 0.12


def test_train_diffmm_example_one_epoch(monkeypatch, capsys):
    torch.manual_seed(0)  # the global RNG as a fresh process has it
    run_example('train_diffmm.py', ['--epochs', '1'], monkeypatch)
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout: JSON only
    assert captured.err.startswith('DiffMM(')  # the model, on stderr
    assert report['best_epoch'] == 0
    for split in ('val', 'test'):
        metrics = report[split]
        assert set(metrics) == {'recall@20', 'ndcg@20', 'precision@20'}
        # One epoch gives ~0.23 (random: 0.025); with the BPR sign flipped
        # it still gives ~0.16 (the features carry a lot), hence 0.2.
        assert metrics['recall@20'] > 0.2, (split, metrics)


@pytest.mark.parametrize('name, args, message', [
    ('train_diffmm.py', ['--dataset', 'NOPE'],
     'train_diffmm.py: error: NOPE: data set folder not found'),
    ('train_mmssl.py', ['--epochs', '0'],
     'train_mmssl.py: error: epochs must be >= 1, got 0'),
    # Options are checked before the data set is read.
    ('train_diffmm.py', ['--dataset', 'NOPE', '--seed', '-1'],
     'train_diffmm.py: error: seed must be in [0, 2**32), got -1'),
    # The examples now place model and data on --device (default 'auto').
    ('train_diffmm.py', ['--device', 'mps'], "train_diffmm.py: error: "
     "device 'mps' is not supported: use 'cpu', 'cuda', 'cuda:N' or 'auto'"),
    ('train_mmssl.py', ['--device', 'gpu'], "train_mmssl.py: error: "
     "unknown device 'gpu'"),
])
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, name, args,
                                          message):
    with pytest.raises(SystemExit) as info:
        run_example(name, args, monkeypatch)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [message]
    assert 'Traceback' not in captured.out + captured.err


def test_exit_on_input_error_keeps_tracebacks_of_bugs():
    with pytest.raises(KeyError):
        with exit_on_input_error('x.py'):
            raise KeyError('a bug, not bad input')


def test_exit_on_input_error_stops_quietly_on_a_closed_pipe(capsys):
    # `python examples/custom_recommender.py | true` ended in a
    # BrokenPipeError traceback.
    with pytest.raises(SystemExit) as stop:
        with exit_on_input_error('x.py'):
            raise BrokenPipeError(32, 'Broken pipe')
    assert stop.value.code == 128 + 13
    assert capsys.readouterr().err == ''
