import pytest
import torch

from pyg_mmrec.nn.adversarial import (
    Discriminator,
    ProjectedDiscriminator,
    gradient_penalty,
    projected_gradient_penalty,
)


def test_discriminator_architecture_and_range():
    torch.manual_seed(0)
    disc = Discriminator(64)
    # PyG's MLP: two hidden layers (dropout 0.31, then 0.5), a plain output.
    assert [lin.out_channels for lin in disc.mlp.lins] == [16, 8, 1]
    assert disc.mlp.dropout == [0.31, 0.5, 0.0] and disc.mlp.plain_last
    out = disc(torch.rand(10, 64))
    assert out.shape == (10, 1)
    assert bool(((out > 0) & (out < 100)).all())
    assert repr(disc) == 'Discriminator(64)'
    # Zero biases, Kaiming-normal weights for LeakyReLU(0.2).
    lins = list(disc.mlp.lins)
    assert all(bool((lin.bias == 0).all()) for lin in lins)
    # (262k weights: the sample std is within 0.2%; a=0 would give -2%.)
    weight = Discriminator(1024).mlp.lins[0].weight
    std = (2 / (1 + 0.2**2) / 1024)**0.5
    assert abs(weight.std().item() - std) < 0.01 * std

    # The forward pass written out, in eval mode with BatchNorm statistics
    # and affine parameters far from identity (so their order matters).
    with torch.no_grad():
        for lin in lins:
            lin.bias.uniform_(-0.5, 0.5)
        for norm in disc.mlp.norms:
            norm = norm.module  # PyG's BatchNorm wraps torch's
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 2)
            norm.bias.uniform_(-1, 1)
    disc.eval()
    x = torch.rand(10, 64)
    h = x
    for lin, norm in zip(disc.mlp.lins, disc.mlp.norms):
        norm = norm.module
        h = h @ lin.weight.t() + lin.bias
        h = torch.where(h > 0, h, 0.2 * h)
        h = ((h - norm.running_mean) / (norm.running_var + 1e-5).sqrt() *
             norm.weight + norm.bias)
    out = disc.mlp.lins[-1]
    logit = h @ out.weight.t() + out.bias
    ref = 100 / (1 + torch.exp(-logit))
    torch.testing.assert_close(disc(x), ref)


def test_projected_discriminator_scales_linearly():
    num_items, d = 1000, 16
    proj = ProjectedDiscriminator(num_items, channels=d, hidden_channels=32)
    # Widths d -> hidden -> hidden / 2 -> 1, with Discriminator's dropout.
    assert [(lin.in_channels, lin.out_channels)
            for lin in proj.mlp.lins] == [(16, 32), (32, 16), (16, 1)]
    assert proj.mlp.dropout == [0.31, 0.5, 0.0]
    count = sum(p.numel() for p in proj.parameters())
    assert count < num_items * d + 5000
    assert proj(torch.rand(4, num_items)).shape == (4, 1)
    # Fixed projection: a buffer that set_projection replaces.
    emb = torch.randn(num_items, d)
    fixed = ProjectedDiscriminator(num_items, channels=d, projection=emb)
    assert 'projection' not in dict(fixed.named_parameters())
    fixed.eval()
    rows = torch.rand(3, num_items)
    ref = 100 * torch.sigmoid(fixed.mlp(rows @ emb))
    assert torch.allclose(fixed(rows), ref)
    fixed.set_projection(2 * emb)
    assert torch.allclose(fixed.projection, 2 * emb)
    with pytest.raises(ValueError, match=r'projection must be \[1000, 16\], '
                       r'got \[5, 16\]'):
        fixed.set_projection(torch.randn(5, 16))
    with pytest.raises(RuntimeError, match='the projection is learnable'):
        proj.set_projection(emb)


class TinyD(torch.nn.Module):
    # D(x) = 100 * sigmoid(x . w + b), with fixed weights.
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
        self.b = torch.nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        return 100 * torch.sigmoid(x @ self.w + self.b).view(-1, 1)


def test_gradient_penalty_matches_hand_value():
    disc = TinyD()
    real = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    fake = torch.tensor([[0.0, 0.5, 0.0], [0.2, 0.0, 0.3]])
    alpha = torch.tensor([0.25, 0.6])
    gp = gradient_penalty(disc, real, fake, alpha=alpha)
    w, b = disc.w.detach(), disc.b.detach()
    ref = 0.0
    for r, f, a in zip(real, fake, alpha):
        x = a * r + (1 - a) * f
        s = torch.sigmoid(x @ w + b)
        grad = 100 * s * (1 - s) * w  # d/dx of 100 sigmoid(x.w + b)
        ref += (grad.norm() - 1)**2
    assert torch.allclose(gp, 0.3 * ref / 2)
    gp.backward()  # create_graph: the penalty trains the discriminator
    assert disc.w.grad is not None and disc.w.grad.abs().sum() > 0


def test_gradient_penalty_seeded_and_shared_interface():
    real, fake = torch.rand(4, 32), torch.rand(4, 32)
    for disc in (Discriminator(32), ProjectedDiscriminator(32, channels=8)):
        a = gradient_penalty(disc.eval(), real, fake,
                             generator=torch.Generator().manual_seed(0))
        b = gradient_penalty(disc, real, fake,
                             generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b)
        # The generator draws one alpha ~ U(0, 1) per row (the mixing
        # itself is checked by hand above).
        alpha = torch.rand(4, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(
            a, gradient_penalty(disc, real, fake, alpha=alpha))
    with pytest.raises(ValueError, match=r'same shape, got \(4, 32\) and'):
        gradient_penalty(disc, real, fake[:3])


def test_projected_gradient_penalty_equals_the_row_penalty():
    torch.manual_seed(0)
    num_items, d = 50, 6
    disc = ProjectedDiscriminator(num_items, channels=d, hidden_channels=8,
                                  dropout=(0.0, 0.0)).double()
    real = torch.rand(7, num_items, dtype=torch.float64)
    fake = torch.rand(7, num_items, dtype=torch.float64)
    alpha = torch.rand(7, dtype=torch.float64)
    ref = gradient_penalty(disc, real, fake, 0.3, alpha=alpha)
    ref_grads = torch.autograd.grad(ref, list(disc.parameters()))
    out = projected_gradient_penalty(disc, real @ disc.projection,
                                     fake @ disc.projection, 0.3, alpha=alpha)
    grads = torch.autograd.grad(out, list(disc.parameters()))
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
    assert disc.score(real @ disc.projection).equal(disc(real))
    with pytest.raises(ValueError, match='same shape'):
        projected_gradient_penalty(disc, torch.zeros(2, d),
                                   torch.zeros(3, d))
