r"""Seconds per training epoch, split into phases, and peak memory.

Phases come from the model (:meth:`Recommender.before_epoch`, e.g. DiffMM's
diffusion training and graph regeneration), the recommender's batches and
the validation pass. Peak memory is the process's maximum resident set size
(and the CUDA allocator's peak on GPU).

Example::

    python benchmarks/train_epoch.py --model diffmm --preset tiktok \
        --dataset ../shared/datasets/tiktok-dev --epochs 2

Prints JSON and writes ``benchmarks/results/train_epoch_<model>.json`` and a
stacked-bar plot next to it.
"""
import argparse
import json
import os
import os.path as osp
import platform
import sys
import warnings

import torch

warnings.filterwarnings('ignore', category=DeprecationWarning)

from common import peak_rss_gib  # noqa: E402
from pyg_mmrec.errors import exit_on_input_error  # noqa: E402
from pyg_mmrec.nn.models.base import device_clock  # noqa: E402
from pyg_mmrec.train.config import parse_overrides  # noqa: E402
from pyg_mmrec.train.loop import run_epoch  # noqa: E402
from pyg_mmrec.train.run import (  # noqa: E402
    RunOptions,
    assemble,
    build_configs,
)

HERE = osp.dirname(osp.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='diffmm')
    parser.add_argument('--preset', default=None)
    parser.add_argument('--dataset', default='synthetic')
    parser.add_argument('--epochs', type=int, default=2,
                        help='epochs to time (the first includes warm-up)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--set', dest='overrides', action='append',
                        default=[], metavar='KEY=VALUE')
    parser.add_argument('--tag', default='', help='suffix of output files')
    parser.add_argument('--out', default=osp.join(HERE, 'results'))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    options = RunOptions(model=args.model, dataset=args.dataset,
                         preset=args.preset,
                         overrides=parse_overrides(
                             [*args.overrides, f'train.device={args.device}']))
    configs = build_configs(options)
    run = assemble(args.model, args.dataset, configs)
    data, model, optimizer = run.data, run.model, run.optimizer
    sampler, evaluator = run.sampler, run.evaluator
    num_users, num_items = model.num_users, model.num_items
    device = next(model.parameters()).device
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)

    epochs = []
    for epoch in range(args.epochs):
        record = run_epoch(model, data, sampler, optimizer, epoch,
                           progress=False)
        model.eval()
        start = device_clock(device)
        val = evaluator.evaluate(model.score_fn(data), 'val')
        record['seconds_eval'] = device_clock(device) - start
        record['seconds_total'] = record['seconds_train'] + \
            record['seconds_eval']
        record['val'] = val
        epochs.append(record)
        print(f'epoch {epoch}: {record["seconds_total"]:.2f} s',
              file=sys.stderr)

    phases = sorted(k for k in epochs[-1] if k.startswith('seconds_')
                    and k not in ('seconds_train', 'seconds_total'))
    result = {
        'model': args.model,
        'preset': args.preset,
        'dataset': args.dataset,
        'device': str(device),
        'cpu': platform.processor() or platform.machine(),
        'threads': torch.get_num_threads(),
        'users': num_users,
        'items': num_items,
        'epochs': epochs,
        'last_epoch_phases': {k: epochs[-1][k] for k in phases},
        'last_epoch_seconds': epochs[-1]['seconds_total'],
        'peak_rss_gib': peak_rss_gib(),
        'peak_cuda_gib': (torch.cuda.max_memory_allocated(device) / 2**30
                          if device.type == 'cuda' else None),
    }
    text = json.dumps(result, indent=2)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    stem = f'train_epoch_{args.model}{("_" + args.tag) if args.tag else ""}'
    with open(osp.join(args.out, stem + '.json'), 'w') as f:
        f.write(text + '\n')
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3))
    left = 0.0
    for phase in phases:
        value = epochs[-1][phase]
        ax.barh([args.model], [value], left=left,
                label=phase.replace('seconds_', ''))
        left += value
    ax.set_xlabel('seconds per epoch (last epoch)')
    ax.set_title(f'{args.model} on {osp.basename(args.dataset)} '
                 f'({device}, peak RSS {result["peak_rss_gib"]:.2f} GiB)')
    ax.legend(fontsize='small', loc='lower right')
    fig.tight_layout()
    fig.savefig(osp.join(args.out, stem + '.png'), dpi=120)


if __name__ == '__main__':
    with exit_on_input_error('train_epoch.py'):
        main()
