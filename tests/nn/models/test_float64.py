r"""Models made ``.double()`` (e.g. for gradient checks) train and predict
in float64: the graphs' weights (normalised in float64), interaction rows
and diffusion follow the parameters' dtype."""
import copy

import pytest
import torch

from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.nn.models import (
    DiffMMConfig,
    LightGCNRecommender,
    MMSSLConfig,
    build_diffmm,
    build_mmssl,
)
from pyg_mmrec.transforms import DiffusionGraph

U, I = 40, 30
BUILDERS = {
    'lightgcn': lambda d: LightGCNRecommender(U, I),
    'diffmm': lambda d: build_diffmm(d, DiffMMConfig(embedding_dim=8,
                                                     denoiser_hidden=16)),
    'mmssl': lambda d: build_mmssl(d, MMSSLConfig(embedding_dim=8, heads=1,
                                                  feature_dropout=0.0)),
}


def small_data():
    return make_synthetic(SyntheticConfig(num_users=U, num_items=I,
                                          feature_dim=6))


@pytest.mark.parametrize('name', list(BUILDERS))
def test_double_model_matches_the_float_model(name):
    torch.manual_seed(0)
    model = BUILDERS[name](small_data()).eval()
    double = copy.deepcopy(model).double()
    user, item = model(model.prepare(small_data()))
    data = double.prepare(small_data())
    user64, item64 = double(data)
    assert user64.dtype == item64.dtype == torch.float64
    torch.testing.assert_close(user64, user.double(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(item64, item.double(), rtol=1e-4, atol=1e-5)

    # A training epoch keeps every parameter in float64.
    double.train()
    double.before_epoch(data, epoch=1)
    batch = (torch.arange(4), torch.arange(4), torch.arange(4, 8))
    optimizer = double.configure_optimizer(1e-3)
    parts = double.train_step(data, batch, optimizer)
    assert torch.isfinite(torch.tensor(parts['loss']))
    assert all(p.dtype == torch.float64 for p in double.parameters())


def test_double_denoiser_generates_the_literal_top_k():
    # float64 interaction rows through the folded, screened fast path give
    # the top-k of the literal float64 reverse process.
    torch.manual_seed(0)
    data = small_data()
    model = build_diffmm(data, DiffMMConfig(embedding_dim=8,
                                            denoiser_hidden=16)).double()
    data = model.prepare(data)
    denoiser = model.denoisers['visual'].eval()
    transform = DiffusionGraph(model.diffusion, {'visual': denoiser}, k=3)
    out = transform(data)
    edges = out[transform.edge_type('visual')].edge_index
    rows = torch.zeros(U, I, dtype=torch.float64)
    train = data['user', 'interacts', 'item'].edge_index
    rows[train[0], train[1]] = 1.0
    literal = model.diffusion.reverse(denoiser, rows).topk(3, dim=1).indices
    assert torch.equal(edges[1].view(U, 3), literal)


def test_double_models_normalise_their_graphs_in_float64():
    # The weights used to be normalised in float32 and then cast: off by
    # about 1e-8 from the float64 maths, where 1e-16 is expected.
    torch.manual_seed(0)
    data = small_data()
    train = data['user', 'interacts', 'item'].edge_index
    R = torch.zeros(U, I, dtype=torch.float64)
    R[train[0], train[1]] = 1.0
    deg_user, deg_item = R.sum(1), R.sum(0)
    u, i = train

    lightgcn = BUILDERS['lightgcn'](data).double()
    adj = lightgcn.prepare(small_data())['user', 'interacts',
                                         'item'].lightgcn_adj_t
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[:U, U:] = R / (deg_user.view(-1, 1) * deg_item.view(1, -1)).sqrt()
    A[U:, :U] = A[:U, U:].t()
    A = torch.nan_to_num(A)
    torch.testing.assert_close(adj.to_dense(), A, rtol=0, atol=1e-15)

    diffmm = BUILDERS['diffmm'](data).double()
    store = diffmm.prepare(small_data())['user', 'interacts', 'item']
    expected = 1 / ((deg_user[u] + 1) * (deg_item[i] + 1)).sqrt()
    weight = store.adj_edge_weight
    assert weight.dtype == torch.float64
    torch.testing.assert_close(weight[:u.numel()], expected, rtol=0,
                               atol=1e-15)
    generated = diffmm.prepare(small_data())['user', 'diffusion_visual',
                                             'item']
    assert generated.adj_edge_weight.dtype == torch.float64
    gen_user, gen_item = generated.edge_index
    gen_deg_user = torch.bincount(gen_user, minlength=U).double() + 1
    gen_deg_item = torch.bincount(gen_item, minlength=I).double() + 1
    torch.testing.assert_close(
        generated.edge_weight,
        1 / (gen_deg_user[gen_user] * gen_deg_item[gen_item]).sqrt(),
        rtol=0, atol=1e-15)

    mmssl = BUILDERS['mmssl'](data).double()
    prepared = mmssl.prepare(small_data())
    q = prepared['user', 'interacts', 'item'].edge_weight
    p = prepared['item', 'rev_interacts', 'user'].edge_weight
    torch.testing.assert_close(q, deg_item[i].rsqrt(), rtol=0, atol=1e-15)
    torch.testing.assert_close(p, deg_user[u].rsqrt(), rtol=0, atol=1e-15)


def owned_optimizers(model):
    return ([model.discriminator_optimizer()] if hasattr(
        model, 'discriminator_optimizer') else
        list(model.denoiser_optimizers().values()))


@pytest.mark.parametrize('name', ['diffmm', 'mmssl'])
def test_owned_optimizer_state_follows_the_model(name):
    # The optimisers a model steps itself (DiffMM's denoisers', MMSSL's
    # discriminator's) are no submodules: their state used to stay float32
    # (and on its old device) after .double() / .to(), so the next step
    # failed in Adam.
    torch.manual_seed(0)
    model = BUILDERS[name](small_data()).train()
    data = model.prepare(small_data())
    batch = (torch.arange(4), torch.arange(4), torch.arange(4, 8))
    model.before_epoch(data, epoch=0)
    model.train_step(data, batch, model.configure_optimizer(1e-3))
    model.double()
    for optimizer in owned_optimizers(model):
        for param, state in optimizer.state.items():
            assert param.dtype == state['exp_avg'].dtype == torch.float64
            assert state['exp_avg_sq'].dtype == torch.float64
            assert state['step'].dtype == torch.float32  # torch's policy
    data = model.prepare(small_data())
    model.before_epoch(data, epoch=1)
    parts = model.train_step(data, batch, model.configure_optimizer(1e-3))
    assert torch.isfinite(torch.tensor(parts['loss']))

    # A device move takes the state along ('meta' stands in for a GPU).
    model.to('meta')
    for optimizer in owned_optimizers(model):
        assert optimizer.state
        for state in optimizer.state.values():
            assert state['exp_avg'].device.type == 'meta'
            assert state['exp_avg_sq'].device.type == 'meta'
