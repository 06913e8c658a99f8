import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.models.lightgcn import BPRLoss as PyGBPRLoss

from pyg_mmrec.nn.losses import BPRLoss, bpr_loss, grace_info_nce, info_nce


def test_bpr_loss_matches_formula_and_pyg():
    pos, neg = torch.randn(6), torch.randn(6)
    ref = -sum(math.log(1 / (1 + math.exp(-(p - n))))
               for p, n in zip(pos.tolist(), neg.tolist())) / 6
    assert abs(bpr_loss(pos, neg).item() - ref) < 1e-6
    assert torch.allclose(bpr_loss(pos, neg), PyGBPRLoss()(pos, neg))
    assert BPRLoss is PyGBPRLoss
    with pytest.raises(ValueError, match=r'same shape, got \(6,\) and \(5,'):
        bpr_loss(pos, neg[:5])


def explicit_info_nce(z1, z2, index, tau):
    terms = []
    for n in index.tolist():
        num = torch.exp(z1[n] @ z2[n] / tau)
        den = sum(torch.exp(z1[n] @ z2[j] / tau) for j in range(z2.size(0)))
        terms.append(-torch.log(num / den))
    return torch.stack(terms).mean()


def test_info_nce_matches_formula_for_every_chunk_size():
    torch.manual_seed(0)
    z1 = F.normalize(torch.randn(9, 4, dtype=torch.float64), dim=1)
    z2 = F.normalize(torch.randn(9, 4, dtype=torch.float64), dim=1)
    index = torch.tensor([0, 3, 3, 8])
    ref = explicit_info_nce(z1, z2, index, 0.5)
    grads = []
    for chunk in (None, 1, 2, 4, 9, 100):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss = info_nce(a, b, index, 0.5, chunk_size=chunk)
        assert torch.allclose(loss, ref, atol=1e-12)
        loss.backward()
        grads.append((a.grad, b.grad))
    for ga, gb in grads[1:]:
        assert torch.allclose(ga, grads[0][0], atol=1e-12)
        assert torch.allclose(gb, grads[0][1], atol=1e-12)
    # Also an exact gradient check of the custom backward.
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, y: info_nce(x, y, index, 0.3, chunk_size=2), (a, b))


def test_info_nce_normalize_flag_and_bad_input():
    z1, z2 = torch.randn(5, 3), torch.randn(7, 3)
    index = torch.tensor([1, 2])
    ref = info_nce(F.normalize(z1, dim=1), F.normalize(z2, dim=1), index)
    assert torch.allclose(info_nce(z1, z2, index, normalize=True), ref)
    with pytest.raises(ValueError, match='temperature must be > 0, got 0'):
        info_nce(z1, z2, index, 0)
    with pytest.raises(ValueError, match='chunk_size must be >= 1, got 0'):
        info_nce(z1, z2, index, chunk_size=0)
    with pytest.raises(ValueError, match='same number of columns, got 3 and'):
        info_nce(z1, torch.randn(7, 2), index)
    # Id -1 silently took the last node, an empty index gave NaN.
    for bad, message in [
            (torch.tensor([1, -1]), r"node id -1, outside the rows 0\.\.4 "
             r"of both views"),
            (torch.tensor([5]), r"node id 5, outside the rows 0\.\.4"),
            (torch.tensor([], dtype=torch.long), "'index' is empty"),
            (torch.tensor([1.0]), r"'index' must be a 1-D integer tensor "
             r"of node ids \(got 1-D torch.float32\)")]:
        with pytest.raises(ValueError, match=message):
            info_nce(z1, z2, bad)


def explicit_grace(z1, z2, tau, normalize=True):
    u, v = (F.normalize(z1, dim=1), F.normalize(z2, dim=1)) if normalize \
        else (z1, z2)

    def side(a, b):
        out = []
        for n in range(a.size(0)):
            pos = torch.exp(a[n] @ b[n] / tau)
            den = pos + sum(torch.exp(a[n] @ b[k] / tau)
                            for k in range(a.size(0)) if k != n)
            den = den + sum(torch.exp(a[n] @ a[k] / tau)
                            for k in range(a.size(0)) if k != n)
            out.append(-torch.log(pos / den))
        return torch.stack(out)

    return side(u, v), side(v, u)


def test_grace_info_nce_matches_formula():
    torch.manual_seed(1)
    z1 = torch.randn(6, 4, dtype=torch.float64)
    z2 = torch.randn(6, 4, dtype=torch.float64)
    l12, l21 = explicit_grace(z1, z2, 0.5)
    assert torch.allclose(grace_info_nce(z1, z2), 0.5 * (l12 + l21).mean())
    assert torch.allclose(grace_info_nce(z1, z2, symmetric=False),
                          l12.mean())
    # Raw dot products (inputs of norm ~2, far from normalised).
    raw12, raw21 = explicit_grace(z1, z2, 0.5, normalize=False)
    assert torch.allclose(grace_info_nce(z1, z2, normalize=False),
                          0.5 * (raw12 + raw21).mean())
    with pytest.raises(ValueError, match=r'same shape, got \(6, 4\) and'):
        grace_info_nce(z1, z2[:5])
    with pytest.raises(ValueError, match='temperature must be > 0, got -1'):
        grace_info_nce(z1, z2, -1)


@pytest.mark.parametrize('chunk_size', [3, 7, 1000])
@pytest.mark.parametrize('temperature', [0.1, 0.5])
def test_bounded_info_nce_matches_formula_with_repeated_ids(
        chunk_size, temperature):
    # normalize=True takes the bounded kernel (no max-subtraction, repeated
    # ids computed once); it must equal the formula, gradients included.
    torch.manual_seed(0)
    z1 = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([3, 0, 3, 7, 11, 3, 0])
    out = info_nce(z1, z2, index, temperature, chunk_size, normalize=True)
    a, b = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    logits = a[index] @ b.t() / temperature
    expected = -(logits.gather(1, index.view(-1, 1)).view(-1) -
                 torch.logsumexp(logits, dim=1)).mean()
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out, (z1, z2))
    expected_grads = torch.autograd.grad(expected, (z1, z2))
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want)


def test_float16_info_nce_over_many_nodes_stays_finite():
    # exp(1/tau) summed over 20,000 nodes passes float16's 65504: the
    # bounded kernel returned inf, the max-subtracting one does not.
    torch.manual_seed(0)
    # Similar rows: each logit near 1/tau = 2, so the sum nears 7.4 * N.
    z1 = torch.ones(20_000, 8) + 0.3 * torch.randn(20_000, 8)
    z2 = torch.ones(20_000, 8) + 0.3 * torch.randn(20_000, 8)
    index = torch.arange(0, 20_000, 97)
    want = info_nce(z1, z2, index, 0.5, 4096, normalize=True)
    got = info_nce(z1.half(), z2.half(), index, 0.5, 4096, normalize=True)
    assert torch.isfinite(got)
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


def test_small_temperature_info_nce_stays_finite_in_float32():
    # At tau = 0.01 a single exp(1/tau) = exp(100) = 2.7e43 overflows
    # float32 (3.4e38): the bounded kernel, which does not subtract the
    # maximum, would return inf. It serves only tau >= 0.025 (exp(40) =
    # 2.4e17 per term, headroom for the sum over all nodes).
    torch.manual_seed(0)
    z1 = torch.ones(50, 4) + 0.01 * torch.randn(50, 4)
    z2 = torch.ones(50, 4) + 0.01 * torch.randn(50, 4)
    index = torch.tensor([0, 7, 7, 49])
    got = info_nce(z1, z2, index, 0.01, chunk_size=16, normalize=True)
    a, b = F.normalize(z1.double(), dim=-1), F.normalize(z2.double(), dim=-1)
    logits = a[index] @ b.t() / 0.01
    expected = -(logits.gather(1, index.view(-1, 1)).view(-1) -
                 torch.logsumexp(logits, dim=1)).mean()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
