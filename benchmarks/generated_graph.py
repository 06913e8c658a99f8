r"""Benchmark: DiffMM's generated-graph build vs. one diffusion training pass.

Acceptance: on TikTok the build of all modality graphs takes less than 10% of
one diffusion training pass over all users (same denoisers, same machine).
Prints one JSON object to stdout and writes no file: redirect it to keep it
(``benchmarks/results/generated_graph*.json`` were made so). Options are
checked before the training pass.

    OMP_NUM_THREADS=2 python benchmarks/generated_graph.py \
        --root ../shared/datasets/tiktok-dev --denoisers 3 \
        > benchmarks/results/generated_graph.json
"""
import json
import os
import platform
import time
from typing import Dict, List, Optional

import torch

from common import TIKTOK_ROOT, fraction, positive_int, random_seed
from pyg_mmrec.data import (
    INTERACTS,
    MODALITIES,
    MultiModalRecDataset,
    item_modalities,
    num_users_items,
)
from pyg_mmrec.errors import OneLineArgumentParser, exit_on_input_error
from pyg_mmrec.graph import csr_of, unique_csr_rows
from pyg_mmrec.nn.denoiser import Denoiser
from pyg_mmrec.nn.diffusion import GaussianDiffusion
from pyg_mmrec.transforms.diffusion_graph import (
    DiffusionGraph,
    default_screen_dtype,
    interaction_rows,
)


def training_pass(diffusion: GaussianDiffusion, denoisers: Dict[str, Denoiser],
                  optimizers: Dict[str, torch.optim.Optimizer],
                  rowptr: torch.Tensor, col: torch.Tensor, num_users: int,
                  num_items: int, item_emb: torch.Tensor,
                  modality_emb: Dict[str, torch.Tensor], batch_size: int,
                  lambda_e: float, generator: torch.Generator,
                  bf16: bool = False) -> float:
    r"""One pass of diffusion training over all users (every denoiser)."""
    perm = torch.randperm(num_users, generator=generator)
    total = 0.0
    for start in range(0, num_users, batch_size):
        users = perm[start:start + batch_size]
        x0 = interaction_rows(rowptr, col, users, num_items)
        for name, den in denoisers.items():
            with torch.autocast(x0.device.type, dtype=torch.bfloat16,
                                enabled=bf16):
                loss = diffusion.training_loss(
                    den, x0, item_emb=item_emb,
                    modality_emb=modality_emb[name], lambda_e=lambda_e,
                    generator=generator)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            total += float(loss.detach())
    return total


@torch.no_grad()
def build_phases(diffusion: GaussianDiffusion, denoisers: Dict[str, Denoiser],
                 rowptr: torch.Tensor, col: torch.Tensor,
                 distinct_rows: torch.Tensor, num_items: int,
                 batch_size: int, k: int,
                 screen_dtype: Optional[torch.dtype],
                 hidden_dtype: torch.dtype) -> Dict[str, float]:
    r"""Seconds of the build's parts, summed over the denoisers: folding
    the weights, the hidden-space reverse steps and the top-k decode (the
    rest of a build is finding the distinct rows, the normalisation and the
    edge drop). Like the transform, it runs the process once for each of
    the :obj:`distinct_rows` (:func:`~pyg_mmrec.graph.unique_csr_rows`)."""
    times = {'fold': 0.0, 'hidden_steps': 0.0, 'decode_topk': 0.0}
    for den in denoisers.values():
        den.eval()
        t0 = time.perf_counter()
        fold = diffusion.fold(den, screen_dtype, hidden_dtype)
        times['fold'] += time.perf_counter() - t0
        for start in range(0, distinct_rows.numel(), batch_size):
            users = distinct_rows[start:start + batch_size]
            rows = interaction_rows(rowptr, col, users, num_items,
                                    layout=torch.sparse_csr)
            t0 = time.perf_counter()
            h = den.reverse_hidden(rows, fold)
            t1 = time.perf_counter()
            den.decode_topk(h, k, fold)
            t2 = time.perf_counter()
            times['hidden_steps'] += t1 - t0
            times['decode_topk'] += t2 - t1
    return times


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default=TIKTOK_ROOT,
                        help='a DiffMM-layout data set folder (default: '
                        'shared/datasets/tiktok-dev beside the checkout)')
    parser.add_argument('--denoisers', type=int, default=3, choices=[1, 2, 3],
                        help='number of denoisers (one per modality)')
    parser.add_argument('--train-batch-size', type=positive_int,
                        default=1024, help='users per diffusion training step')
    parser.add_argument('--build-batch-size', type=positive_int,
                        default=2048, help='distinct rows per build batch')
    parser.add_argument('--k', type=positive_int, default=1,
                        help='generated edges per user (at most the number '
                        'of items)')
    parser.add_argument('--keep-rate', type=fraction, default=0.5,
                        help='fraction of generated edges kept, in (0, 1]')
    parser.add_argument('--repeats', type=positive_int, default=2,
                        help='graph builds timed (best is reported)')
    parser.add_argument('--hidden-dtype', choices=['float32', 'bfloat16'],
                        default='float32',
                        help='dtype of the hidden-space reverse steps '
                        '(bfloat16 is faster but approximate)')
    parser.add_argument('--screen-dtype', default='auto',
                        choices=['auto', 'none', 'bfloat16'],
                        help='screening dtype of the exact top-k decode')
    parser.add_argument('--train-bf16', action='store_true',
                        help='time the training pass under bfloat16 '
                        'autocast (DiffMMConfig.diffusion_bf16)')
    parser.add_argument('--seed', type=random_seed, default=0,
                        help='random seed')
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = MultiModalRecDataset(args.root)[0]
    num_users, num_items = num_users_items(data)
    if args.k > num_items:  # top-k would fail only after the training pass
        parser.error(f'argument --k: {args.k} is more than the {num_items} '
                     f'items of {args.root}')
    modalities = item_modalities(data)
    edge_index = data[INTERACTS].edge_index
    rowptr, col = csr_of(edge_index, num_users)

    # TikTok-dev has two modalities; stand in for missing canonical ones with
    # a copy of the first (features do not change the cost of either side).
    for name in MODALITIES[:args.denoisers]:
        if name not in modalities:
            data['item'][name] = data['item'][modalities[0]].clone()
    keys: List[str] = item_modalities(data)[:args.denoisers]
    diffusion = GaussianDiffusion()
    denoisers = {key: Denoiser(num_items) for key in keys}
    optimizers = {key: torch.optim.Adam(den.parameters(), lr=1e-3)
                  for key, den in denoisers.items()}
    item_emb = torch.nn.init.xavier_uniform_(torch.empty(num_items, 64))
    modality_emb = {
        key: torch.nn.Linear(data['item'][key].size(1), 64)(
            data['item'][key]).detach()
        for key in keys
    }
    gen = torch.Generator().manual_seed(args.seed)

    t0 = time.perf_counter()
    training_pass(diffusion, denoisers, optimizers, rowptr, col, num_users,
                  num_items, item_emb, modality_emb, args.train_batch_size,
                  0.1, gen, bf16=args.train_bf16)
    train_s = time.perf_counter() - t0

    hidden_dtype = getattr(torch, args.hidden_dtype)
    screen_dtype = {'auto': default_screen_dtype(torch.device('cpu')),
                    'none': None,
                    'bfloat16': torch.bfloat16}[args.screen_dtype]
    transform = DiffusionGraph(diffusion, denoisers, k=args.k,
                               keep_rate=args.keep_rate,
                               batch_size=args.build_batch_size,
                               screen_dtype=screen_dtype,
                               hidden_dtype=hidden_dtype,
                               generator=torch.Generator().manual_seed(1))
    builds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = transform(data)
        builds.append(time.perf_counter() - t0)
    build_s = min(builds)
    distinct_rows, _ = unique_csr_rows(rowptr, col)
    phases = build_phases(diffusion, denoisers, rowptr, col, distinct_rows,
                          num_items, args.build_batch_size, args.k,
                          screen_dtype, hidden_dtype)

    # Exactness of the fast path: the literal T-step process on a sample.
    sample = torch.arange(0, num_users, max(1, num_users // 512))
    agree = []
    for key, den in denoisers.items():
        den.eval()
        rows = interaction_rows(rowptr, col, sample, num_items)
        ref = diffusion.reverse(lambda x, t: den(x, t), rows).topk(
            args.k, dim=1).indices
        fast = out[transform.edge_type(key)].edge_index[1].view(
            num_users, args.k)[sample]
        agree.append(float((ref == fast).float().mean()))

    print(json.dumps({
        'dataset': args.root, 'num_users': num_users, 'num_items': num_items,
        'num_denoisers': len(denoisers), 'k': args.k,
        'distinct_interaction_rows': distinct_rows.numel(),
        'keep_rate': args.keep_rate, 'threads': torch.get_num_threads(),
        'cpu': platform.processor() or platform.machine(),
        'train_pass_seconds': round(train_s, 3),
        'train_batch_size': args.train_batch_size,
        'graph_build_seconds': round(build_s, 3),
        'graph_build_runs': [round(b, 3) for b in builds],
        'build_batch_size': args.build_batch_size,
        'hidden_dtype': args.hidden_dtype,
        'screen_dtype': str(screen_dtype).replace('torch.', ''),
        'train_bf16_autocast': args.train_bf16,
        'ratio': round(build_s / train_s, 4),
        'build_phase_seconds': {key: round(val, 3)
                                for key, val in phases.items()},
        'fast_path_top_k_agreement_with_literal': min(agree),
        'load_average_1min_at_end': round(os.getloadavg()[0], 2),
    }, indent=1))


if __name__ == '__main__':
    with exit_on_input_error('generated_graph.py'):
        main()
