import copy
import re

import pytest
import torch

from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.nn.models import (
    DiffMMConfig,
    LightGCNConfig,
    LightGCNRecommender,
    MostPopular,
    build_diffmm,
    build_mmssl,
)

BUILDERS = {
    'lightgcn': lambda d: LightGCNRecommender(30, 20, LightGCNConfig()),
    'most_popular': lambda d: MostPopular(30, 20),
    'diffmm': lambda d: build_diffmm(d, DiffMMConfig()),
    'mmssl': build_mmssl,
}


@pytest.mark.parametrize('model', list(BUILDERS), ids=list(BUILDERS))
@pytest.mark.parametrize('users,items', [(31, 20), (30, 19)])
def test_prepare_refuses_data_of_another_size(model, users, items):
    # A model trained silently on a data set of another size failed only
    # later (in recommend), or with an index error deep in a layer.
    built_for = make_synthetic(SyntheticConfig(num_users=30, num_items=20))
    other = make_synthetic(SyntheticConfig(num_users=users, num_items=items))
    recommender = BUILDERS[model](built_for)
    recommender.prepare(built_for.clone())
    with pytest.raises(ValueError, match=re.escape(
            f'the data has {users} users and {items} items, the model was '
            f'built for 30 and 20')):
        recommender.prepare(other)


@pytest.mark.parametrize('model', list(BUILDERS), ids=list(BUILDERS))
def test_prepare_refuses_bad_training_edges(model):
    data = make_synthetic(SyntheticConfig(num_users=30, num_items=20))
    recommender = BUILDERS[model](data)
    store = data['user', 'interacts', 'item']
    edge_index = store.edge_index
    # MostPopular sized its scores by the largest item id (21 rows here).
    store.edge_index = torch.cat([edge_index, torch.tensor([[0], [20]])], 1)
    with pytest.raises(ValueError, match="'edge_index' has item id 20 but "
                       "there are only 20 items"):
        recommender.prepare(data.clone())
    store.edge_index = torch.cat([edge_index, edge_index[:, :1]], 1)
    with pytest.raises(ValueError, match="'edge_index' repeats 1 user-item "
                       "pair"):
        recommender.prepare(data.clone())
    # LightGCN and MostPopular raised a bare KeyError('edge_index').
    del store.edge_index
    with pytest.raises(ValueError, match=re.escape(
            "data has no 'edge_index' for edge type ('user', 'interacts', "
            "'item')")):
        recommender.prepare(data)


def test_recommend_scores_in_eval_mode_and_restores_the_modes():
    # MMSSL drops item features in training mode: two recommend calls on a
    # model left in training mode used to return different lists.
    data = make_synthetic(SyntheticConfig(num_users=30, num_items=20))
    torch.manual_seed(0)
    model = build_mmssl(data)
    data = model.prepare(data)
    model.train()
    first = model.discriminator
    first.eval()  # a submodule in another mode than the model
    users = torch.arange(30)
    a = model.recommend(data, users, k=5)
    b = model.recommend(data, users, k=5)
    assert torch.equal(a, b)
    model.eval()
    assert torch.equal(model.recommend(data, users, k=5), a)
    model.train()
    first.eval()
    model.recommend(data, users, k=5)
    assert model.training and not first.training


@pytest.mark.parametrize('builder', [
    lambda: LightGCNRecommender(30, 20),
    lambda: build_mmssl(make_synthetic(
        SyntheticConfig(num_users=30, num_items=20))),
    lambda: build_diffmm(make_synthetic(
        SyntheticConfig(num_users=30, num_items=20))),
])
def test_default_configs_are_not_shared(builder):
    a, b = builder(), builder()
    assert a.config == b.config and a.config is not b.config


@pytest.mark.parametrize('build', [
    lambda d: LightGCNRecommender(30, 20),
    lambda d: build_diffmm(d, DiffMMConfig()),
], ids=['lightgcn', 'diffmm'])
def test_train_step_is_one_optimizer_step_on_fresh_gradients(build):
    # Each step's update is -lr * (this batch's gradient at the current
    # parameters): gradients of earlier steps must not pile up.
    torch.manual_seed(0)
    data = make_synthetic(SyntheticConfig(num_users=30, num_items=20))
    model = build(data)
    data = model.prepare(data)
    batch = (torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]),
             torch.tensor([6, 7, 8]))
    lr = 0.5
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    for _ in range(2):
        shadow = copy.deepcopy(model)
        expected_loss, _ = shadow.loss(data, *batch)
        shadow_params = [p for p in shadow.parameters() if p.requires_grad]
        grads = torch.autograd.grad(expected_loss, shadow_params,
                                    allow_unused=True)
        expected = [p.detach() - lr * (0 if g is None else g)
                    for p, g in zip(shadow_params, grads)]
        parts = model.train_step(data, batch, optimizer)
        assert parts['loss'] == pytest.approx(expected_loss.item(), rel=1e-6)
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e)
