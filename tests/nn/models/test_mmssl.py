import copy
import dataclasses
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.data import HeteroData

import pyg_mmrec.nn.models.mmssl as mmssl_module
from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.nn.adversarial import (
    Discriminator,
    ProjectedDiscriminator,
    gradient_penalty,
)
from pyg_mmrec.nn.models.mmssl import (
    MMSSL,
    MMSSL_PRESETS,
    MMSSLConfig,
    build_mmssl,
)
from pyg_mmrec.nn.conv import OneSidedNormConv
from pyg_mmrec.transforms.adversarial import (
    AdversarialGraph,
    preference_topk_edges,
)

SMALL = dict(num_users=40, num_items=30, mean_degree=5, feature_dim=6)
TINY = MMSSLConfig(embedding_dim=8, heads=4, disc_hidden=8)
INTERACTS = ('user', 'interacts', 'item')


def small_model(modalities=('visual', 'acoustic'), **config):
    data = make_synthetic(SyntheticConfig(seed=1, modalities=modalities,
                                          **SMALL))
    torch.manual_seed(0)
    model = build_mmssl(data, dataclasses.replace(TINY, **config))
    data = model.prepare(data)
    return model, data


def fixed_batch(data, size=12):
    edge_index = data[INTERACTS].edge_index
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(edge_index.size(1), generator=gen)[:size]
    neg = torch.randint(data['item'].num_nodes, (size, ), generator=gen)
    return edge_index[0, pick], edge_index[1, pick], neg


# Dense reference formulas (MODELS.md, MMSSL) ################################


def dense_one_sided(edge_index, num_users, num_items):
    R = torch.zeros(num_users, num_items)
    R[edge_index[0], edge_index[1]] = 1.0

    def inv_sqrt(deg):
        return torch.where(deg > 0, deg.clamp(min=1).pow(-0.5),
                           torch.zeros_like(deg))

    P = inv_sqrt(R.sum(1)).view(-1, 1) * R
    Q = inv_sqrt(R.sum(0)).view(-1, 1) * R.t()
    return P, Q


def dense_attention(att, views):
    # Head by head and modality by modality, as the paper writes it.
    M, H, d = len(views), att.heads, att.channels
    dh = d // H
    outs = []
    for m in range(M):
        heads = []
        for h in range(H):
            cols = slice(h * dh, (h + 1) * dh)
            q = (views[m] @ att.weight_query)[:, cols]
            scores = torch.stack([
                (q * (views[k] @ att.weight_key)[:, cols]).sum(1) /
                math.sqrt(dh) for k in range(M)
            ], dim=1)
            a = torch.softmax(scores, dim=1)
            heads.append(sum(a[:, k:k + 1] * views[k][:, cols]
                             for k in range(M)))
        outs.append(torch.cat(heads, dim=1) @ att.weight_cat)
    return sum(outs) / M


def dense_forward(model, data, softmax=False):
    cfg = model.config
    U, I = model.num_users, model.num_items
    P, Q = dense_one_sided(data[INTERACTS].edge_index, U, I)
    E_u, E_i = model.user_emb, model.item_emb
    y_u, y_i, o_u, o_i = [], [], [], []
    for m in model.modalities:
        lin = model.projection.lins[m]
        h = data['item'][m] @ lin.weight.t() + lin.bias  # eval: no dropout
        y_u.append(P @ h)
        y_i.append(Q @ (P @ h))
        P_m, Q_m = dense_one_sided(
            data['user', f'adversarial_{m}', 'item'].edge_index, U, I)
        o_u.append(P_m @ E_i)
        o_i.append(Q_m @ E_u)
    u = E_u + cfg.id_weight * F.normalize(
        dense_attention(model.attention, o_u), dim=1)
    i = E_i + cfg.id_weight * F.normalize(
        dense_attention(model.attention, o_i), dim=1)
    us, its = [u], [i]
    for layer in range(cfg.num_layers):
        u = P @ i
        if softmax and layer == cfg.num_layers - 1:
            u = torch.softmax(u, dim=1)
        i = Q @ u
        if softmax and layer == cfg.num_layers - 1:
            i = torch.softmax(i, dim=1)
        us.append(u)
        its.append(i)
    user = sum(us) / len(us) + cfg.feature_weight * sum(
        F.normalize(y, dim=1) for y in y_u)
    item = sum(its) / len(its) + cfg.feature_weight * sum(
        F.normalize(y, dim=1) for y in y_i)
    return user, item


@pytest.mark.parametrize('modalities', [('visual', ), ('acoustic', ),
                                        ('visual', 'textual'),
                                        ('visual', 'acoustic', 'textual')])
def test_forward_equals_dense_formulas(modalities):
    model, data = small_model(modalities)
    model.before_epoch(data, epoch=1)  # generated graphs differ from R
    gen = data['user', f'adversarial_{modalities[0]}', 'item'].edge_index
    assert gen.size(1) == model.num_users  # max(1, ceil(1e-4 * 30)) = 1
    model.eval()
    user, item = model(data)
    ref_user, ref_item = dense_forward(model, data)
    torch.testing.assert_close(user, ref_user)
    torch.testing.assert_close(item, ref_item)


def test_embeddings_detach_cuts_every_view():
    # The discriminator's step projects detached representations: none of
    # them may reach the generator.
    model, data = small_model()
    emb = model.embeddings(data)
    detached = emb.detach()
    assert type(detached) is type(emb)
    for got, want in zip(detached, emb):
        if isinstance(want, dict):
            assert list(got) == list(want)
            got, want = list(got.values()), list(want.values())
        else:
            got, want = [got], [want]
        for x, y in zip(got, want):
            assert y.requires_grad and not x.requires_grad
            assert torch.equal(x, y)


def test_initial_modality_graphs_are_the_training_graph():
    model, data = small_model()
    train = data[INTERACTS].edge_index
    for m in model.modalities:
        assert torch.equal(data['user', f'adversarial_{m}', 'item'].edge_index,
                           train)


def test_last_layer_softmax_flag():
    model, data = small_model(num_layers=2)
    model.before_epoch(data, epoch=1)
    flagged = MMSSL(model.num_users, model.num_items,
                    {m: 6 for m in model.modalities},
                    dataclasses.replace(model.config,
                                        last_layer_softmax=True))
    flagged.load_state_dict(model.state_dict())
    model.eval()
    flagged.eval()
    user, item = flagged(data)  # same data, same generated graphs
    ref_user, ref_item = dense_forward(flagged, data, softmax=True)
    torch.testing.assert_close(user, ref_user)
    torch.testing.assert_close(item, ref_item)
    plain_user, _ = model(data)
    assert not torch.allclose(user, plain_user, atol=1e-3)
    # Layer-0 and feature terms are shared: only the last layer changed.
    plain_ref, _ = dense_forward(model, data, softmax=False)
    torch.testing.assert_close(plain_user, plain_ref)


def test_default_config_follows_the_paper():
    cfg = MMSSLConfig()
    assert not cfg.last_layer_softmax
    assert cfg.discriminator == 'projected'
    assert (cfg.num_layers, cfg.heads, cfg.id_weight, cfg.feature_weight,
            cfg.cl_weight, cfg.adv_weight, cfg.graph_rate) == \
        (2, 4, 0.36, 0.55, 0.03, 1e-4, 1e-4)
    assert set(MMSSL_PRESETS) == {'tiktok', 'baby', 'sports'}
    for preset in MMSSL_PRESETS.values():
        dataclasses.replace(cfg, **preset)  # every key is a config field


# Adversarial training ########################################################


def test_discriminator_loss_uses_the_gradient_penalty(monkeypatch):
    model, data = small_model()
    emb = model.embeddings(data)
    users = torch.arange(6)
    real, fake = model.adversarial_rows(emb, users)
    assert real.shape == (6, model.num_items)
    assert fake.shape == (2 * 6, model.num_items)
    assert fake.requires_grad and not real.requires_grad
    calls = []

    def spy(disc, r, f, weight=0.3, **kwargs):
        calls.append((disc, weight))
        return gradient_penalty(disc, r, f, weight, **kwargs)

    monkeypatch.setattr(mmssl_module, 'gradient_penalty', spy)
    disc = model.discriminator.eval()  # deterministic scores
    torch.manual_seed(5)
    loss, parts = model.discriminator_loss(real, fake)
    assert calls == [(model.discriminator, 0.3)]
    torch.manual_seed(5)
    penalty = gradient_penalty(disc, real.repeat(2, 1), fake, 0.3)
    ref = disc(fake).mean() - disc(real).mean() + penalty
    # Eval mode: the mean over the real rows equals that over the repeats.
    torch.testing.assert_close(disc(real).mean(),
                               disc(real.repeat(2, 1)).mean())
    torch.testing.assert_close(loss, ref)
    assert parts['gp'] == pytest.approx(penalty.item())


def test_real_rows_are_sharpened_interactions():
    model, data = small_model(kappa=0.0)  # rows without the preference mix
    emb = model.embeddings(data)
    users = torch.tensor([0, 3])
    real, _ = model.adversarial_rows(emb, users)
    train = data[INTERACTS].edge_index
    for row, u in zip(real, users):
        items = train[1, train[0] == u]
        expected = torch.zeros(model.num_items)
        expected[items] = 1.0
        torch.testing.assert_close(row, F.normalize(expected, dim=0),
                                   atol=1e-3, rtol=0)


def test_each_step_lowers_its_own_loss_on_a_fixed_batch():
    # No feature dropout: the generator step sees the rows checked below.
    model, data = small_model(feature_dropout=0.0)
    model.train()
    batch = fixed_batch(data)
    optimizer = model.configure_optimizer(lr=1e-3)
    torch.manual_seed(1)
    emb = model.embeddings(data)
    real, fake = model.adversarial_rows(emb, torch.unique(batch[0]))
    real, fake = real.detach(), fake.detach()

    def d_loss():
        torch.manual_seed(2)  # the same dropout masks and GP mixing
        return model.discriminator_loss(real, fake)[0].item()

    def g_loss():
        torch.manual_seed(3)
        return model.loss(data, *batch)[0].item()

    d_before = d_loss()
    torch.manual_seed(2)
    model.discriminator_step(real, fake)
    assert d_loss() < d_before

    g_before = g_loss()
    d_params = [p.clone() for p in model.discriminator.parameters()]
    parts = model.train_step(data, batch, optimizer)
    assert {'loss', 'd_loss', 'bpr', 'cl', 'adv', 'gp'} <= set(parts)
    assert g_loss() < g_before
    # train_step took a second discriminator step.
    assert model.discriminator_optimizer().state_dict()['state'][0][
        'step'] == 2
    assert any(not torch.equal(a, b)
               for a, b in zip(d_params, model.discriminator.parameters()))


def test_optimizers_are_separate_and_checkpointed():
    model, data = small_model()
    generator = {id(p) for group in model.configure_optimizer(1e-3)
                 .param_groups for p in group['params']}
    assert isinstance(model.configure_optimizer(1e-3), torch.optim.AdamW)
    assert all(id(p) not in generator
               for p in model.discriminator.parameters())
    assert id(model.user_emb) in generator
    d_opt = model.discriminator_optimizer()
    assert d_opt.defaults['lr'] == 3e-4
    assert d_opt.defaults['betas'] == (0.5, 0.9)
    model.train()
    model.train_step(data, fixed_batch(data), model.configure_optimizer(1e-3))
    state = model.state_dict()
    other = MMSSL(model.num_users, model.num_items,
                  {m: 6 for m in model.modalities}, model.config)
    other.load_state_dict(state)
    loaded = other.discriminator_optimizer().state_dict()
    assert loaded['state'][0]['step'] == 1
    torch.testing.assert_close(loaded['state'][0]['exp_avg'],
                               d_opt.state_dict()['state'][0]['exp_avg'])


@pytest.mark.parametrize('kind,cls', [('projected', ProjectedDiscriminator),
                                      ('paper', Discriminator)])
@pytest.mark.parametrize('modalities', [('textual', ),
                                        ('visual', 'acoustic', 'textual')])
def test_train_step_any_modalities_and_discriminator(kind, cls, modalities):
    model, data = small_model(modalities, discriminator=kind)
    assert isinstance(model.discriminator, cls)
    model.train()
    before = [p.detach().clone() for p in (model.user_emb,
                                           *model.discriminator.parameters())]
    parts = model.train_step(data, fixed_batch(data),
                             model.configure_optimizer(1e-3))
    assert all(math.isfinite(v) for v in parts.values())
    # The reported totals are the sums of their terms (each term is checked
    # against the formula in test_generator_loss_equals_the_formula) ...
    terms = ('bpr', 'reg', 'feat_reg', 'cl', 'adv')
    assert parts['loss'] == pytest.approx(sum(parts[k] for k in terms),
                                          rel=1e-5)
    assert parts['d_loss'] == pytest.approx(
        parts['d_fake'] - parts['d_real'] + parts['gp'], rel=1e-5)
    # ... and both the generator and the discriminator took a step.
    after = [model.user_emb, *model.discriminator.parameters()]
    assert not torch.equal(after[0], before[0])
    assert any(not torch.equal(a, b) for a, b in zip(after[1:], before[1:]))


def dense_grace(a, b, tau):
    # Symmetric GRACE InfoNCE: for node n the negatives are the other
    # nodes in both views.
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)

    def side(x, y):
        inter, intra = (x @ y.t() / tau).exp(), (x @ x.t() / tau).exp()
        den = inter.sum(1) + intra.sum(1) - intra.diag()
        return -(inter.diag() / den).log()

    return 0.5 * (side(a, b) + side(b, a)).mean()


@pytest.mark.parametrize('kind', ['projected', 'paper'])
def test_generator_loss_equals_the_formula(kind):
    # Every term weighted so that it shows; eval mode: no dropout, and the
    # discriminator's BatchNorm uses its running statistics.
    model, data = small_model(('visual', 'acoustic', 'textual'),
                              discriminator=kind, reg_weight=0.1,
                              feature_reg_weight=0.2, cl_weight=0.5,
                              cl_temperature=0.4, adv_weight=0.01)
    model.before_epoch(data, epoch=1)  # o^u_m on generated graphs
    model.eval()
    users = torch.tensor([5, 0, 5, 12, 0, 33])
    pos = torch.tensor([3, 1, 7, 7, 20, 2])
    neg = torch.tensor([9, 0, 4, 28, 11, 6])
    loss, parts = model.loss(data, users, pos, neg)

    emb = model.embeddings(data)  # itself checked by the dense forward
    u, i, n = emb.user[users], emb.item[pos], emb.item[neg]
    bpr = -torch.log(torch.sigmoid((u * i).sum(1) - (u * n).sum(1))).mean()
    reg = 0.1 * (u.pow(2).sum() + i.pow(2).sum() + n.pow(2).sum()) / 12
    I = model.num_items
    feat_reg = 0.2 * sum(emb.feature_user[m].pow(2).sum() +
                         emb.feature_item[m].pow(2).sum()
                         for m in model.modalities) / (2 * I)
    batch = torch.tensor([0, 5, 12, 33])  # the distinct batch users
    cl = 0.5 * sum(dense_grace(emb.id_user[m][batch], emb.user[batch], 0.4)
                   for m in model.modalities)
    # S_m = norm((y^u_m[B] y^i_m^T) * (1 - R_B)), stacked over modalities.
    R = torch.zeros(model.num_users, I)
    R[tuple(data[INTERACTS].edge_index)] = 1.0
    fake = torch.cat([
        F.normalize((emb.feature_user[m][batch] @ emb.feature_item[m].t()) *
                    (1 - R[batch]), dim=1) for m in model.modalities])
    adv = -0.01 * model.discriminator(fake).mean()
    for key, want in [('bpr', bpr), ('reg', reg), ('feat_reg', feat_reg),
                      ('cl', cl), ('adv', adv)]:
        assert parts[key] == pytest.approx(want.item(), rel=1e-4), key
    torch.testing.assert_close(loss, bpr + reg + feat_reg + cl + adv)


def test_before_epoch_regenerates_from_feature_preferences():
    model, data = small_model()
    assert set(model.before_epoch(data, epoch=0)) == {'graph'}
    train = data[INTERACTS].edge_index
    assert torch.equal(data['user', 'adversarial_visual', 'item'].edge_index,
                       train)  # the first epoch trains on R_m = R
    model.train()
    model.train_step(data, fixed_batch(data), model.configure_optimizer(0.1))
    assert model.training
    times = model.before_epoch(data, epoch=1)
    assert set(times) == {'graph'} and model.training
    model.eval()
    emb = model.embeddings(data)
    for m in model.modalities:
        expected = preference_topk_edges(emb.feature_user[m],
                                         emb.feature_item[m], train,
                                         model.num_users, model.num_items,
                                         rate=1e-4)
        gen = data['user', f'adversarial_{m}', 'item'].edge_index
        assert torch.equal(gen, expected)
        assert gen.size(1) == model.num_users  # never empty


@pytest.mark.parametrize('epoch', [0, 1])
def test_graphs_are_stored_in_onesidednorms_layout(epoch):
    # R and every R_m (initial or generated) are stored as OneSidedNorm and
    # AdversarialGraph write them, so a plain PyG layer reading an edge
    # type's own edge_weight propagates as the model does.
    model, data = small_model()
    model.before_epoch(data, epoch=epoch)
    model.eval()
    emb = model.embeddings(data)
    generated = AdversarialGraph(emb.feature_user, emb.feature_item)(data)
    U, I = model.num_users, model.num_items
    conv = OneSidedNormConv()
    graphs = [(INTERACTS, ('item', 'rev_interacts', 'user'))]
    for m in model.modalities:
        fwd = model.generated_edge_type(m)
        rev = model.generated_rev_edge_type(m)
        assert rev == ('item', f'rev_adversarial_{m}', 'user')
        graphs.append((fwd, rev))
        if epoch > 0:
            for edge_type in (fwd, rev):
                for key in ('edge_index', 'edge_weight'):
                    assert torch.equal(data[edge_type][key],
                                       generated[edge_type][key])
    for fwd, rev in graphs:
        P, Q = dense_one_sided(data[fwd].edge_index, U, I)
        store = data[rev]
        users = conv((model.item_emb, None), store.edge_index,
                     store.edge_weight, size=(I, U))
        torch.testing.assert_close(users, P @ model.item_emb)
        store = data[fwd]
        items = conv((model.user_emb, None), store.edge_index,
                     store.edge_weight, size=(U, I))
        torch.testing.assert_close(items, Q @ model.user_emb)
        assert 'rev_edge_weight' not in store


def test_invalid_configurations():
    with pytest.raises(ValueError, match='at least one item modality'):
        MMSSL(3, 3, {}, TINY)
    with pytest.raises(ValueError, match='discriminator must be one of'):
        MMSSL(3, 3, {'visual': 2}, dataclasses.replace(TINY,
                                                       discriminator='x'))
    model, _ = small_model(('visual', 'acoustic'))
    other = make_synthetic(SyntheticConfig(seed=1, modalities=('visual', ),
                                           **SMALL))
    with pytest.raises(ValueError, match="no item features for modality "
                       r"'acoustic' \(data has: visual\)"):
        model.prepare(other)
    fresh = MMSSL(3, 3, {'visual': 2}, TINY)
    with pytest.raises(RuntimeError, match='call prepare'):
        fresh.regenerate_graphs(HeteroData())


# Memory: nothing of size users x items ######################################


def random_data(num_users, num_items, num_edges, feature_dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(num_users, (num_edges, ), generator=gen)
    items = torch.randint(num_items, (num_edges, ), generator=gen)
    key = torch.unique(users * num_items + items)
    data = HeteroData()
    data['user'].num_nodes = num_users
    data['item'].num_nodes = num_items
    data['item'].visual = torch.randn(num_items, feature_dim, generator=gen)
    data['item'].acoustic = torch.randn(num_items, feature_dim, generator=gen)
    data[INTERACTS].edge_index = torch.stack([key // num_items,
                                              key % num_items])
    return data


class NoLargeTensors(TorchDispatchMode):
    r"""Fails on any dense tensor that an operator returns with at least
    :obj:`limit` elements (sparse tensors report their dense size)."""
    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out, )):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
                assert t.numel() < self.limit, (func, tuple(t.shape))
        return out


@pytest.mark.parametrize('kind', ['projected', 'paper'])
def test_no_users_by_items_tensor_anywhere(kind):
    U, I = 3000, 400
    data = random_data(U, I, 6000)
    torch.manual_seed(0)
    config = dataclasses.replace(TINY, discriminator=kind,
                                 graph_batch_size=64)
    batch = (torch.tensor([1, 5, 5, 9, 700, 2999]),
             torch.tensor([0, 1, 2, 3, 4, 5]),
             torch.tensor([6, 7, 8, 9, 10, 11]))
    guard = NoLargeTensors(U * I)
    with guard:
        model = build_mmssl(data, config)
        data = model.prepare(data)
        model.train()
        optimizer = model.configure_optimizer(1e-3)
        model.train_step(data, batch, optimizer)
        model.before_epoch(data, epoch=1)
        model.train_step(data, batch, optimizer)
    assert 0 < guard.largest < U * I / 10


def test_runs_where_a_users_by_items_matrix_cannot_exist():
    # 1M x 500k float32 would be 2 TB: prepare and a training step must still
    # run. (Regenerating the graphs is O(U I d) work by definition, so it is
    # covered by the dispatch-mode test above instead.)
    U, I = 1_000_000, 500_000
    data = random_data(U, I, 2000, feature_dim=2)
    torch.manual_seed(0)
    model = build_mmssl(data, MMSSLConfig(embedding_dim=4, heads=1,
                                          disc_hidden=4))
    data = model.prepare(data)
    model.train()
    train = data[INTERACTS].edge_index
    batch = (train[0, :8], train[1, :8], torch.arange(8))
    parts = model.train_step(data, batch, model.configure_optimizer(1e-3))
    assert math.isfinite(parts['loss']) and math.isfinite(parts['d_loss'])


# Projected rows (the default path of the projected discriminator) ##########


def test_projected_rows_give_the_dense_losses_and_gradients():
    # eta = 0: the Gumbel noise (drawn for different entries by the two
    # paths) does not enter; no dropout: the two discriminators see the
    # same rows.
    model, data = small_model(feature_dropout=0.0, gumbel_eta=0.0,
                              disc_dropout1=0.0, disc_dropout2=0.0)
    assert model.projected_rows
    model.train()
    users = torch.tensor([0, 3, 7, 11, 19])
    emb = model.embeddings(data)
    disc = model.discriminator
    real, fake = model.adversarial_rows(emb, users)
    z_real, z_fake = model.adversarial_projections(emb, users)
    torch.testing.assert_close(z_real, real @ disc.projection)
    torch.testing.assert_close(z_fake, fake @ disc.projection)

    def disc_step(projected):
        disc.zero_grad()
        e = model.embeddings(data)
        if projected:
            r, f = model.adversarial_projections(e, users)
        else:
            r, f = model.adversarial_rows(e, users)
        torch.manual_seed(4)  # the same gradient-penalty mixing
        loss, parts = model.discriminator_loss(r, f, projected=projected)
        loss.backward()
        return parts, [p.grad.clone() for p in disc.parameters()]

    dense_parts, dense_grads = disc_step(False)
    proj_parts, proj_grads = disc_step(True)
    for key in ('d_real', 'd_fake', 'gp'):
        assert proj_parts[key] == pytest.approx(dense_parts[key], rel=1e-4)
    for a, b in zip(proj_grads, dense_grads):
        # fp32 rounding, amplified by the BatchNorm of near-constant inputs
        torch.testing.assert_close(a, b, rtol=5e-3, atol=1e-4)

    batch = fixed_batch(data)

    def gen_grads(dense_rows):
        model.config = dataclasses.replace(model.config,
                                           dense_rows=dense_rows)
        model.zero_grad()
        loss, parts = model.loss(data, *batch)
        loss.backward()
        return parts, {n: p.grad.clone() for n, p in model.named_parameters()
                       if p.grad is not None}

    dense_parts, dense_grads = gen_grads(True)
    proj_parts, proj_grads = gen_grads(False)
    assert proj_parts['adv'] == pytest.approx(dense_parts['adv'], rel=1e-5)
    assert set(proj_grads) == set(dense_grads)
    assert not any(n.startswith('discriminator.') for n in proj_grads)
    for name in dense_grads:
        torch.testing.assert_close(proj_grads[name], dense_grads[name],
                                   rtol=1e-3, atol=1e-6)


def test_projected_rows_need_sparse_sharpening():
    model, _ = small_model(gumbel_temperature=0.5)
    assert not model.projected_rows  # falls back to the dense rows
    model, _ = small_model(discriminator='paper')
    assert not model.projected_rows
    with pytest.raises(RuntimeError, match='projected discriminator'):
        model.adversarial_projections(None, torch.tensor([0]))


def test_generator_gradient_is_clipped_to_max_grad_norm():
    def step_with(max_grad_norm):
        model, data = small_model(feature_dropout=0.0,
                                  max_grad_norm=max_grad_norm)
        optimizer = model.configure_optimizer(lr=1e-3)
        seen = []
        step = optimizer.step

        def spy(*args, **kwargs):
            seen.append(torch.linalg.vector_norm(torch.stack([
                p.grad.norm() for g in optimizer.param_groups
                for p in g['params'] if p.grad is not None])))
            return step(*args, **kwargs)

        optimizer.step = spy
        torch.manual_seed(7)
        parts = model.train_step(data, fixed_batch(data), optimizer)
        return float(seen[0]), parts

    free, parts = step_with(0.0)
    assert 'grad_norm' not in parts and free > 1e-3
    clipped, parts = step_with(free / 4)
    assert parts['grad_norm'] == pytest.approx(free, rel=1e-4)
    assert clipped == pytest.approx(free / 4, rel=1e-4)
    with pytest.raises(ValueError, match='max_grad_norm must be >= 0'):
        small_model(max_grad_norm=-1.0)
    assert all(p['max_grad_norm'] == 1.0 for p in MMSSL_PRESETS.values())


# Checkpoints #################################################################


def _generated_stores(model, data):
    # Edges and Q_m, then the reverse edges and P_m.
    return {m: tuple(data[edge_type][key]
                     for edge_type in (model.generated_edge_type(m),
                                       model.generated_rev_edge_type(m))
                     for key in ('edge_index', 'edge_weight'))
            for m in model.modalities}


def test_state_dict_carries_the_generated_graphs():
    model, data = small_model()
    model.train()
    model.train_step(data, fixed_batch(data), model.configure_optimizer(0.1))
    assert model.generated_edges is None  # R_m = R, nothing to save
    assert 'generated_edges' not in model.state_dict()['_extra_state']
    model.before_epoch(data, epoch=1)
    state = model.state_dict()
    saved = state['_extra_state']['generated_edges']
    assert set(saved) == set(model.modalities)

    def restored(state):
        torch.manual_seed(1)  # other initial weights, all overwritten
        fresh = make_synthetic(SyntheticConfig(
            seed=1, modalities=('visual', 'acoustic'), **SMALL))
        other = build_mmssl(fresh, TINY)
        other.load_state_dict(state)
        return other, other.prepare(fresh)

    # The order of restore(): load, then prepare, which attaches the saved
    # graphs with bit-identical weights.
    other, other_data = restored(state)
    expected = _generated_stores(model, data)
    for m, tensors in _generated_stores(other, other_data).items():
        assert not torch.equal(tensors[0], data[INTERACTS].edge_index)
        for got, want in zip(tensors, expected[m]):
            assert got.dtype == want.dtype and torch.equal(got, want)
    model.eval()
    other.eval()
    for got, want in zip(other(other_data), model(data)):
        assert torch.equal(got, want)

    # A checkpoint written before the graphs were saved still loads, with
    # R_m = R as then.
    old = dict(state)
    old['_extra_state'] = {
        k: v for k, v in state['_extra_state'].items()
        if k != 'generated_edges'
    }
    other, other_data = restored(old)
    assert other.generated_edges is None
    for m in other.modalities:
        assert torch.equal(
            other_data[other.generated_edge_type(m)].edge_index,
            other_data[INTERACTS].edge_index)

    bad = dict(state)
    bad['_extra_state'] = dict(state['_extra_state'],
                               generated_edges={'visual': saved['visual']})
    with pytest.raises(ValueError, match='for modalities'):
        restored(bad)
    bad['_extra_state'] = dict(state['_extra_state'], generated_edges={
        m: e + model.num_users for m, e in saved.items()})
    with pytest.raises(ValueError, match='nodes outside'):
        restored(bad)


MMSSL_RUN = [('data.num_users', '150'), ('data.num_items', '80'),
             ('train.patience', '0')]


def _train_mmssl(out, epochs, resume=None):
    from pyg_mmrec.train.run import RunOptions, train
    # A resumed run keeps its checkpoint's model, data and settings, so
    # it names none of them.
    model = {} if resume else {'model': 'mmssl'}
    overrides = [] if resume else list(MMSSL_RUN)
    return train(RunOptions(**model, out=str(out), progress=False,
                            resume=resume,
                            overrides=[*overrides,
                                       ('train.epochs', str(epochs))]))


def test_restored_checkpoint_reproduces_the_reported_metrics(tmp_path):
    # Each epoch from the second on regenerates R_m from the model, and the
    # epoch is evaluated on them: a restored model must score on the very
    # graphs of its best epoch, not on R_m = R.
    from pyg_mmrec.train.run import evaluate_checkpoint
    report = _train_mmssl(tmp_path, epochs=3)
    assert report['best_epoch'] >= 1  # the graphs were regenerated
    again = evaluate_checkpoint(str(tmp_path / 'checkpoint.pt'))
    assert again['epoch'] == report['best_epoch']
    assert again['val'] == report['val']
    assert again['test'] == report['test']


def test_resume_gives_the_uninterrupted_run(tmp_path):
    straight = _train_mmssl(tmp_path / 'a', epochs=3)
    _train_mmssl(tmp_path / 'b', epochs=2)
    resumed = _train_mmssl(tmp_path / 'c', epochs=3,
                           resume=str(tmp_path / 'b' / 'last.pt'))
    for a, b in zip(resumed['epochs'], straight['epochs']):
        assert a['loss'] == b['loss'] and a['val'] == b['val']
    assert resumed['best_epoch'] == straight['best_epoch']
    assert resumed['test'] == straight['test']


@pytest.mark.parametrize('backend', ['scatter', 'coo', 'csr', 'edge_index'])
def test_backends_agree_with_default(backend):
    # The scatter backend hands the layer a plain edge_index, which does not
    # know the number of target nodes: the model must pass it.
    model, data = small_model()
    model.eval()
    model.regenerate_graphs(data)  # generated graphs on every backend too
    user, item = model(data)
    other, other_data = small_model(backend=backend)
    other.load_state_dict(model.state_dict())
    other.eval()
    other_data = other.prepare(other_data)
    other_user, other_item = other(other_data)
    torch.testing.assert_close(other_user, user, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(other_item, item, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('discriminator', ['projected', 'paper'])
def test_batch_of_one_user_trains_without_the_adversarial_term(
        discriminator):
    # A final batch can hold a single user; the discriminator's BatchNorm
    # cannot train on one row, so that batch skips the adversarial game.
    model, data = small_model(discriminator=discriminator, dense_rows=True)
    optimizer = model.configure_optimizer(1e-3)
    users = torch.tensor([3, 3])
    batch = (users, torch.tensor([0, 1]), torch.tensor([2, 5]))
    before = copy.deepcopy(model.discriminator.state_dict())
    parts = model.train_step(data, batch, optimizer)
    assert 'adv' not in parts and 'd_loss' not in parts
    assert math.isfinite(parts['loss'])
    for key, value in model.discriminator.state_dict().items():
        assert torch.equal(value, before[key]), key  # not stepped
    # Two users play the game as before.
    parts = model.train_step(data, (torch.tensor([3, 4]), *batch[1:]),
                             optimizer)
    assert 'adv' in parts and 'd_loss' in parts


def test_reset_parameters_forgets_the_generated_graphs():
    # After a reset, prepare() must start again from R_m = R, and the
    # discriminator from a fresh Adam.
    model, data = small_model()
    model.regenerate_graphs(data)
    model.discriminator_optimizer().state['x'] = 'trained'
    assert model.generated_edges is not None
    model.reset_parameters()
    assert model.generated_edges is None
    assert not model.discriminator_optimizer().state
    _, fresh_data = small_model()
    data = model.prepare(data)
    for m in model.modalities:
        edge_type = model.generated_edge_type(m)
        assert torch.equal(data[edge_type].edge_index,
                           fresh_data[edge_type].edge_index)


@pytest.mark.parametrize('max_grad_norm', [0.0, 0.05])
def test_generator_step_is_one_clipped_step_on_fresh_gradients(
        max_grad_norm):
    # After the discriminator's own step, the generator's parameters move
    # by -lr * g (g clipped to max_grad_norm), g this batch's gradient of
    # the generator loss: replayed on a copy with the same random state.
    model, data = small_model(max_grad_norm=max_grad_norm)
    model.train()
    batch = fixed_batch(data)
    lr = 0.1
    optimizer = torch.optim.SGD(
        [p for group in model.configure_optimizer(1e-3).param_groups
         for p in group['params']], lr=lr)
    params = optimizer.param_groups[0]['params']
    for step in range(2):
        shadow = copy.deepcopy(model)
        torch.manual_seed(10 + step)
        loss, _, _ = shadow._batch_loss(data, *batch,
                                        train_discriminator=True)
        shadow_params = [dict(shadow.named_parameters())[name]
                         for name, p in model.named_parameters()
                         if any(p is q for q in params)]
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(
            shadow_params, torch.autograd.grad(loss, shadow_params,
                                               allow_unused=True))]
        norm = torch.cat([g.view(-1) for g in grads]).norm()
        scale = (min(1.0, max_grad_norm / (float(norm) + 1e-6))
                 if max_grad_norm > 0 else 1.0)
        expected = [p.detach() - lr * scale * g
                    for p, g in zip(shadow_params, grads)]
        torch.manual_seed(10 + step)
        parts = model.train_step(data, batch, optimizer)
        assert parts['loss'] == pytest.approx(loss.item(), rel=1e-6)
        if max_grad_norm > 0:
            assert scale < 1  # the clipping is exercised
            assert parts['grad_norm'] == pytest.approx(float(norm), rel=1e-5)
        names = [name for name, p in model.named_parameters()
                 if any(p is q for q in params)]
        for name, e in zip(names, expected):
            torch.testing.assert_close(dict(model.named_parameters())[name]
                                       .detach(), e, msg=name)


@pytest.mark.parametrize('discriminator', ['projected', 'paper'])
def test_checkpoints_from_before_the_pyg_mlp_still_load(discriminator):
    # Until the discriminators used PyG's MLP, their output layer was
    # `mlp.out` and their batch norms had no `.module`.
    from pyg_mmrec.train.checkpoint import load_model_state
    model, _ = small_model(discriminator=discriminator)
    old = {}
    for key, value in model.state_dict().items():
        key = key.replace('discriminator.mlp.lins.2.',
                          'discriminator.mlp.out.')
        key = re.sub(r'^(discriminator\.mlp\.norms\.\d+)\.module\.', r'\1.',
                     key)
        old[key] = value
    assert 'discriminator.mlp.out.weight' in old
    assert 'discriminator.mlp.norms.0.running_mean' in old
    fresh, _ = small_model(discriminator=discriminator)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    load_model_state(fresh, {'model': 'mmssl', 'state_dict': old}, 'old.pt')
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(fresh.state_dict()[key], value), key
