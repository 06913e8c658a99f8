import math

import pytest
import torch

from pyg_mmrec.nn.denoiser import Denoiser, timestep_embedding
from pyg_mmrec.nn.diffusion import GaussianDiffusion


def hand_schedule(T=5, s=0.1, vmin=1e-4, vmax=0.02, beta0=1e-4):
    # MODELS.md "Schedule", written out in Python floats (float64).
    var = [s * vmin + (s * vmax - s * vmin) * t / (T - 1) for t in range(T)]
    abar = [1 - v for v in var]
    betas = [1 - abar[0]] + [
        min(1 - abar[t] / abar[t - 1], 0.999) for t in range(1, T)
    ]
    betas[0] = beta0
    alphas = [1 - b for b in betas]
    cum, acc = [], 1.0
    for a in alphas:
        acc *= a
        cum.append(acc)
    prev = [1.0] + cum[:-1]
    c1 = [betas[t] * math.sqrt(prev[t]) / (1 - cum[t]) for t in range(T)]
    c2 = [(1 - prev[t]) * math.sqrt(alphas[t]) / (1 - cum[t])
          for t in range(T)]
    snr = [c / (1 - c) for c in cum]
    w = [1.0] + [snr[t - 1] - snr[t] for t in range(1, T)]
    return betas, cum, c1, c2, w


def test_schedule_matches_hand_formula():
    diff = GaussianDiffusion(num_steps=5)
    betas, cum, c1, c2, w = hand_schedule()
    assert diff.betas.dtype == torch.float64
    for ours, ref in [(diff.betas, betas), (diff.alphas_cumprod, cum),
                      (diff.posterior_coef1, c1), (diff.posterior_coef2, c2),
                      (diff.loss_weight(torch.arange(5)), w)]:
        assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64),
                              rtol=1e-12, atol=0)
    # The last reverse step returns the prediction: c1_0 = 1, c2_0 = 0.
    assert diff.posterior_coef2[0] == 0
    assert abs(float(diff.posterior_coef1[0]) - 1) < 1e-9


def test_schedule_stays_float64_under_float():
    diff = GaussianDiffusion().float()
    assert diff.alphas_cumprod.dtype == torch.float64
    assert diff.state_dict() == {}
    assert repr(diff) == ('GaussianDiffusion(num_steps=5, noise_scale=0.1, '
                          'noise_min=0.0001, noise_max=0.02, '
                          'first_beta=0.0001)')


def test_q_sample_and_posterior_mean():
    diff = GaussianDiffusion()
    _, cum, c1, c2, _ = hand_schedule()
    x0, noise = torch.rand(3, 4), torch.randn(3, 4)
    t = torch.tensor([0, 2, 4])
    out = diff.q_sample(x0, t, noise)
    for b in range(3):
        ref = math.sqrt(cum[t[b]]) * x0[b] + math.sqrt(1 - cum[t[b]]) * \
            noise[b]
        assert torch.allclose(out[b], ref, atol=1e-6)
    x0_hat, xt = torch.rand(3, 4), torch.rand(3, 4)
    out = diff.posterior_mean(x0_hat, xt, t)
    for b in range(3):
        ref = c1[t[b]] * x0_hat[b] + c2[t[b]] * xt[b]
        assert torch.allclose(out[b], ref, atol=1e-6)


def test_training_loss_matches_formula_and_is_detached():
    torch.manual_seed(0)
    diff = GaussianDiffusion()
    _, cum, _, _, w = hand_schedule()
    num_items, d = 6, 3
    den = Denoiser(num_items, hidden_channels=8).eval()
    x0 = (torch.rand(4, num_items) < 0.4).float()
    t, noise = torch.tensor([0, 1, 3, 4]), torch.randn(4, num_items)
    item_emb = torch.randn(num_items, d, requires_grad=True)
    mod_emb = torch.randn(num_items, d, requires_grad=True)
    loss = diff.training_loss(den, x0, t, noise, item_emb, mod_emb,
                              lambda_e=0.1, reduction='none')
    for b in range(4):
        xt = math.sqrt(cum[t[b]]) * x0[b] + math.sqrt(1 - cum[t[b]]) * \
            noise[b]
        x0_hat = den(xt.view(1, -1), t[b:b + 1])[0]
        ref = w[t[b]] * ((x0[b] - x0_hat)**2).mean()
        ref = ref + 0.1 * ((x0_hat @ mod_emb - x0[b] @ item_emb)**2).mean()
        assert torch.allclose(loss[b], ref, rtol=1e-5)
    loss.mean().backward()
    assert item_emb.grad is None and mod_emb.grad is None
    assert den.lin1.weight.grad is not None
    mean = diff.training_loss(den, x0, t, noise, item_emb, mod_emb, 0.1)
    assert torch.allclose(mean, loss.mean())


def test_training_loss_seeded_and_bad_input():
    diff = GaussianDiffusion()
    den = Denoiser(5, hidden_channels=4)
    x0 = torch.rand(8, 5)
    a = diff.training_loss(den.eval(), x0,
                           generator=torch.Generator().manual_seed(3))
    b = diff.training_loss(den, x0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # What the generator draws: t ~ U{0, .., T-1}, then standard normal
    # noise, in this order.
    gen = torch.Generator().manual_seed(3)
    t = torch.randint(0, diff.num_steps, (8, ), generator=gen)
    noise = torch.randn(8, 5, generator=gen)
    assert torch.equal(a, diff.training_loss(den, x0, t, noise))
    with pytest.raises(ValueError, match="lambda_e != 0 needs both"):
        diff.training_loss(den, x0, lambda_e=0.1)
    with pytest.raises(ValueError, match="reduction must be 'mean' or"):
        diff.training_loss(den, x0, reduction='sum')
    with pytest.raises(ValueError, match='num_steps must be >= 1, got 0'):
        GaussianDiffusion(num_steps=0)


def test_denoiser_layers_and_time_embedding():
    den = Denoiser(7, hidden_channels=5)
    assert den.lin1.in_features == 7 + 10 and den.lin1.out_features == 5
    assert den.lin2.out_features == 7 and den.time_lin.in_features == 10
    t = torch.tensor([0, 3])
    emb = timestep_embedding(t, 10)
    freqs = [10000**(-k / 5) for k in range(5)]
    ref = [[math.cos(3 * f) for f in freqs] +
           [math.sin(3 * f) for f in freqs]]
    assert torch.allclose(emb[1], torch.tensor(ref[0]), atol=1e-6)
    # Output = lin2(tanh(lin1([x || time_lin(emb)]))) with dropout off.
    den.eval()
    x = torch.rand(2, 7)
    ref = den.lin2(torch.tanh(den.lin1(torch.cat(
        [x, den.time_lin(emb)], dim=1))))
    assert torch.allclose(den(x, t), ref, atol=1e-6)
    # Dropout 0.5 acts on the input row in training mode only.
    den.train()
    assert not torch.allclose(den(x, t), ref)
    assert 'Denoiser(7, hidden_channels=5' in repr(den)


def test_denoiser_and_training_loss_in_float64():
    # The time embedding is computed in float32; it must follow the
    # denoiser's dtype rather than break its first layer.
    diff = GaussianDiffusion()
    den = Denoiser(7, hidden_channels=5).double().eval()
    x, t = torch.rand(3, 7, dtype=torch.float64), torch.tensor([0, 2, 4])
    out = den(x, t)
    assert out.dtype == torch.float64
    emb = den.time_lin(timestep_embedding(t, 10).double())
    ref = den.lin2(torch.tanh(den.lin1(torch.cat([x, emb], dim=1))))
    assert torch.allclose(out, ref)
    loss = diff.training_loss(den, x, generator=torch.Generator()
                              .manual_seed(0))
    assert loss.dtype == torch.float64 and torch.isfinite(loss)


@pytest.mark.parametrize('p', [0.5, 0.2])
def test_denoiser_input_dropout(p):
    den = Denoiser(7, hidden_channels=5, dropout=p)
    x = torch.rand(400, 1000) + 0.5
    torch.manual_seed(0)
    out = den._dropout(x)
    dropped = out == 0
    # Each entry is dropped with probability p; survivors are x / (1 - p).
    assert abs(dropped.float().mean().item() - p) < 0.01
    assert torch.allclose(out[~dropped], x[~dropped] / (1 - p))
    # It is the dropout of the forward pass: fixing the seed fixes both.
    t = torch.zeros(3, dtype=torch.long)
    rows = x[:3, :7]
    torch.manual_seed(1)
    mask = den._dropout(rows) != 0
    emb = den.time_embedding(t)
    ref = den.lin2(torch.tanh(den.lin1(torch.cat(
        [rows * mask / (1 - p), emb], dim=1))))
    torch.manual_seed(1)
    assert torch.allclose(den(rows, t), ref, atol=1e-6)
    den.eval()
    assert den._dropout(x) is x


def test_denoiser_init_scale():
    torch.manual_seed(0)
    den = Denoiser(400, hidden_channels=300)
    std = math.sqrt(2 / (410 + 300))
    assert abs(den.lin1.weight.std().item() - std) < 0.05 * std
    assert abs(den.lin2.bias.std().item() - 0.001) < 0.0003


def literal_reverse(diff, den, x0):
    _, _, c1, c2, _ = hand_schedule()
    x = x0
    for t in reversed(range(5)):
        x0_hat = den(x, torch.full((x.size(0), ), t))
        x = c1[t] * x0_hat + c2[t] * x
    return x


@pytest.mark.parametrize('screen', [None, torch.bfloat16])
def test_reverse_fast_path_equals_literal(screen):
    torch.manual_seed(1)
    num_items = 40
    diff = GaussianDiffusion()
    den = Denoiser(num_items, hidden_channels=16).eval()
    x0 = (torch.rand(12, num_items) < 0.2).float()
    ref = literal_reverse(diff, den, x0)
    assert torch.allclose(diff.reverse(den, x0), ref, atol=1e-5)
    fold = diff.fold(den, screen)
    h = den.reverse_hidden(x0, fold)
    assert torch.allclose(den.decode(h), ref, atol=1e-5)
    assert torch.allclose(den.decode(den.reverse_hidden(
        x0.to_sparse_csr(), fold)), ref, atol=1e-5)
    for k in (1, 3):
        top = diff.reverse_topk(den, x0, k, fold=fold)
        assert torch.equal(top, ref.topk(k, dim=1).indices)
    # A plain callable takes the step-by-step path.
    top = diff.reverse_topk(lambda x, t: den(x, t), x0, 2)
    assert torch.equal(top, ref.topk(2, dim=1).indices)
    with pytest.raises(ValueError, match=r'k must be in \[1, 40\], got 0'):
        diff.reverse_topk(den, x0, 0)


def test_screened_decode_certifies_or_falls_back():
    torch.manual_seed(2)
    den = Denoiser(60, hidden_channels=32).eval()
    diff = GaussianDiffusion()
    fold = diff.fold(den, torch.bfloat16)
    # Ties up to bf16 precision force the second level and the fallback.
    h = torch.tanh(torch.randn(64, 32)) * 1e-3
    ref = den.decode(h).topk(2, dim=1).indices
    for max_candidates in (0, 60):
        out = den.decode_topk(h, 2, fold, margin=1,
                              max_candidates=max_candidates)
        assert torch.equal(out, ref)


@pytest.mark.parametrize('precision', ['high', 'medium'])
def test_screened_decode_scores_in_full_float32(monkeypatch, precision):
    # A process-wide 'high'/'medium' precision runs float32 products in TF32
    # (CUDA) or bfloat16 (oneDNN CPUs); the certificate needs exact scores.
    from pyg_mmrec.nn import _screened_topk
    seen = []

    def rescore(*args, **kwargs):
        seen.append(_float32_precision())
        return rescore_exactly(*args, **kwargs)

    rescore_exactly = _screened_topk._rescore
    monkeypatch.setattr(_screened_topk, '_rescore', rescore)
    torch.manual_seed(2)
    den = Denoiser(60, hidden_channels=32).eval()
    fold = GaussianDiffusion().fold(den, torch.bfloat16)
    h = torch.tanh(torch.randn(64, 32)) * 1e-3
    ref = den.decode(h).topk(2, dim=1).indices
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(precision)
        out = den.decode_topk(h, 2, fold, margin=1, max_candidates=0)
        assert torch.get_float32_matmul_precision() == precision
    finally:
        torch.set_float32_matmul_precision(before)
    assert seen == [_IEEE]
    assert torch.equal(out, ref)


def _float32_precision():
    # Newer torch: per-backend settings (the legacy getter may raise).
    from pyg_mmrec.nn._screened_topk import _precision_backends
    backends = _precision_backends()
    if backends:
        return tuple(b.fp32_precision for b in backends)
    return torch.get_float32_matmul_precision()


def _ieee():
    from pyg_mmrec.nn._screened_topk import _precision_backends
    backends = _precision_backends()
    return ('ieee', ) * len(backends) if backends else 'highest'


_IEEE = _ieee()


def test_screened_decode_under_the_per_backend_precision_api():
    # torch.backends.*.matmul.fp32_precision = 'tf32' / 'bf16' (the API
    # newer torch documents) made get_float32_matmul_precision raise, and
    # with it every screened decode.
    from pyg_mmrec.nn._screened_topk import _precision_backends
    backends = _precision_backends()
    if not backends:
        pytest.skip('this torch has no per-backend fp32 precision')
    saved = [b.fp32_precision for b in backends]
    torch.manual_seed(2)
    den = Denoiser(60, hidden_channels=32).eval()
    fold = GaussianDiffusion().fold(den, torch.bfloat16)
    h = torch.tanh(torch.randn(64, 32)) * 1e-3
    ref = den.decode(h).topk(2, dim=1).indices
    low = ['tf32' if b is torch.backends.cuda.matmul else 'bf16'
           for b in backends]
    try:
        for backend, value in zip(backends, low):
            backend.fp32_precision = value
        out = den.decode_topk(h, 2, fold, margin=1, max_candidates=0)
        assert [b.fp32_precision for b in backends] == low
    finally:
        for backend, value in zip(backends, saved):
            backend.fp32_precision = value
    assert torch.equal(out, ref)


def test_low_precision_hidden_is_close():
    torch.manual_seed(3)
    den = Denoiser(50, hidden_channels=16).eval()
    diff = GaussianDiffusion()
    x0 = (torch.rand(8, 50) < 0.2).float()
    exact = den.reverse_hidden(x0, diff.fold(den))
    low = den.reverse_hidden(x0, diff.fold(den, hidden_dtype=torch.bfloat16))
    # bf16 rounding moves the hidden state by ~3e-3 here; a slip in the
    # folded schedule (e.g. twice the noise scale) moves it by ~5e-2.
    error = (exact - low).abs().max()
    assert 0 < error < 1e-2


@pytest.mark.parametrize('scale', [1e-3, 1.0, 30.0])
def test_screen_bound_is_rigorous_and_tight(scale):
    from pyg_mmrec.nn._screened_topk import _screen_scores, _unround
    torch.manual_seed(4)
    den = Denoiser(300, hidden_channels=64).eval()
    with torch.no_grad():
        den.lin2.bias.normal_(0.0, 0.05)
    fold = GaussianDiffusion().fold(den, torch.bfloat16)
    bound = fold.bound
    h = torch.tanh(torch.randn(128, 64) * 2) * scale
    approx, dh_norm, h_norm = _screen_scores(h, fold.screen)
    assert approx.dtype == torch.bfloat16
    exact = (h.double() @ den.lin2.weight.double().t() +
             den.lin2.bias.double())
    eps = (torch.outer(dh_norm, bound.w_norm) +
           torch.outer(h_norm, bound.dw_norm) + bound.db).double()
    upper = _unround(approx, bound.unit).double() + eps
    assert bool((exact <= upper).all())
    lower = _unround(approx, -bound.unit).double() - eps
    assert bool((exact >= lower).all())
    # Far tighter than the worst case 4u (|h| |w| + |b|) of bf16 inputs.
    worst = 4 * bound.unit * (torch.outer(h.norm(dim=1), bound.w_norm) +
                              den.lin2.bias.abs())
    assert bool((eps < 0.5 * worst.double()).all())


def test_float32_accumulation_restores_both_cublas_flags():
    # The flags are process-wide Python settings (no GPU needed to set
    # them). Restoring a bare bool used to reset the split-K half to True.
    from pyg_mmrec.nn._screened_topk import _float32_accumulation
    flags = torch.backends.cuda.matmul
    if not hasattr(torch._C,
                   '_get_cublas_allow_bf16_reduced_precision_reduction'):
        pytest.skip('this torch has no cuBLAS reduction flags')
    before = torch._C._get_cublas_allow_bf16_reduced_precision_reduction()
    if not isinstance(before, tuple):
        pytest.skip('this torch keeps one reduction flag')
    try:
        flags.allow_bf16_reduced_precision_reduction = (False, False)
        setting = torch._C._get_cublas_allow_bf16_reduced_precision_reduction
        with _float32_accumulation(torch.device('cuda')):
            assert flags.allow_bf16_reduced_precision_reduction is False
        assert setting() == (False, False)
    finally:
        flags.allow_bf16_reduced_precision_reduction = before


def test_screen_bound_allows_truncating_tensor_cores(monkeypatch):
    # CUDA's tensor cores may truncate inside their block additions, so the
    # float32 accumulation term gamma_{H+1} there uses 2^-23, not 2^-24.
    from pyg_mmrec.nn import _screened_topk
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    assert _screened_topk.accumulation_unit(cuda) == 2.0**-23
    assert _screened_topk.accumulation_unit(cpu) == 2.0**-24
    torch.manual_seed(5)
    weight, bias = torch.randn(50, 64), torch.randn(50)
    low = torch.cat([weight, bias.view(-1, 1)], 1).bfloat16().float()
    rounding = (low[:, -1] - bias).abs()
    for device, unit in [(cpu, 2.0**-24), (cuda, 2.0**-23)]:
        monkeypatch.setattr(_screened_topk, 'accumulation_unit',
                            lambda _, unit=unit: unit)
        _, bound = _screened_topk.screen_weights(weight, bias,
                                                 torch.bfloat16)
        gamma = 65 * unit / (1 - 65 * unit)
        torch.testing.assert_close(bound.db, rounding + gamma *
                                   low[:, -1].abs(), rtol=1e-6, atol=0)
