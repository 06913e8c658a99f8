import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from pyg_mmrec.data.sampling import BPRSampler
from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.evaluation import RankingEvaluator
from pyg_mmrec.nn.models.diffmm import DiffMM, DiffMMConfig, build_diffmm
from pyg_mmrec.nn.models.lightgcn import LightGCNRecommender
from pyg_mmrec.nn.sparse import to_adj
from pyg_mmrec.train.config import TrainConfig
from pyg_mmrec.train.loop import fit

SMALL = dict(num_users=40, num_items=30, mean_degree=5, feature_dim=6)
TINY_CONFIG = DiffMMConfig(embedding_dim=8, denoiser_hidden=16,
                           diffusion_batch_size=16, keep_rate=1.0)


def dense_sym_norm(edge_index, num_users, num_items):
    n = num_users + num_items
    adj = torch.eye(n)
    adj[edge_index[0], num_users + edge_index[1]] = 1.0
    adj[num_users + edge_index[1], edge_index[0]] = 1.0
    d = adj.sum(1).pow(-0.5)
    return d.view(-1, 1) * adj * d.view(1, -1)


def small_model(modalities=('visual', 'acoustic'), **config):
    data = make_synthetic(SyntheticConfig(seed=1, modalities=modalities,
                                          **SMALL))
    torch.manual_seed(0)
    model = build_diffmm(data, dataclasses.replace(TINY_CONFIG, **config))
    data = model.prepare(data)
    return model, data


@pytest.mark.parametrize('modalities', [('visual', ), ('visual', 'acoustic'),
                                        ('visual', 'acoustic', 'textual')])
def test_forward_equals_dense_formulas(modalities):
    model, data = small_model(modalities)
    with torch.no_grad():  # non-uniform modality weights
        model.modality_logits.copy_(torch.arange(len(modalities)).float())
    cfg = model.config
    U, I = model.num_users, model.num_items
    A = dense_sym_norm(data['user', 'interacts', 'item'].edge_index, U, I)
    E_u, E_i = model.user_emb, model.item_emb
    weights = torch.softmax(model.modality_logits, 0)
    x = 0
    for j, m in enumerate(modalities):
        lin = model.projection.lins[m]
        p = F.normalize(data['item'][m] @ lin.weight.t() + lin.bias, dim=1)
        gen = data['user', f'diffusion_{m}', 'item'].edge_index
        G = dense_sym_norm(gen, U, I)  # keep_rate = 1: nothing dropped
        s = A @ torch.cat([E_u, p])
        s = s + A @ torch.cat([s[:U], E_i])
        s = s + cfg.lambda_adj * G @ torch.cat([E_u, E_i])
        x = x + weights[j] * s
    e = x + A @ x + cfg.lambda_ris * F.normalize(x, dim=1)
    user, item = model(data)
    torch.testing.assert_close(user, e[:U])
    torch.testing.assert_close(item, e[U:])


def test_contrastive_views_equal_dense_formulas():
    model, data = small_model()
    U, I = model.num_users, model.num_items
    A = dense_sym_norm(data['user', 'interacts', 'item'].edge_index, U, I)
    _, views = model.embeddings(data, with_views=True)
    for m, z in views.items():
        lin = model.projection.lins[m]
        p = F.normalize(data['item'][m] @ lin.weight.t() + lin.bias, dim=1)
        G = dense_sym_norm(data['user', f'diffusion_{m}', 'item'].edge_index,
                           U, I)
        c = G @ torch.cat([model.user_emb, p])
        torch.testing.assert_close(z, c + A @ c)


def dense_info_nce(z1, z2, index, tau):
    # MODELS.md: -mean_n log softmax_j(<z1_n, z2_j> / tau)[n], L2-normed.
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    logits = z1[index] @ z2.t() / tau
    return -(logits[torch.arange(index.numel()), index] -
             logits.exp().sum(1).log()).mean()


@pytest.mark.parametrize('cl_method', [0, 1])
def test_loss_equals_the_formula(cl_method):
    # Three modalities: cl_method=0 sums three unordered pairs of views.
    # Large weights so that a wrong regulariser or view term shows.
    model, data = small_model(('visual', 'acoustic', 'textual'),
                              cl_method=cl_method, ssl_weight=0.7,
                              reg_weight=0.05, temperature=0.3)
    U = model.num_users
    users = torch.tensor([0, 3, 3, 9, 17])
    pos = torch.tensor([1, 4, 4, 22, 0])
    neg = torch.tensor([5, 2, 29, 8, 6])
    loss, parts = model.loss(data, users, pos, neg)

    e, views = model.embeddings(data, with_views=True)
    e_u, e_i = e[:U], e[U:]
    diff = (e_u[users] * e_i[pos]).sum(1) - (e_u[users] * e_i[neg]).sum(1)
    bpr = -torch.log(torch.sigmoid(diff)).mean()
    reg = 0.05 * (model.user_emb.pow(2).sum() + model.item_emb.pow(2).sum())
    if cl_method == 1:  # the main view against each modality view
        pairs = [(e, views[m]) for m in model.modalities]
    else:
        z = [views[m] for m in model.modalities]
        pairs = [(z[0], z[1]), (z[0], z[2]), (z[1], z[2])]
    cl = 0.7 * sum(dense_info_nce(a[:U], b[:U], users, 0.3) +
                   dense_info_nce(a[U:], b[U:], pos, 0.3)
                   for a, b in pairs)
    assert parts['bpr'] == pytest.approx(bpr.item(), rel=1e-5)
    assert parts['reg'] == pytest.approx(reg.item(), rel=1e-5)
    assert parts['cl'] == pytest.approx(cl.item(), rel=1e-5)
    torch.testing.assert_close(loss, bpr + reg + cl)


@pytest.mark.parametrize('cl_method', [0, 1])
def test_training_step_lowers_loss_on_fixed_batch(cl_method):
    model, data = small_model(cl_method=cl_method, ssl_weight=0.1)
    users = torch.tensor([0, 1, 2, 3, 4, 5])
    pos = data['user', 'interacts', 'item'].edge_index[1][:6]
    neg = torch.tensor([7, 8, 9, 10, 11, 12])
    optimizer = model.configure_optimizer(lr=0.01)
    before, parts = model.loss(data, users, pos, neg)
    assert parts['cl'] > 0 and parts['bpr'] > 0
    for _ in range(5):
        model.train_step(data, (users, pos, neg), optimizer)
    after, _ = model.loss(data, users, pos, neg)
    assert after < before - 1e-3


def test_recommender_optimizer_leaves_denoisers_alone():
    model, data = small_model()
    names = {id(p) for group in model.configure_optimizer(1e-3).param_groups
             for p in group['params']}
    assert all(id(p) not in names for p in model.denoisers.parameters())
    assert id(model.user_emb) in names and id(model.modality_logits) in names


def test_diffusion_training_feeds_each_denoiser_its_modality(monkeypatch):
    # Each denoiser learns every user's interaction row once per pass, with
    # the constraint between the (detached) item embeddings and its own
    # modality's projected features.
    model, data = small_model(('visual', 'acoustic', 'textual'), e_loss=0.3)
    calls = []
    real = model.diffusion.training_loss

    def spy(denoiser, x0, **kwargs):
        calls.append((denoiser, x0, kwargs))
        return real(denoiser, x0, **kwargs)

    monkeypatch.setattr(model.diffusion, 'training_loss', spy)
    model.train_diffusion(data, epoch=0)
    with torch.no_grad():
        projected = model.projection(
            {m: data['item'][m] for m in model.modalities})
    rows = torch.zeros(model.num_users, model.num_items)
    train = data['user', 'interacts', 'item'].edge_index
    rows[train[0], train[1]] = 1.0
    for m in model.modalities:
        mine = [c for c in calls if c[0] is model.denoisers[m]]
        assert mine
        x0 = torch.cat([x for _, x, _ in mine])
        # All users once each, in some order: the same multiset of rows.
        assert x0.size(0) == model.num_users
        assert sorted(map(tuple, x0.tolist())) == \
            sorted(map(tuple, rows.tolist()))
        for _, _, kwargs in mine:
            torch.testing.assert_close(kwargs['item_emb'], model.item_emb,
                                       check_dtype=False)
            assert not kwargs['item_emb'].requires_grad
            torch.testing.assert_close(kwargs['modality_emb'], projected[m])
            assert kwargs['lambda_e'] == 0.3
    assert len(calls) == len(model.modalities) * len(mine)


def test_diffusion_training_lowers_denoiser_loss():
    model, data = small_model()
    losses = [model.train_diffusion(data, epoch) for epoch in range(15)]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])


def test_before_epoch_regenerates_graphs_from_denoisers():
    model, data = small_model()
    times = model.before_epoch(data, epoch=0)
    assert set(times) == {'diffusion', 'graph'}
    gen = data['user', 'diffusion_visual', 'item'].edge_index
    assert gen.size(1) == model.num_users * model.config.topk
    # The generated edge of each user is its top item of the reverse process.
    rows = torch.zeros(model.num_users, model.num_items)
    train = data['user', 'interacts', 'item'].edge_index
    rows[train[0], train[1]] = 1.0
    denoiser = model.denoisers['visual'].eval()
    expected = model.diffusion.reverse(denoiser, rows).argmax(1)
    assert torch.equal(gen[1], expected)


def test_cl_method_0_with_one_modality_has_no_contrastive_term():
    # The sum over pairs of modality views is empty: the loss is BPR + reg.
    with pytest.warns(UserWarning, match='with one modality there are none'):
        model, data = small_model(('visual', ), cl_method=0)
    batch = (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]),
             torch.tensor([3, 4, 5]))
    loss, parts = model.loss(data, *batch)
    assert set(parts) == {'bpr', 'reg'}
    assert loss.item() == pytest.approx(parts['bpr'] + parts['reg'])
    model.config = dataclasses.replace(model.config, ssl_weight=0.0)
    assert torch.equal(model.loss(data, *batch)[0], loss)


def test_invalid_configurations():
    with pytest.raises(ValueError, match='cl_method must be one of 0, 1'):
        small_model(cl_method=2)
    with pytest.raises(ValueError, match='at least one item modality'):
        DiffMM(3, 3, {}, TINY_CONFIG)
    model, _ = small_model(('visual', 'acoustic'))
    other = make_synthetic(SyntheticConfig(seed=1, modalities=('visual', ),
                                           **SMALL))
    with pytest.raises(ValueError, match="no item features for modality "
                       r"'acoustic' \(data has: visual\)"):
        model.prepare(other)


def test_diffmm_beats_lightgcn_on_synthetic_data():
    # The synthetic modalities reveal the items' latent factors, so the
    # multi-modal model must win at the same budget.
    data = make_synthetic(SyntheticConfig(num_users=600, num_items=300,
                                          seed=3))
    config = TrainConfig(epochs=6, patience=0, lr=1e-3, batch_size=256)
    results = {}
    for name in ('lightgcn', 'diffmm'):
        torch.manual_seed(0)
        if name == 'diffmm':
            model = build_diffmm(data, DiffMMConfig(denoiser_hidden=200,
                                                    diffusion_batch_size=256))
        else:
            model = LightGCNRecommender(600, 300)
        prepared = model.prepare(data.clone())
        sampler = BPRSampler(prepared['user', 'interacts', 'item'].edge_index,
                             600, 300, config.batch_size, seed=0)
        state = fit(model, prepared, sampler,
                    model.configure_optimizer(config.lr),
                    RankingEvaluator(prepared), config, progress=False)
        results[name] = state.best_test['recall@20']
    assert results['diffmm'] > 1.1 * results['lightgcn'], results


@pytest.mark.parametrize('backend', ['scatter', 'csr', 'edge_index'])
def test_backends_agree_with_default(backend):
    model, data = small_model()
    user, item = model(data)
    other = build_diffmm(data, dataclasses.replace(model.config,
                                                   backend=backend))
    other.load_state_dict(model.state_dict())
    other_data = other.prepare(data.clone())
    for m in model.modalities:  # the same generated graphs, other backend
        store = data['user', f'diffusion_{m}', 'item']
        other_data['user', f'diffusion_{m}', 'item'].adj = to_adj(
            store.adj_edge_index, store.adj_edge_weight,
            model.num_users + model.num_items, backend=backend)
    other_user, other_item = other(other_data)
    torch.testing.assert_close(other_user, user, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(other_item, item, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('seed', [0, 3])
def test_restored_checkpoint_reproduces_the_reported_metrics(tmp_path, seed):
    # The generated graphs drop edges at random (drawn from the seed): a
    # restored model must rebuild the very graphs its best epoch was
    # evaluated with.
    from pyg_mmrec.train.run import RunOptions, evaluate_checkpoint, train
    overrides = [('data.num_users', '120'), ('data.num_items', '60'),
                 ('train.epochs', '2'), ('train.batch_size', '128'),
                 ('denoiser_hidden', '32'), ('keep_rate', '0.5'),
                 ('train.seed', str(seed))]
    report = train(RunOptions(model='diffmm', overrides=overrides,
                              out=str(tmp_path), progress=False))
    again = evaluate_checkpoint(str(tmp_path / 'checkpoint.pt'))
    assert again['test'] == pytest.approx(report['test'], abs=1e-6)
    assert again['val'] == pytest.approx(report['val'], abs=1e-6)


def test_bf16_diffusion_training_only_where_bf16_is_native(monkeypatch):
    # Emulated bf16 is slower than float32, so without native support the
    # option leaves training in float32 (the same losses bit for bit).
    losses = {}
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False,
                        raising=False)
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported',
                            lambda: native, raising=False)
        for bf16 in (True, False):
            model, data = small_model(diffusion_bf16=bf16)
            losses[native, bf16] = model.train_diffusion(data, epoch=0)
    assert losses[False, True] == losses[False, False]
    assert losses[True, True] != losses[True, False]


def test_training_csr_moves_with_the_model_and_is_not_saved():
    # prepare() may run before .to(device): the CSR must follow the model.
    model, _ = small_model()
    buffers = {id(b) for b in model.buffers()}
    assert all(id(t) in buffers for t in model.train_csr)
    assert not any(key.startswith('_train') for key in model.state_dict())


def test_reset_parameters_forgets_the_training_state():
    model, data = small_model()
    model.before_epoch(data, epoch=3)  # trains denoisers, builds graphs
    assert int(model.graph_epoch) == 3 and model.get_extra_state()
    model.reset_parameters()
    assert int(model.graph_epoch) == -1
    assert model.get_extra_state() == {}  # the denoisers' Adam starts anew


def test_diverging_denoisers_stop_training():
    from pyg_mmrec.errors import DivergenceError
    model, data = small_model()
    for name in model.modalities:  # features that overflow the loss
        data['item'][name] = data['item'][name] * 1e30
    with pytest.raises(DivergenceError, match='the diffusion loss became '
                       '(nan|inf) at epoch 0: the denoisers diverged'):
        model.before_epoch(data, epoch=0)


def test_topk_beyond_the_item_count_is_a_config_error():
    from pyg_mmrec.errors import ConfigError
    with pytest.raises(ConfigError, match=re.escape(
            'topk=31 exceeds the number of items (30)')):
        small_model(topk=31)


class RecordingBar:
    # Stands in for tqdm: records how the diffusion bar was made and moved.
    made = []

    def __init__(self, total, disable, **kwargs):
        self.total, self.disable, self.updates = total, disable, 0
        self.closed = False
        RecordingBar.made.append(self)

    def update(self, n=1):
        self.updates += n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True


@pytest.mark.parametrize('progress', [True, False])
def test_training_loop_shows_diffusion_progress(monkeypatch, progress):
    import pyg_mmrec.nn.models.diffmm as diffmm_module
    from pyg_mmrec.train.loop import run_epoch
    monkeypatch.setattr(diffmm_module, 'tqdm', RecordingBar)
    RecordingBar.made = []
    model, data = small_model()  # 40 users, batches of 16, 2 modalities
    sampler = BPRSampler(data['user', 'interacts', 'item'].edge_index,
                         model.num_users, model.num_items, 64, seed=0)
    run_epoch(model, data, sampler, model.configure_optimizer(1e-3),
              epoch=0, progress=progress)
    [bar] = RecordingBar.made
    # disable=None lets tqdm show the bar on a terminal only.
    assert bar.disable is (None if progress else True)
    assert bar.total == bar.updates == 3 * 2 and bar.closed


def test_before_epoch_override_without_progress_still_runs():
    # A subclass written before before_epoch took `progress`.
    from pyg_mmrec.train.loop import run_epoch

    class OldStyle(DiffMM):
        def before_epoch(self, data, epoch):
            self.seen = epoch
            return {'custom': 1.5}

    model, data = small_model()
    old = OldStyle(model.num_users, model.num_items,
                   {m: data['item'][m].size(1) for m in model.modalities},
                   model.config)
    data = old.prepare(data)
    sampler = BPRSampler(data['user', 'interacts', 'item'].edge_index,
                         old.num_users, old.num_items, 64, seed=0)
    metrics = run_epoch(old, data, sampler, old.configure_optimizer(1e-3),
                        epoch=4, progress=True)
    assert old.seen == 4 and metrics['seconds_custom'] == 1.5
