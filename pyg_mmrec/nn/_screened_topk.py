r"""Certified low-precision top-:math:`k` of :class:`~pyg_mmrec.nn.Denoiser`'s
output layer: items are screened with a product in a low precision (e.g.
bfloat16), the candidates are rescored exactly, and a rigorous bound on the
screening error proves that no other item can enter the top-:math:`k`.

The bound and the two levels of the procedure are derived in
:meth:`~pyg_mmrec.nn.Denoiser.decode_topk`, the public entry point;
:func:`screen_weights` prepares the screen (in
:meth:`~pyg_mmrec.nn.Denoiser.fold_reverse`) and :func:`screened_topk` runs
it.
"""
from contextlib import contextmanager
from typing import Any, Iterator, List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear


class ScreenBound(NamedTuple):
    r"""Per-item constants of the rigorous error bound of a screened score
    (see :meth:`Denoiser.decode_topk`)."""
    unit: float  # u, unit roundoff of the screening dtype
    w_norm: Tensor  # [I]: |w_i|
    dw_norm: Tensor  # [I]: |w~_i - w_i| + gamma |w~_i|
    db: Tensor  # [I]: |b~_i - b_i| + gamma |b~_i|


# Relative slack on the bound for its own float32 evaluation, and an
# absolute one for bf16 products flushed to zero (< 2^-126 each).
_BOUND_SLACK = 1e-3
_BOUND_ABS = 1e-30


def accumulation_unit(device: torch.device) -> float:
    r"""The relative error of one float32 addition in the screen's product
    on :obj:`device`: :math:`2^{-24}` (round to nearest) on CPUs, whose
    bf16 dot-product instructions round each float32 addition to nearest;
    :math:`2^{-23}` on CUDA, whose tensor cores may truncate inside a block
    of additions (Fasi et al., 2021) instead of rounding."""
    return 2.0**-23 if device.type == 'cuda' else 2.0**-24


def screen_weights(weight: Tensor, bias: Tensor, dtype: torch.dtype
                   ) -> Tuple[Tensor, ScreenBound]:
    r"""The screen ``[I, H + 1]``, :math:`[\mathbf{W}, \mathbf{b}]` rounded
    to :obj:`dtype`, and the per-item constants of its error bound."""
    # The bias rides along as one more input column (h gets a constant 1),
    # so the low-precision product rounds only once, at its output.
    low = torch.cat([weight, bias.view(-1, 1)], dim=1).to(dtype)
    low_w, low_b = low[:, :-1].to(weight.dtype), low[:, -1].to(bias.dtype)
    depth, unit = low.size(1), accumulation_unit(weight.device)
    gamma = depth * unit / (1 - depth * unit)
    w_norm = weight.norm(dim=1)
    dw_norm = (low_w - weight).norm(dim=1) + gamma * low_w.norm(dim=1)
    db = (low_b - bias).abs() + gamma * low_b.abs()
    bound = ScreenBound(unit=torch.finfo(dtype).eps / 2, w_norm=w_norm,
                        dw_norm=dw_norm, db=db)
    return low, bound


def _screen_scores(h: Tensor, screen: Tensor
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    # The screened scores and, per row, |h~ - h| and |h~|.
    low = h.to(screen.dtype)
    low_f = low.to(h.dtype)
    diff = (low_f - h).norm(dim=1)  # exact differences (Sterbenz)
    ones = torch.ones(h.size(0), 1, dtype=low.dtype, device=h.device)
    approx = F.linear(torch.cat([low, ones], dim=1), screen)
    return approx, diff, low_f.norm(dim=1)


def _unround(score: Tensor, unit: float) -> Tensor:
    # The largest value that rounds to `score` (relative rounding <= u),
    # i.e. the monotone upper bound o / (1 -/+ u) of the accumulated sum.
    score = score.to(torch.float32)
    return torch.where(score >= 0, score / (1 - unit), score / (1 + unit))


def _precision_backends() -> List[Any]:
    # The per-backend float32 precision settings of newer torch releases,
    # whose legacy getter raises once they are used.
    backends = [torch.backends.cuda.matmul,
                getattr(torch.backends.mkldnn, 'matmul', None)]
    return [b for b in backends if hasattr(b, 'fp32_precision')]


@contextmanager
def _ieee_float32() -> Iterator[None]:
    # The certificate compares exact float32 scores with the bound; a
    # process-wide TF32 (CUDA) or bfloat16 (oneDNN on CPU) precision for
    # float32 products would compute them inexactly. The setting is
    # process-wide while it lasts, like torch's own.
    backends = _precision_backends()
    if backends:
        saved = [b.fp32_precision for b in backends]
        for backend in backends:
            backend.fp32_precision = 'ieee'
        try:
            yield
        finally:
            for backend, value in zip(backends, saved):
                backend.fp32_precision = value
        return
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision('highest')
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)


@contextmanager
def _float32_accumulation(device: torch.device) -> Iterator[None]:
    # The screening bound assumes float32 accumulation; cuBLAS may otherwise
    # reduce split-K partial sums in bfloat16.
    if device.type != 'cuda':
        yield
        return
    flags = torch.backends.cuda.matmul
    before = flags.allow_bf16_reduced_precision_reduction
    # Newer releases pair the flag with a split-K one, which assigning a
    # bare bool resets to True: restore both as they were.
    split_k = getattr(flags, 'allow_bf16_reduced_precision_reduction_split_k',
                      None)
    flags.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        flags.allow_bf16_reduced_precision_reduction = \
            before if split_k is None else (before, split_k)


def _rescore(h: Tensor, cand: Tensor, weight: Tensor, bias: Tensor,
             chunk: int = 128) -> Tensor:
    # Exact scores of the candidate items of each row; row chunks keep the
    # gathered weights small enough for the allocator to recycle.
    out = torch.empty(cand.shape, dtype=h.dtype, device=h.device)
    for i in range(0, h.size(0), chunk):
        rows = F.embedding(cand[i:i + chunk], weight)  # [chunk, m, H]
        out[i:i + chunk] = torch.bmm(
            rows, h[i:i + chunk].unsqueeze(-1)).squeeze(-1)
    return out.add_(F.embedding(cand, bias.view(-1, 1)).squeeze(-1))


def _certified_rows(kth: Tensor, last_screened: Tensor, dh_norm: Tensor,
                    h_norm: Tensor, bound: ScreenBound) -> Tensor:
    # First level, [B] bool: the row's k-th exact score `kth` beats the
    # bound of every item outside its candidates, taken at the row's last
    # screened candidate with the largest item norms.
    row_eps = (dh_norm * bound.w_norm.max() +
               h_norm * bound.dw_norm.max() + bound.db.max())
    upper = (_unround(last_screened, bound.unit) +
             row_eps * (1.0 + _BOUND_SLACK))
    return kth > upper + _BOUND_ABS


def _reaching_items(approx: Tensor, kth: Tensor, dh_norm: Tensor,
                    h_norm: Tensor, bound: ScreenBound) -> Tensor:
    # Second level, [B', I] bool: the items whose own bound reaches the
    # row's k-th exact score `kth` ([B', 1]); all others provably lose.
    eps = torch.outer(dh_norm, bound.w_norm)
    eps = eps.add_(torch.outer(h_norm, bound.dw_norm))
    eps = eps.add_(bound.db).mul_(1.0 + _BOUND_SLACK)
    upper = eps.add_(_unround(approx, bound.unit)).add_(_BOUND_ABS)
    return upper >= kth


def _topk_of_items(h: Tensor, mask: Tensor, k: int, weight: Tensor,
                   bias: Tensor) -> Tensor:
    # The top-k of each row of `h` among its items in `mask` ([B', I]),
    # scored exactly; the other items score -inf.
    rows, items = mask.nonzero().unbind(1)
    score = (F.embedding(items, weight) * h[rows]).sum(dim=1)
    score = score + bias[items]
    dense = torch.full(mask.shape, -float('inf'), dtype=h.dtype,
                       device=h.device)
    dense[rows, items] = score
    return dense.topk(k, dim=1).indices


def screened_topk(h: Tensor, k: int, output: Linear, screen: Tensor,
                  bound: ScreenBound, margin: int, max_candidates: int
                  ) -> Tensor:
    r"""The exact top-:obj:`k` item indices of :obj:`output` (``h W^T +
    b``), ``[B, k]``, screened with :obj:`screen` and :obj:`bound` from
    :func:`screen_weights` (see :meth:`Denoiser.decode_topk`)."""
    with _ieee_float32():
        return _screened_topk(h, k, output, screen, bound, margin,
                              max_candidates)


def _screened_topk(h: Tensor, k: int, output: Linear, screen: Tensor,
                   bound: ScreenBound, margin: int, max_candidates: int
                   ) -> Tensor:
    weight, bias = output.weight, output.bias
    # Screen every item, then rescore the best k + margin of each row.
    with _float32_accumulation(h.device):
        approx, dh_norm, h_norm = _screen_scores(h, screen)
    approx_val, cand = approx.topk(k + margin, dim=1)
    val, pos = _rescore(h, cand, weight, bias).topk(k, dim=1)
    out = cand.gather(1, pos)

    ok = _certified_rows(val[:, -1], approx_val[:, -1], dh_norm, h_norm,
                         bound)
    if bool(ok.all()):
        return out

    # Rescore the uncertified rows: the items that may still beat their
    # k-th score, or the whole row beyond max_candidates of them.
    bad = (~ok).nonzero().view(-1)
    mask = _reaching_items(approx[bad], val[bad, -1:], dh_norm[bad],
                           h_norm[bad], bound)
    small = mask.sum(dim=1) <= max_candidates
    if bool(small.any()):
        sel = bad[small]
        out[sel] = _topk_of_items(h[sel], mask[small], k, weight, bias)
    if not bool(small.all()):
        sel = bad[~small]
        out[sel] = output(h[sel]).topk(k, dim=1).indices
    return out
