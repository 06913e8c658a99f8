import torch
import torch.nn.functional as F

from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.nn.models import LightGCNConfig, LightGCNRecommender

U, I = 30, 20


def small_data():
    return make_synthetic(SyntheticConfig(num_users=U, num_items=I))


def dense_propagation(data, emb, num_layers):
    r"""LightGCN: the mean of :math:`\hat{A}^k E` for k = 0..L, with
    :math:`\hat{A} = D^{-1/2} [[0, R], [R^T, 0]] D^{-1/2}` (no self-loops)."""
    R = torch.zeros(U, I)
    train = data['user', 'interacts', 'item'].edge_index
    R[train[0], train[1]] = 1.0
    A = torch.zeros(U + I, U + I)
    A[:U, U:], A[U:, :U] = R, R.t()
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    A_hat = d.view(-1, 1) * A * d.view(1, -1)
    layers = [emb]
    for _ in range(num_layers):
        layers.append(A_hat @ layers[-1])
    return torch.stack(layers).mean(0)


def test_lightgcn_forward_and_loss_match_the_dense_formulas():
    torch.manual_seed(0)
    data = small_data()
    model = LightGCNRecommender(U, I, LightGCNConfig(embedding_dim=8,
                                                     num_layers=2,
                                                     reg_weight=0.1))
    data = model.prepare(data)
    emb = model.lightgcn.embedding.weight
    expected = dense_propagation(data, emb, 2)
    user, item = model(data)
    torch.testing.assert_close(user, expected[:U])
    torch.testing.assert_close(item, expected[U:])

    users = torch.tensor([0, 1, 2, 3])
    pos, neg = torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 1, 0])
    loss, _ = model.loss(data, users, pos, neg)
    u, p, n = expected[users], expected[U + pos], expected[U + neg]
    bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
    ego = emb[torch.cat([users, U + pos, U + neg])]
    torch.testing.assert_close(loss, bpr + 0.1 * ego.pow(2).sum() / 4)
