r"""Training configuration and ``key=value`` overrides."""
import re

import pytest

from pyg_mmrec.data.synthetic import SyntheticConfig
from pyg_mmrec.errors import ConfigError
from pyg_mmrec.nn.models.lightgcn import LightGCNConfig
from pyg_mmrec.train.config import (
    TrainConfig,
    apply_overrides,
    parse_overrides,
)
from pyg_mmrec.train.run import RunOptions, build_configs, resolve_device


def _configs():
    return {'train': TrainConfig(), 'model': LightGCNConfig(),
            'data': SyntheticConfig()}


def test_scoped_overrides():
    configs = _configs()
    out = apply_overrides(configs, [('train.epochs', '7'),
                                    ('train.lr', '0.05'),
                                    ('model.num_layers', '2'),
                                    ('data.num_users', '150'),
                                    ('data.modalities', 'visual, textual'),
                                    ('train.device', 'cpu')])
    assert out['train'].epochs == 7 and isinstance(out['train'].epochs, int)
    assert out['train'].lr == 0.05
    assert out['train'].device == 'cpu'
    assert out['model'].num_layers == 2
    assert out['data'].num_users == 150
    assert out['data'].modalities == ('visual', 'textual')
    # Everything else keeps its default, and the inputs are not modified.
    assert out['train'].batch_size == TrainConfig().batch_size
    assert out['model'].embedding_dim == LightGCNConfig().embedding_dim
    assert configs['train'].epochs == TrainConfig().epochs
    assert configs['data'].num_users == SyntheticConfig().num_users


def test_bare_keys_go_to_the_config_that_has_them():
    out = apply_overrides(_configs(), [('embedding_dim', '16'),
                                       ('patience', '3'),
                                       ('mean_degree', '6.5')])
    assert out['model'].embedding_dim == 16
    assert out['train'].patience == 3
    assert out['data'].mean_degree == 6.5
    # 'seed' exists in train and data: the first config (train) gets it.
    out = apply_overrides(_configs(), [('seed', '5')])
    assert out['train'].seed == 5
    assert out['data'].seed == SyntheticConfig().seed
    out = apply_overrides(_configs(), [('data.seed', '5')])
    assert out['data'].seed == 5 and out['train'].seed == 0


@pytest.mark.parametrize('key', ['train.nope', 'nope', 'model.epochs',
                                 'optim.lr'])
def test_unknown_key_lists_known_keys(key):
    with pytest.raises(ConfigError,
                       match=f"unknown option '{re.escape(key)}'") as e:
        apply_overrides(_configs(), [(key, '1')])
    message = str(e.value)
    for known in ('train.epochs', 'train.lr', 'model.num_layers',
                  'model.embedding_dim', 'data.num_users', 'data.seed'):
        assert known in message


@pytest.mark.parametrize('key,value,kind', [
    ('train.epochs', 'ten', 'int'),
    ('train.epochs', '2.5', 'int'),
    ('train.lr', 'fast', 'float'),
    ('data.mean_degree', '', 'float'),
])
def test_bad_value_type(key, value, kind):
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot set '{key}' to '{value}': expected {kind}")):
        apply_overrides(_configs(), [(key, value)])


@pytest.mark.parametrize('key,value,match', [
    ('train.epochs', '0', 'epochs must be >= 1, got 0'),
    ('train.patience', '-1', 'patience must be >= 0'),
    ('train.lr', '0', r'lr must be > 0, got 0\.0'),
    ('train.lr', 'inf', 'lr must be finite, got inf'),
    ('data.num_users', '1', 'at least 2 users'),
    ('data.feature_dim', '0', 'feature_dim must be >= 1, got 0'),
    ('data.temperature', '0', 'temperature must be > 0, got 0.0'),
    ('data.feature_noise', '-1', 'feature_noise must be >= 0, got -1.0'),
])
def test_invalid_values_rejected_by_the_config(key, value, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(_configs(), [(key, value)])


def test_parse_overrides():
    assert parse_overrides(['a=1', ' train.lr = 0.1 ', 'x=a=b']) == [
        ('a', '1'), ('train.lr', '0.1'), ('x', 'a=b')]
    for bad in ['novalue', '=3']:
        with pytest.raises(ConfigError, match='is not of the form key=value'):
            parse_overrides([bad])


def test_build_configs_and_presets():
    configs = build_configs(RunOptions(overrides=[('train.epochs', '3')]))
    assert configs['train'].epochs == 3
    assert isinstance(configs['model'], LightGCNConfig)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        build_configs(RunOptions(model='nope'))
    with pytest.raises(ConfigError, match="unknown preset 'imdb'"):
        build_configs(RunOptions(preset='imdb'))


def test_model_recipe_fixes_its_optimiser_without_a_preset():
    # MMSSL's AdamW learning rate and patience are part of its recipe;
    # explicit options still win.
    mmssl = build_configs(RunOptions(model='mmssl'))['train']
    assert (mmssl.lr, mmssl.patience) == (5.5e-4, 7)
    lightgcn = build_configs(RunOptions())['train']
    assert (lightgcn.lr, lightgcn.patience) == (1e-3, 10)
    explicit = build_configs(RunOptions(model='mmssl',
                                        overrides=[('train.lr', '0.01')]))
    assert explicit['train'].lr == 0.01


@pytest.mark.parametrize('preset', ['tiktok', 'baby', 'sports'])
def test_presets_carry_the_papers_training_recipes(preset):
    # DiffMM: Adam at 1e-3 for 50 epochs, no early stopping; MMSSL: AdamW
    # at 5.5e-4, patience 7. Options given explicitly still win.
    diffmm = build_configs(RunOptions(model='diffmm', preset=preset))['train']
    assert (diffmm.lr, diffmm.batch_size, diffmm.epochs,
            diffmm.patience) == (1e-3, 1024, 50, 0)
    mmssl = build_configs(RunOptions(model='mmssl', preset=preset))['train']
    assert (mmssl.lr, mmssl.batch_size, mmssl.epochs,
            mmssl.patience) == (5.5e-4, 1024, 50, 7)
    short = build_configs(RunOptions(
        model='diffmm', preset=preset,
        overrides=[('train.epochs', '11'), ('train.patience', '3')]))['train']
    assert (short.epochs, short.patience) == (11, 3)


def test_resolve_device():
    import torch
    assert resolve_device('cpu') == torch.device('cpu')
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device('gpu0')
    for name in ('mps', 'meta'):
        with pytest.raises(ConfigError, match=f"device '{name}' is not "
                           "supported: use 'cpu', 'cuda', 'cuda:N' or 'auto'"):
            resolve_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda' requested but "
                           'CUDA is not available'):
            resolve_device('cuda')


def test_resolve_device_checks_the_cuda_index(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert resolve_device('cuda:1') == torch.device('cuda', 1)
    assert resolve_device('cuda') == torch.device('cuda')
    with pytest.raises(ConfigError, match=re.escape(
            "device 'cuda:2' requested but this machine has 2 CUDA "
            "device(s)")):
        resolve_device('cuda:2')
