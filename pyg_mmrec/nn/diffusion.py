r"""DiffMM's Gaussian diffusion over user interaction rows: the schedule,
forward noising, the deterministic reverse process and the training loss."""
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.nn import Module

from pyg_mmrec.nn._random import sample_on_generator
from pyg_mmrec.nn.denoiser import Denoiser, ReverseFold

DenoiserFn = Callable[[Tensor, Tensor], Tensor]


class GaussianDiffusion(Module):
    r"""The Gaussian diffusion schedule of DiffMM, shared by the denoisers of
    all modalities.

    With :math:`T` steps, variances :math:`v_t` linear from
    :math:`s\,v_{\min}` to :math:`s\,v_{\max}` and
    :math:`\bar{\alpha}'_t = 1 - v_t`:

    .. math::
        \beta_0 &= \beta_{\mathrm{first}}, \qquad
        \beta_t = \min\big(1 - \bar{\alpha}'_t / \bar{\alpha}'_{t-1},
        0.999\big) \quad (t \geq 1) \\
        \alpha_t &= 1 - \beta_t, \qquad
        \bar{\alpha}_t = \prod_{k \leq t} \alpha_k, \qquad
        \bar{\alpha}_{-1} = 1 \\
        q(\mathbf{x}_t \mid \mathbf{x}_0) &= \mathcal{N}\big(
        \sqrt{\bar{\alpha}_t}\, \mathbf{x}_0, (1 - \bar{\alpha}_t)
        \mathbf{I}\big) \\
        \mu(\mathbf{x}_t, \mathbf{x}_0) &= c^1_t \mathbf{x}_0 + c^2_t
        \mathbf{x}_t, \quad
        c^1_t = \frac{\beta_t \sqrt{\bar{\alpha}_{t-1}}}{1 -
        \bar{\alpha}_t}, \quad
        c^2_t = \frac{(1 - \bar{\alpha}_{t-1}) \sqrt{\alpha_t}}{1 -
        \bar{\alpha}_t}

    The schedule is kept in float64 (also under :meth:`float` / :meth:`half`;
    only the device follows the module) and cast to the data's dtype when
    applied. It has no learnable state and is rebuilt from the
    hyper-parameters, so it is not part of the :obj:`state_dict`.

    Args:
        num_steps (int): Number of steps :math:`T` (default: :obj:`5`).
        noise_scale (float): :math:`s` (default: :obj:`0.1`).
        noise_min (float): :math:`v_{\min}` (default: :obj:`1e-4`).
        noise_max (float): :math:`v_{\max}` (default: :obj:`0.02`).
        first_beta (float): :math:`\beta_{\mathrm{first}}`, the fixed
            :math:`\beta_0` (default: :obj:`1e-4`).
    """
    def __init__(self, num_steps: int = 5, noise_scale: float = 0.1,
                 noise_min: float = 1e-4, noise_max: float = 0.02,
                 first_beta: float = 1e-4) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f'num_steps must be >= 1, got {num_steps}')
        if not 0 < noise_min <= noise_max < 1:
            raise ValueError(f'need 0 < noise_min <= noise_max < 1, got '
                             f'noise_min={noise_min}, noise_max={noise_max}')
        if not 0 < noise_scale * noise_max < 1:
            raise ValueError(f'noise_scale * noise_max must be in (0, 1), got '
                             f'{noise_scale * noise_max}')
        if not 0 < first_beta < 1:
            raise ValueError(f'first_beta must be in (0, 1), got '
                             f'{first_beta}')
        self.num_steps = num_steps
        self.noise_scale = noise_scale
        self.noise_min = noise_min
        self.noise_max = noise_max
        self.first_beta = first_beta
        self._build(torch.device('cpu'))

    def _build(self, device: torch.device) -> None:
        f64 = dict(dtype=torch.float64, device=device)
        var = torch.linspace(self.noise_scale * self.noise_min,
                             self.noise_scale * self.noise_max,
                             self.num_steps, **f64)
        alpha_bar = 1.0 - var
        betas = torch.empty(self.num_steps, **f64)
        betas[1:] = (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
        betas[0] = self.first_beta
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        prev = torch.cat([torch.ones(1, **f64), alphas_cumprod[:-1]])
        self.betas = betas
        self.alphas = alphas
        self.alphas_cumprod = alphas_cumprod
        self.alphas_cumprod_prev = prev
        self.posterior_coef1 = betas * prev.sqrt() / (1.0 - alphas_cumprod)
        self.posterior_coef2 = ((1.0 - prev) * alphas.sqrt() /
                                (1.0 - alphas_cumprod))
        self.snr = alphas_cumprod / (1.0 - alphas_cumprod)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        # Follow device moves but never the dtype casts of `.float()` etc.
        out = super()._apply(fn, recurse)
        device = fn(torch.empty(0, dtype=torch.float64)).device
        if device != self.betas.device:
            self._build(device)
        return out

    def reset_parameters(self) -> None:
        r"""No learnable parameters; kept for interface uniformity."""

    @staticmethod
    def _take(coef: Tensor, t: Tensor, like: Tensor) -> Tensor:
        return coef.to(like.device)[t].to(like.dtype).view(-1, 1)

    def sample_timesteps(self, batch_size: int,
                         device: Optional[torch.device] = None,
                         generator: Optional[torch.Generator] = None
                         ) -> Tensor:
        r"""Draws :math:`t \sim \mathcal{U}\{0, \ldots, T-1\}`, ``[B]``."""
        return sample_on_generator(torch.randint, 0, self.num_steps,
                                   (batch_size, ), generator=generator,
                                   device=device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Forward noising :math:`\mathbf{x}_t = \sqrt{\bar{\alpha}_t}
        \mathbf{x}_0 + \sqrt{1 - \bar{\alpha}_t}\, \boldsymbol{\epsilon}`.

        Args:
            x0 (Tensor): ``[B, I]`` clean rows.
            t (Tensor): ``[B]`` time steps.
            noise (Tensor, optional): :math:`\boldsymbol{\epsilon}`; drawn
                from :math:`\mathcal{N}(0, \mathbf{I})` if not given.
            generator (torch.Generator, optional): For drawing the noise.
        """
        if noise is None:
            noise = sample_on_generator(torch.randn, x0.shape,
                                        generator=generator,
                                        device=x0.device, dtype=x0.dtype)
        a = self._take(self.alphas_cumprod.sqrt(), t, x0)
        b = self._take((1.0 - self.alphas_cumprod).sqrt(), t, x0)
        return torch.addcmul(b * noise, a, x0)

    def posterior_mean(self, x0_hat: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        r"""The posterior mean :math:`c^1_t \hat{\mathbf{x}}_0 + c^2_t
        \mathbf{x}_t` of :math:`q(\mathbf{x}_{t-1} \mid \mathbf{x}_t,
        \hat{\mathbf{x}}_0)`."""
        return (self._take(self.posterior_coef1, t, x_t) * x0_hat +
                self._take(self.posterior_coef2, t, x_t) * x_t)

    def loss_weight(self, t: Tensor) -> Tensor:
        r"""The SNR weights :math:`w_t = \mathrm{SNR}(t-1) - \mathrm{SNR}(t)`,
        :math:`w_0 = 1`, with :math:`\mathrm{SNR}(t) = \bar{\alpha}_t /
        (1 - \bar{\alpha}_t)`, in float64, ``[B]``."""
        snr = self.snr.to(t.device)
        prev = torch.cat([snr.new_ones(1), snr[:-1]])
        weight = prev - snr
        weight[0] = 1.0
        return weight[t]

    @torch.no_grad()
    def reverse(self, denoiser: DenoiserFn, x0: Tensor) -> Tensor:
        r"""The deterministic reverse process used for graph generation:
        start from :math:`\mathbf{x}_T := \mathbf{x}_0` (no forward noise) and
        apply :math:`\mathbf{x}_{t-1} = c^1_t\, g(\mathbf{x}_t, t) +
        c^2_t\, \mathbf{x}_t` for :math:`t = T-1, \ldots, 0` (no sampling
        noise). Put :obj:`denoiser` in eval mode first.

        This is the literal step-by-step process; :meth:`reverse_topk` is
        the fast path for :class:`~pyg_mmrec.nn.Denoiser`.

        Returns:
            ``[B, I]`` the generated rows.
        """
        x = x0
        for step in range(self.num_steps - 1, -1, -1):
            t = torch.full((x.size(0), ), step, dtype=torch.long,
                           device=x.device)
            x = self.posterior_mean(denoiser(x, t), x, t)
        return x

    @torch.no_grad()
    def reverse_topk(self, denoiser: DenoiserFn, x0: Tensor, k: int = 1,
                     fold: Optional[ReverseFold] = None) -> Tensor:
        r"""The column indices of the top-:obj:`k` entries of each row of
        :meth:`reverse`, ``[B, k]`` (largest first).

        For a :class:`~pyg_mmrec.nn.Denoiser` the process runs in its hidden
        space (:meth:`~pyg_mmrec.nn.Denoiser.reverse_hidden`) and only the
        last step is decoded to items: since :math:`\bar{\alpha}_{-1} = 1`,
        :math:`c^2_0 = 0` and the result is
        :math:`c^1_0\, \hat{\mathbf{x}}_0^{(0)}` with :math:`c^1_0 > 0`, whose
        top-:math:`k` are those of :math:`\hat{\mathbf{x}}_0^{(0)}`. Other
        callables take the step-by-step path.

        Args:
            denoiser (callable): :math:`g(\mathbf{x}_t, t)`, in eval mode.
            x0 (Tensor): ``[B, I]`` start rows, dense (or sparse CSR for a
                :class:`~pyg_mmrec.nn.Denoiser`).
            k (int): Number of items per row.
            fold (ReverseFold, optional): :meth:`Denoiser.fold_reverse` of
                :obj:`denoiser` for this schedule, to reuse across batches.
        """
        num_items = x0.size(1)
        if not 1 <= k <= num_items:
            raise ValueError(f'k must be in [1, {num_items}], got {k}')
        if isinstance(denoiser, Denoiser):
            if fold is None:
                fold = self.fold(denoiser)
            h = denoiser.reverse_hidden(x0, fold)
            return denoiser.decode_topk(h, k, fold)
        if x0.layout == torch.sparse_csr:
            x0 = x0.to_dense()
        return self.reverse(denoiser, x0).topk(k, dim=1).indices

    def fold(self, denoiser: Denoiser,
             screen_dtype: Optional[torch.dtype] = None,
             hidden_dtype: Optional[torch.dtype] = None) -> ReverseFold:
        r""":meth:`Denoiser.fold_reverse` with this schedule's posterior
        coefficients."""
        return denoiser.fold_reverse(self.posterior_coef1.tolist(),
                                     self.posterior_coef2.tolist(),
                                     screen_dtype, hidden_dtype)

    def training_loss(
        self,
        denoiser: DenoiserFn,
        x0: Tensor,
        t: Optional[Tensor] = None,
        noise: Optional[Tensor] = None,
        item_emb: Optional[Tensor] = None,
        modality_emb: Optional[Tensor] = None,
        lambda_e: float = 0.0,
        generator: Optional[torch.Generator] = None,
        reduction: str = 'mean',
    ) -> Tensor:
        r"""The denoiser loss of a batch of rows, with the modality-aware
        graph constraint:

        .. math::
            \ell = w_t \cdot \frac{1}{I} \sum_i (\mathbf{x}_0 -
            \hat{\mathbf{x}}_0)_i^2 + \lambda_e \cdot \frac{1}{d} \sum_j
            \big((\hat{\mathbf{x}}_0\, f_m(\mathbf{F}_m))_j -
            (\mathbf{x}_0 \mathbf{E}_i)_j\big)^2

        where :math:`\hat{\mathbf{x}}_0 = g(\mathbf{x}_t, t)`, and
        :math:`f_m(\mathbf{F}_m)` and :math:`\mathbf{E}_i` are detached so that
        only the denoiser receives gradients.

        Args:
            denoiser (callable): :math:`g(\mathbf{x}_t, t)`.
            x0 (Tensor): ``[B, I]`` dense interaction rows.
            t (Tensor, optional): ``[B]`` steps; drawn uniformly if not given.
            noise (Tensor, optional): ``[B, I]`` noise; drawn if not given.
            item_emb (Tensor, optional): ``[I, d]`` item ID embeddings
                :math:`\mathbf{E}_i`.
            modality_emb (Tensor, optional): ``[I, d]`` projected features
                :math:`f_m(\mathbf{F}_m)`. Both embeddings are required
                when :obj:`lambda_e` is non-zero, and unused otherwise.
            lambda_e (float): :math:`\lambda_e`.
            generator (torch.Generator, optional): For :obj:`t` and noise.
            reduction (str): :obj:`'mean'` over the batch or :obj:`'none'`
                for the per-row ``[B]`` losses.
        """
        if reduction not in ('mean', 'none'):
            raise ValueError(f"reduction must be 'mean' or 'none', got "
                             f"'{reduction}'")
        if t is None:
            t = self.sample_timesteps(x0.size(0), x0.device, generator)
        x_t = self.q_sample(x0, t, noise, generator)
        x0_hat = denoiser(x_t, t)
        mse = (x0 - x0_hat).pow(2).mean(dim=1)
        loss = self.loss_weight(t).to(x0.dtype) * mse
        if lambda_e != 0.0:
            if item_emb is None or modality_emb is None:
                raise ValueError('lambda_e != 0 needs both item_emb and '
                                 'modality_emb')
            target = x0.matmul(item_emb.detach())
            pred = x0_hat.matmul(modality_emb.detach())
            loss = loss + lambda_e * (pred - target).pow(2).mean(dim=1)
        return loss.mean() if reduction == 'mean' else loss

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_steps={self.num_steps}, '
                f'noise_scale={self.noise_scale}, '
                f'noise_min={self.noise_min}, noise_max={self.noise_max}, '
                f'first_beta={self.first_beta})')


__all__ = ['GaussianDiffusion']
