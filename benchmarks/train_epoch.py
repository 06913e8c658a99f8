r"""Seconds per training epoch, split into phases, and peak memory.

Phases come from the model (:meth:`Recommender.before_epoch`, e.g. DiffMM's
diffusion training and graph regeneration), the recommender's batches and
the validation pass. Peak memory is the process's maximum resident set size
(and the CUDA allocator's peak on GPU).

Example::

    python benchmarks/train_epoch.py --model diffmm --preset tiktok \
        --dataset ../shared/datasets/tiktok-dev --epochs 2

Prints JSON and writes ``train_epoch_<model>.json`` and a stacked-bar plot
of the last epoch's phases, ``train_epoch_<model>.png``, in the ``--out``
folder (``benchmarks/results`` by default); ``--tag T`` makes the names
``train_epoch_<model>_T.json`` and ``.png``, to keep runs of one model with
other settings apart. Options and the output folder are checked before the
data set is loaded.
"""
import argparse
import json
import os.path as osp
import platform
import re
import sys
import warnings
from typing import Any, Dict, List

import torch

warnings.filterwarnings('ignore', category=DeprecationWarning)

from common import (device_name, output_folder,  # noqa: E402
                    peak_rss_gib, positive_int, thread_count,
                    write_outputs)
from pyg_mmrec.errors import (  # noqa: E402
    ConfigError,
    OneLineArgumentParser,
    exit_on_input_error,
)
from pyg_mmrec.nn.models.base import device_clock  # noqa: E402
from pyg_mmrec.train.config import parse_overrides  # noqa: E402
from pyg_mmrec.train.loop import run_epoch  # noqa: E402
from pyg_mmrec.train.run import (  # noqa: E402
    RunOptions,
    assemble,
    build_configs,
)

HERE = osp.dirname(osp.abspath(__file__))
#: Training options an override of which the script would replace or
#: ignore (as ``train.<field>`` or a bare ``<field>``): field -> what to
#: do instead.
OWN_OPTIONS = {'device': 'use --device instead',
               'epochs': 'use --epochs instead',
               'patience': 'every epoch is timed (no early stopping)'}


def file_tag(text: str) -> str:
    r"""A suffix for the output file names: letters, digits, ``.``, ``_``
    and ``-`` (no path separators, so the files stay in ``--out``)."""
    if not re.fullmatch(r'[A-Za-z0-9._-]*', text):
        raise argparse.ArgumentTypeError(
            f"may hold only letters, digits, '.', '_' and '-', got "
            f"'{text}'")
    return text


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='diffmm',
                        help="a model of 'pyg-mmrec train' (default: diffmm)")
    parser.add_argument('--preset', default=None,
                        help="the papers' hyper-parameters: tiktok, baby or "
                        'sports (default: none)')
    parser.add_argument('--dataset', default='synthetic',
                        help="'synthetic' (built in, the default) or a data "
                        'set folder')
    parser.add_argument('--epochs', type=positive_int, default=2,
                        help='epochs to time (the first includes warm-up)')
    parser.add_argument('--device', type=device_name, default='cpu',
                        help="'cpu' (the default), 'cuda' or 'cuda:N'")
    parser.add_argument('--threads', type=thread_count, default=None,
                        help="CPU threads (default: torch's)")
    parser.add_argument('--set', dest='overrides', action='append',
                        default=[], metavar='KEY=VALUE',
                        help="a hyper-parameter, as in 'pyg-mmrec train' "
                        '(repeatable)')
    parser.add_argument('--tag', type=file_tag, default='',
                        help='suffix of the output file names')
    parser.add_argument('--out', default=osp.join(HERE, 'results'),
                        help='output folder (default: benchmarks/results)')
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    overrides = parse_overrides(args.overrides)
    for key, _ in overrides:
        scope, _, field = key.rpartition('.')
        if scope in ('', 'train') and field in OWN_OPTIONS:
            raise ConfigError(f'--set {key}: {OWN_OPTIONS[field]}')
    options = RunOptions(model=args.model, dataset=args.dataset,
                         preset=args.preset,
                         overrides=[*overrides, ('train.device',
                                                 args.device)])
    configs = build_configs(options)  # checks the model and overrides
    stem = f'train_epoch_{args.model}{("_" + args.tag) if args.tag else ""}'
    output_folder(args.out, [stem + '.json', stem + '.png'])
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
    outputs: Dict[str, Any] = {stem + '.json': text}
    try:
        import matplotlib
    except ImportError:  # the plot is optional
        pass
    else:
        matplotlib.use('Agg')
        outputs[stem + '.png'] = lambda path: plot(epochs[-1], phases,
                                                   result, args, path)
    write_outputs(args.out, outputs)


def plot(record: Dict[str, Any], phases: List[str], result: Dict[str, Any],
         args: argparse.Namespace, path: str) -> None:
    r"""Stacked bar of the last epoch's :obj:`phases`."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3))
    left = 0.0
    for phase in phases:
        value = record[phase]
        ax.barh([args.model], [value], left=left,
                label=phase.replace('seconds_', ''))
        left += value
    ax.set_xlabel('seconds per epoch (last epoch)')
    ax.set_title(f'{args.model} on {osp.basename(args.dataset)} '
                 f'({result["device"]}, peak RSS '
                 f'{result["peak_rss_gib"]:.2f} GiB)')
    ax.legend(fontsize='small', loc='lower right')
    fig.tight_layout()
    # The path is a temporary name: say the format.
    fig.savefig(path, dpi=120, format='png')
    plt.close(fig)


if __name__ == '__main__':
    with exit_on_input_error('train_epoch.py'):
        main()
