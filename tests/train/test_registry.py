r"""A model of the user's own, registered with the training command's
machinery from Python (README, "Composing the library's layers")."""
from dataclasses import dataclass

import pytest
import torch

from pyg_mmrec.errors import ConfigError
from pyg_mmrec.nn.models.lightgcn import LightGCNConfig, LightGCNRecommender
from pyg_mmrec.train import (
    ModelSpec,
    RunOptions,
    evaluate_checkpoint,
    register_model,
    restore,
    train,
)
from pyg_mmrec.train import registry


@dataclass
class TwoLayerConfig:
    embedding_dim: int = 16


def build_two_layer(data, config: TwoLayerConfig, seed: int = 0):
    return LightGCNRecommender(
        data['user'].num_nodes, data['item'].num_nodes,
        LightGCNConfig(embedding_dim=config.embedding_dim, num_layers=2))


def test_registered_model_trains_resumes_and_restores(tmp_path,
                                                      monkeypatch):
    # Removed again after the test.
    monkeypatch.setitem(registry.MODELS, 'two_layer', None)
    register_model('two_layer', ModelSpec(TwoLayerConfig, build_two_layer,
                                          train_defaults=dict(lr=0.01)))
    small = [('data.num_users', '120'), ('data.num_items', '60')]
    torch.manual_seed(0)
    report = train(RunOptions(model='two_layer', out=str(tmp_path),
                              progress=False,
                              overrides=[*small, ('train.epochs', '2'),
                                         ('model.embedding_dim', '8')]))
    assert report['model'] == 'two_layer' and len(report['epochs']) == 2

    model, _, ckpt = restore(str(tmp_path / 'checkpoint.pt'))
    assert isinstance(model, LightGCNRecommender)
    assert model.config == LightGCNConfig(embedding_dim=8, num_layers=2)
    assert ckpt['configs']['train']['lr'] == 0.01  # the model's own default
    again = evaluate_checkpoint(str(tmp_path / 'checkpoint.pt'))
    assert again['epoch'] == report['best_epoch']
    assert again['test'] == pytest.approx(report['test'], abs=1e-6)

    # Resuming needs the registration too: the checkpoint names the model.
    torch.manual_seed(0)
    longer = train(RunOptions(out=str(tmp_path), progress=False,
                              resume=str(tmp_path / 'last.pt'),
                              overrides=[('train.epochs', '3')]))
    assert len(longer['epochs']) == 3
    assert longer['epochs'][:2] == report['epochs'][:2]


def test_an_unregistered_model_is_named():
    with pytest.raises(ConfigError, match="unknown model 'two_layer' "
                       r"\(available: lightgcn, diffmm, mmssl\)"):
        train(RunOptions(model='two_layer', progress=False))
