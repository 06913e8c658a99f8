r"""The training loop: model selection on validation, test at the best
epoch, early stopping, resuming, and a quality floor.

The tests below reset the global seed before building a model (its
initialisation draws from the global RNG), as a fresh process would."""
import copy
import json
import os.path as osp
import re

import pytest
import torch

from pyg_mmrec.data.hetero import split_edge_index
from pyg_mmrec.data.sampling import BPRSampler
from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.evaluation import RankingEvaluator
from pyg_mmrec.nn.models.lightgcn import (
    LightGCNConfig,
    LightGCNRecommender,
    MostPopular,
)
from pyg_mmrec.train.config import TrainConfig
from pyg_mmrec.train.loop import TrainState, fit, run_epoch
from pyg_mmrec.train.checkpoint import load_checkpoint
from pyg_mmrec.train.run import RunOptions, evaluate_checkpoint, train

SMALL = [('data.num_users', '200'), ('data.num_items', '100'),
         ('model.embedding_dim', '16'), ('model.num_layers', '2')]


def _train(out, *overrides, resume=None):
    torch.manual_seed(0)
    return train(RunOptions(out=str(out), progress=False, resume=resume,
                            overrides=[*SMALL, *overrides]))


def _recalls(report):
    return [h['val']['recall@20'] for h in report['epochs']]


def _first_argmax(values):
    return max(range(len(values)), key=lambda i: (values[i], -i))


# A scripted evaluator, to test the selection logic exactly ###################


class _ScriptedEvaluator:
    r"""Returns the scripted validation Recall@20 of each epoch, and a test
    value that identifies the epoch it was measured at."""
    ks = [20]

    def __init__(self, val_recalls):
        self.val_recalls = list(val_recalls)
        self.epoch = -1
        self.calls = []

    def check_split(self, split):
        pass

    def evaluate(self, scores, split):
        self.calls.append(split)
        if split == 'val':
            self.epoch += 1
            return {'recall@20': self.val_recalls[self.epoch],
                    'ndcg@20': 0.0, 'precision@20': 0.0}
        return {'recall@20': 1000.0 + self.epoch, 'ndcg@20': 0.0,
                'precision@20': 0.0}


@pytest.fixture(scope='module')
def tiny():
    data = make_synthetic(SyntheticConfig(num_users=60, num_items=30,
                                          mean_degree=4, seed=1))
    return data


def _fit_scripted(data, val_recalls, epochs, patience, state=None,
                  evaluator=None):
    torch.manual_seed(0)
    model = LightGCNRecommender(60, 30, LightGCNConfig(embedding_dim=4,
                                                       num_layers=1))
    data = model.prepare(data.clone())
    sampler = BPRSampler(split_edge_index(data, 'train'), 60, 30, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    evaluator = evaluator or _ScriptedEvaluator(val_recalls)
    ends = []
    state = fit(model, data, sampler, optimizer, evaluator,
                TrainConfig(epochs=epochs, patience=patience), state=state,
                on_epoch_end=lambda s, improved: ends.append(
                    (s.next_epoch, improved)),
                progress=False)
    return state, evaluator, ends


def test_selection_and_early_stopping_scripted(tiny):
    #      epoch: 0    1    2    3    4    5    6     7    8    9
    val = [0.1, 0.3, 0.2, 0.3, 0.5, 0.4, 0.45, 0.5, 0.6, 0.7]
    state, evaluator, ends = _fit_scripted(tiny, val, epochs=10, patience=3)
    # Best is the first maximum seen on validation (ties do not improve),
    # test is measured exactly at the improving epochs.
    assert state.best_epoch == 4
    assert state.best_val['recall@20'] == 0.5
    assert state.best_test['recall@20'] == 1004.0
    assert evaluator.calls == ['val', 'test', 'val', 'test', 'val', 'val',
                               'val', 'test', 'val', 'val', 'val']
    # Patience 3: epochs 5, 6, 7 do not improve on epoch 4 -> stop after 7.
    assert [h['epoch'] for h in state.history] == list(range(8))
    assert state.stopped_early and state.next_epoch == 8
    assert ends == [(1, True), (2, True), (3, False), (4, False),
                    (5, True), (6, False), (7, False), (8, False)]
    assert [h['val']['recall@20'] for h in state.history] == val[:8]
    for record in state.history:
        assert {'epoch', 'seconds', 'loss', 'val'} <= set(record)
        assert record['seconds'] > 0 and record['loss'] > 0


def test_patience_zero_never_stops(tiny):
    val = [0.5] + [0.1] * 7
    state, _, _ = _fit_scripted(tiny, val, epochs=8, patience=0)
    assert len(state.history) == 8 and not state.stopped_early
    assert state.best_epoch == 0


def test_fit_resumes_from_state(tiny):
    val = [0.1, 0.2, 0.15, 0.3, 0.1, 0.1]
    state, evaluator, _ = _fit_scripted(tiny, val, epochs=3, patience=0)
    assert state.next_epoch == 3 and state.best_epoch == 1
    state = TrainState.from_dict(json.loads(json.dumps(state.to_dict())))
    state, _, _ = _fit_scripted(tiny, val, epochs=6, patience=0, state=state,
                                evaluator=evaluator)
    assert [h['epoch'] for h in state.history] == list(range(6))
    assert state.best_epoch == 3
    assert state.best_test['recall@20'] == 1003.0


def test_fit_does_not_continue_a_run_that_stopped_early(tiny):
    # Resuming an early-stopped run used to train on and move its best
    # epoch past the point where early stopping had ended it.
    val = [0.5, 0.1, 0.1, 0.9, 0.9]
    state, evaluator, _ = _fit_scripted(tiny, val, epochs=5, patience=2)
    assert state.stopped_early and state.best_epoch == 0
    state, _, ends = _fit_scripted(tiny, val, epochs=8, patience=2,
                                   state=state, evaluator=evaluator)
    assert ends == [] and state.next_epoch == 3 and state.best_epoch == 0
    # A larger patience (here none) is a request to go on.
    state, _, ends = _fit_scripted(tiny, val, epochs=5, patience=0,
                                   state=state, evaluator=evaluator)
    assert [e for e, _ in ends] == [4, 5] and state.best_epoch == 3
    assert not state.stopped_early


def test_fit_refuses_a_k_the_evaluator_does_not_report(tiny):
    model = LightGCNRecommender(60, 30, LightGCNConfig(embedding_dim=4))
    data = model.prepare(tiny.clone())
    sampler = BPRSampler(split_edge_index(data, 'train'), 60, 30, 64)
    with pytest.raises(ValueError, match=re.escape(
            'the evaluator reports cut-offs [5], but model selection uses '
            'k=10: create it with ks including 10')):
        fit(model, data, sampler, torch.optim.Adam(model.parameters()),
            RankingEvaluator(data, ks=(5, )), TrainConfig(k=10),
            progress=False)


def test_fit_refuses_distorting_held_out_pairs_before_training(tiny):
    # They were found only when the first epoch was evaluated.
    model = LightGCNRecommender(60, 30, LightGCNConfig(embedding_dim=4))
    data = tiny.clone()
    store = data['user', 'interacts', 'item']
    store.test_edge_index = torch.cat([store.test_edge_index,
                                       store.test_edge_index[:, :1]], 1)
    data = model.prepare(data)
    sampler = BPRSampler(split_edge_index(data, 'train'), 60, 30, 64)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match='the test edges repeat 1 user-item '
                       'pair'):
        fit(model, data, sampler, torch.optim.Adam(model.parameters()),
            RankingEvaluator(data), TrainConfig(epochs=2), progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# Real runs ###################################################################


def test_best_epoch_and_test_of_the_best_checkpoint(tmp_path):
    # (lr 0.05: validation peaks before the last epoch on this data)
    report = _train(tmp_path, ('train.epochs', '8'), ('train.patience', '0'),
                    ('train.lr', '0.05'))
    recalls = _recalls(report)
    assert len(recalls) == 8
    assert report['best_epoch'] == _first_argmax(recalls)
    best = report['epochs'][report['best_epoch']]
    assert report['val'] == best['val']
    with open(tmp_path / 'metrics.json') as f:
        assert json.load(f) == json.loads(json.dumps(report))
    ckpt = load_checkpoint(str(tmp_path / 'checkpoint.pt'))
    assert ckpt['train_state']['best_epoch'] == report['best_epoch']
    torch.manual_seed(0)
    again = evaluate_checkpoint(str(tmp_path / 'checkpoint.pt'))
    assert again['epoch'] == report['best_epoch']
    assert again['test'] == pytest.approx(report['test'], abs=1e-6)
    assert again['val'] == pytest.approx(report['val'], abs=1e-6)
    last = load_checkpoint(str(tmp_path / 'last.pt'))
    assert last['train_state']['next_epoch'] == 8
    if report['best_epoch'] != 7:  # the last epoch's model is another one
        torch.manual_seed(0)
        other = evaluate_checkpoint(str(tmp_path / 'last.pt'))
        assert other['val'] == pytest.approx(report['epochs'][7]['val'],
                                             abs=1e-6)


def test_early_stopping_honours_patience(tmp_path):
    # A learning rate so small that validation never improves after epoch 0.
    report = _train(tmp_path, ('train.epochs', '20'), ('train.patience', '3'),
                    ('train.lr', '1e-12'))
    assert report['best_epoch'] == 0
    assert [h['epoch'] for h in report['epochs']] == [0, 1, 2, 3]
    assert report['stopped_early'] is True


def test_early_stopping_rule_on_a_real_run(tmp_path):
    patience, epochs = 2, 25
    report = _train(tmp_path, ('train.epochs', str(epochs)),
                    ('train.patience', str(patience)), ('train.lr', '0.05'))
    recalls = _recalls(report)
    best, stale, stop_at = -1.0, 0, None
    for epoch, value in enumerate(recalls):
        if value > best:
            best, stale = value, 0
        else:
            stale += 1
        if stale >= patience:
            stop_at = epoch
            break
    if stop_at is None:
        assert len(recalls) == epochs and not report['stopped_early']
    else:
        assert len(recalls) == stop_at + 1 and report['stopped_early']


def test_resume_continues_at_the_next_epoch(tmp_path):
    first = _train(tmp_path / 'a', ('train.epochs', '3'),
                   ('train.patience', '0'))
    assert [h['epoch'] for h in first['epochs']] == [0, 1, 2]
    resumed = _train(tmp_path / 'b', ('train.epochs', '6'),
                     resume=str(tmp_path / 'a' / 'last.pt'))
    assert [h['epoch'] for h in resumed['epochs']] == list(range(6))
    assert resumed['epochs'][:3] == first['epochs']
    with open(tmp_path / 'b' / 'metrics.json') as f:
        assert [h['epoch'] for h in json.load(f)['epochs']] == list(range(6))
    # The same numbers as an uninterrupted run.
    straight = _train(tmp_path / 'c', ('train.epochs', '6'),
                      ('train.patience', '0'))
    for a, b in zip(resumed['epochs'], straight['epochs']):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-5)
        assert a['val'] == pytest.approx(b['val'], abs=1e-6)
    assert resumed['best_epoch'] == straight['best_epoch']
    assert resumed['test'] == pytest.approx(straight['test'], abs=1e-6)


def test_resume_into_new_folder_keeps_the_best_checkpoint(tmp_path):
    first = _train(tmp_path / 'a', ('train.epochs', '3'),
                   ('train.patience', '0'))
    resumed = _train(tmp_path / 'b', ('train.epochs', '3'),
                     resume=str(tmp_path / 'a' / 'last.pt'))
    assert resumed['best_epoch'] == first['best_epoch']
    assert (tmp_path / 'b' / 'checkpoint.pt').exists()


def test_resume_into_a_folder_of_another_run_replaces_its_files(tmp_path):
    # The resumed run's best checkpoint was copied only if one sat beside
    # last.pt, and last.pt only written after an epoch: another run's
    # checkpoint.pt stayed next to the new metrics.json.
    _train(tmp_path / 'a', ('train.epochs', '2'), ('train.patience', '0'))
    _train(tmp_path / 'other', ('train.epochs', '1'), ('train.lr', '0.05'))
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'last.pt').write_bytes((tmp_path / 'a' / 'last.pt').read_bytes())
    (src / 'checkpoint.pt').write_bytes(
        (tmp_path / 'a' / 'checkpoint.pt').read_bytes())
    report = _train(tmp_path / 'other', ('train.epochs', '2'),
                    resume=str(src / 'last.pt'))
    for name in ('checkpoint.pt', 'last.pt'):
        assert (tmp_path / 'other' / name).read_bytes() == \
            (tmp_path / 'a' / name).read_bytes()
    with open(tmp_path / 'a' / 'metrics.json') as f:
        first = json.load(f)
    assert report['best_epoch'] == first['best_epoch']
    assert report['epochs'] == first['epochs']


def test_resume_maps_the_best_checkpoint_it_only_compares(tmp_path,
                                                          monkeypatch):
    # Checking that checkpoint.pt is of the resumed run needs four fields;
    # it used to be read whole (about 335 MB for DiffMM on TikTok).
    report = _train(tmp_path / 'a', ('train.epochs', '3'),
                    ('train.patience', '0'), ('train.lr', '0.2'))
    assert report['best_epoch'] == 1  # so checkpoint.pt is consulted
    loads = []
    load = torch.load

    def spy(path, *args, **kwargs):
        loads.append((osp.basename(path), kwargs.get('mmap', False)))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    resumed = _train(tmp_path / 'b', ('train.epochs', '4'),
                     resume=str(tmp_path / 'a' / 'last.pt'))
    assert loads == [('last.pt', False), ('checkpoint.pt', True)]
    assert resumed['epochs'][:3] == report['epochs']

    # A file system that cannot map files: read the file instead.
    def unmappable(path, *args, **kwargs):
        if kwargs.get('mmap'):
            raise OSError(19, 'No such device')
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, 'load', unmappable)
    again = _train(tmp_path / 'c', ('train.epochs', '4'),
                   resume=str(tmp_path / 'a' / 'last.pt'))
    assert [(e['loss'], e['val']) for e in again['epochs']] == \
        [(e['loss'], e['val']) for e in resumed['epochs']]


def test_resume_needs_the_best_checkpoint_of_its_run(tmp_path):
    from pyg_mmrec.errors import CheckpointError
    report = _train(tmp_path / 'a', ('train.epochs', '3'),
                    ('train.patience', '0'), ('train.lr', '0.2'))
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'last.pt').write_bytes((tmp_path / 'a' / 'last.pt').read_bytes())
    assert report['best_epoch'] == 1  # not the last epoch
    with pytest.raises(CheckpointError, match=re.escape(
            'has no checkpoint.pt beside it, which holds the model of its '
            'best epoch (1)')):
        _train(tmp_path / 'b', ('train.epochs', '3'),
               resume=str(src / 'last.pt'))
    assert not (tmp_path / 'b').exists()
    # Nor will another run's checkpoint.pt do.
    _train(tmp_path / 'e', ('train.epochs', '1'), ('train.lr', '0.05'))
    (tmp_path / 'e' / 'last.pt').unlink()  # a hard link of checkpoint.pt
    (tmp_path / 'e' / 'last.pt').write_bytes(
        (tmp_path / 'a' / 'last.pt').read_bytes())
    with pytest.raises(CheckpointError, match=re.escape(
            'is not of the run of the checkpoint.pt beside it')):
        _train(tmp_path / 'e', ('train.epochs', '3'),
               resume=str(tmp_path / 'e' / 'last.pt'))
    # After a best last epoch, last.pt is that checkpoint.
    _train(tmp_path / 'c', ('train.epochs', '1'))
    (src / 'last.pt').write_bytes((tmp_path / 'c' / 'last.pt').read_bytes())
    _train(tmp_path / 'd', ('train.epochs', '1'),
           resume=str(src / 'last.pt'))
    assert (tmp_path / 'd' / 'checkpoint.pt').read_bytes() == \
        (src / 'last.pt').read_bytes()


def test_resume_honours_a_new_learning_rate(tmp_path):
    _train(tmp_path / 'a', ('train.epochs', '1'), ('train.lr', '0.05'))
    _train(tmp_path / 'b', ('train.epochs', '2'), ('train.lr', '0.001'),
           resume=str(tmp_path / 'a' / 'last.pt'))
    ckpt = load_checkpoint(str(tmp_path / 'b' / 'last.pt'))
    assert ckpt['configs']['train']['lr'] == 0.001
    assert ckpt['optimizer']['param_groups'][0]['lr'] == 0.001


def test_resume_rejects_another_model(tmp_path):
    from pyg_mmrec.errors import CheckpointError
    _train(tmp_path / 'a', ('train.epochs', '1'))
    ckpt = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)
    ckpt['model'] = 'mostpop'
    torch.save(ckpt, tmp_path / 'a' / 'other.pt')
    with pytest.raises(CheckpointError, match="holds a 'mostpop' model, "
                       "which this version of pyg_mmrec does not know"):
        _train(tmp_path / 'b', resume=str(tmp_path / 'a' / 'other.pt'))
    with pytest.raises(CheckpointError, match="holds a 'lightgcn' model, "
                       "not 'diffmm'"):
        train(RunOptions(model='diffmm', out=str(tmp_path / 'b'),
                         resume=str(tmp_path / 'a' / 'last.pt')))
    assert not (tmp_path / 'b').exists()


def test_lightgcn_beats_most_popular():
    torch.manual_seed(0)
    data = make_synthetic()
    num_users, num_items = 1500, 800
    config = TrainConfig(epochs=30, patience=0)
    torch.manual_seed(config.seed)
    model = LightGCNRecommender(num_users, num_items)
    data = model.prepare(data)
    sampler = BPRSampler(split_edge_index(data, 'train'), num_users,
                         num_items, config.batch_size, seed=config.seed)
    evaluator = RankingEvaluator(data)
    state = fit(model, data, sampler,
                torch.optim.Adam(model.parameters(), lr=config.lr),
                evaluator, config, progress=False)
    popular = MostPopular(num_users, num_items)
    popular.prepare(data)
    baseline = evaluator.evaluate(popular.score_fn(data), 'test')
    lightgcn = state.best_test['recall@20']
    assert baseline['recall@20'] > 0.05  # a sane floor
    assert lightgcn >= 1.4 * baseline['recall@20'], (lightgcn, baseline)
    assert state.best_test['ndcg@20'] > baseline['ndcg@20']


def test_most_popular_ranks_by_training_count():
    data = make_synthetic(SyntheticConfig(num_users=50, num_items=20,
                                          mean_degree=4))
    model = MostPopular(50, 20)
    model.prepare(data)
    counts = torch.bincount(split_edge_index(data, 'train')[1],
                            minlength=20)
    scores = model.score_fn(data)(torch.tensor([0, 7]))
    assert torch.equal(scores, counts.float().expand(2, -1))


def test_sub_phase_seconds_are_summed_and_taken_out_of_the_step(tiny):
    class Timed(LightGCNRecommender):
        def train_step(self, data, batch, optimizer):
            parts = super().train_step(data, batch, optimizer)
            return {**parts, 'seconds_inner': 0.25}

    torch.manual_seed(0)
    model = Timed(60, 30, LightGCNConfig(embedding_dim=4, num_layers=1))
    data = model.prepare(tiny.clone())
    sampler = BPRSampler(split_edge_index(data, 'train'), 60, 30, 16)
    record = run_epoch(model, data, sampler,
                       torch.optim.Adam(model.parameters(), lr=1e-2), 0,
                       progress=False)
    assert record['seconds_inner'] == pytest.approx(0.25 * len(sampler))
    assert 'inner' not in record  # not averaged as a loss part
    # The phases partition the epoch: the scripted 'inner' time (never
    # actually spent) was subtracted from the step's time.
    total = record['seconds_recommender'] + record['seconds_inner']
    assert total <= record['seconds_train'] + 1e-6
    assert record['seconds_recommender'] < 0


def test_checkpoint_carries_the_cuda_generators(tmp_path, monkeypatch):
    # Simulated: on a GPU the dropout and noise streams live in the CUDA
    # generators, which a resumed run must continue, not restart.
    saved = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'get_rng_state_all', lambda: saved)
    monkeypatch.setattr(torch.cuda, 'set_rng_state_all', restored.append)
    monkeypatch.setattr(torch.cuda, 'manual_seed_all', lambda seed: None)
    # torch 2.4's optimizers ask a "CUDA" device whether it is capturing.
    monkeypatch.setattr(torch.cuda, 'is_current_stream_capturing',
                        lambda: False)
    _train(tmp_path / 'a', ('train.epochs', '1'), ('train.device', 'cpu'))
    ckpt = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)
    assert [t.tolist() for t in ckpt['cuda_rng']] == [[1, 2, 3]]
    _train(tmp_path / 'b', ('train.epochs', '2'), ('train.device', 'cpu'),
           resume=str(tmp_path / 'a' / 'last.pt'))
    assert [[t.tolist() for t in r] for r in restored] == [[[1, 2, 3]]]


def test_phase_clock_waits_for_the_gpu(monkeypatch):
    from pyg_mmrec.nn.models.base import device_clock
    waited = []
    monkeypatch.setattr(torch.cuda, 'synchronize', waited.append)
    device_clock(torch.device('cpu'))
    assert waited == []
    device_clock(torch.device('cuda', 1))
    assert waited == [torch.device('cuda', 1)]
