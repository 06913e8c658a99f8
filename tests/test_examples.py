import os.path as osp
import runpy
import sys

import torch

EXAMPLES = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                    'examples')


def run_example(name, args, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [name, *args])
    runpy.run_path(osp.join(EXAMPLES, name), run_name='__main__')


def test_custom_recommender_trains_one_epoch(monkeypatch, capsys):
    torch.manual_seed(0)
    run_example('custom_recommender.py', ['--epochs', '1'], monkeypatch)
    out = capsys.readouterr().out
    assert 'best epoch 0' in out
    recall = float(out.split("'recall@20': ")[1].split(',')[0])
    assert recall > 0.05  # well above random (20 of 800 items: 0.025)


def test_train_diffmm_example_one_epoch(monkeypatch, capsys):
    run_example('train_diffmm.py', ['--epochs', '1'], monkeypatch)
    out = capsys.readouterr().out
    assert '"best_epoch": 0' in out and '"recall@20"' in out
