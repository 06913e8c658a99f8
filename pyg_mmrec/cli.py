r"""The ``pyg-mmrec`` command.

Bad input (missing or invalid files, unknown options) is reported in one
line on standard error with exit status 2, without a traceback; running out
of memory likewise, with exit status 1, and a stop (Ctrl-C, SIGTERM) with
128 + the signal number.
"""
import argparse
import csv
import io
import json
import os.path as osp
import re
import signal
import sys
import warnings
from typing import TYPE_CHECKING, Any, List, Optional, Union

import pyg_mmrec
from pyg_mmrec.errors import (
    EXIT_USAGE,
    ConfigError,
    DatasetError,
    MMRecError,
    OneLineArgumentParser,
    describe,
    is_out_of_memory,
    quiet_broken_pipe,
)
from pyg_mmrec.io import STOP_SIGNALS, signal_handlers

# torch (~2 s to import) is imported by the commands, inside main()'s
# handlers: a Ctrl-C during its import is an orderly stop, not a traceback.
if TYPE_CHECKING:
    import torch


# Where a checkpoint runs: the same for `evaluate` and `recommend`.
_CHECKPOINT_DEVICE_HELP = ("'cpu', 'cuda', 'cuda:N' or 'auto' (default: the "
                           "one it trained on, if this machine has it, else "
                           "cpu)")


def _train_default(option: str) -> str:
    r"""``'default: V'`` for a training option, with the models whose own
    default differs (e.g. MMSSL's learning rate), and the models whose
    presets change it (e.g. DiffMM's patience)."""
    from pyg_mmrec.train.config import TrainConfig
    from pyg_mmrec.train.registry import MODELS
    default = getattr(TrainConfig(), option)
    texts = [f'default: {default:g}']
    for name, spec in sorted(MODELS.items()):
        own = spec.train_defaults.get(option, default)
        if own != default:
            texts.append(f'{name}: {own:g}')
        preset = {train.get(option, own)
                  for train in spec.train_presets.values()}
        if preset and preset != {own}:
            values = '/'.join(f'{value:g}' for value in sorted(preset))
            texts.append(f'{name} presets: {values}')
    return '; '.join(texts)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from pyg_mmrec.train.registry import MODELS, PRESETS
    p = sub.add_parser(
        'train', help='train a model and write metrics.json + checkpoint',
        description='Train a recommender; validation every epoch, best epoch '
        'on validation Recall@K (K = train.k, default 20), test reported at '
        "that epoch. With --resume, options left out are the checkpoint's, "
        'not the defaults below.')
    p.add_argument('--model', choices=sorted(MODELS),
                   help='default: lightgcn (with --resume: the checkpoint\'s)')
    p.add_argument('--dataset',
                   help="'synthetic' (built in, the default) or a data set "
                   "folder (with --resume: the checkpoint's)")
    p.add_argument('--preset', choices=PRESETS,
                   help="the papers' hyper-parameters for a data set "
                   '(training options included)')
    p.add_argument('--epochs', type=int, help='maximum number of epochs '
                   f"({_train_default('epochs')})")
    p.add_argument('--patience', type=int,
                   help='early-stopping patience in epochs, 0: off '
                   f"({_train_default('patience')})")
    p.add_argument('--batch-size', type=int, help='interactions per '
                   f"training batch ({_train_default('batch_size')})")
    p.add_argument('--lr', type=float,
                   help=f"learning rate ({_train_default('lr')})")
    p.add_argument('--device',
                   help="'cpu', 'cuda', 'cuda:N' or 'auto' (default)")
    p.add_argument('--seed', type=int, help='seed of initialisation and '
                   f"sampling ({_train_default('seed')})")
    p.add_argument('--out', help="output folder; an earlier run's files "
                   'there are replaced (default: runs/latest; with --resume '
                   'RUN/last.pt: RUN)')
    p.add_argument('--resume', metavar='CHECKPOINT',
                   help='continue the run saved in this last.pt')
    p.add_argument('--set', dest='overrides', action='append', default=[],
                   metavar='KEY=VALUE',
                   help='override any hyper-parameter, e.g. --set '
                   'num_layers=2 or --set data.num_users=500 (repeatable)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pyg_mmrec.train.config import parse_overrides
    from pyg_mmrec.train.run import RunOptions, train
    overrides = parse_overrides(args.overrides)
    for option in ('epochs', 'patience', 'batch_size', 'lr', 'device',
                   'seed'):
        value = getattr(args, option)
        if value is not None:
            overrides.append((f'train.{option}', str(value)))
    options = RunOptions(model=args.model, dataset=args.dataset,
                         preset=args.preset, overrides=overrides,
                         out=args.out, resume=args.resume,
                         progress=not args.quiet)
    report = train(options)
    summary = {k: report[k] for k in ('model', 'best_epoch', 'val', 'test')}
    print(json.dumps(summary, indent=2))
    print(f"wrote {osp.join(options.out, 'metrics.json')} and "
          f"{osp.join(options.out, 'checkpoint.pt')}", file=sys.stderr)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'evaluate', help='evaluate a saved checkpoint',
        description="Validation and test metrics of a checkpoint, as JSON. "
        "'epoch' is the epoch of its weights, counted from 0 as in "
        "metrics.json: the best one for checkpoint.pt, the last one for "
        "last.pt.")
    p.add_argument('--checkpoint', required=True,
                   help="a 'checkpoint.pt' or 'last.pt' written by train")
    p.add_argument('--dataset', help='data set (default: the training one)')
    p.add_argument('--device', help=_CHECKPOINT_DEVICE_HELP)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from pyg_mmrec.train.run import evaluate_checkpoint
    report = evaluate_checkpoint(args.checkpoint, args.dataset, args.device)
    print(json.dumps(report, indent=2))
    return 0


def _user_ids_of_file(path: str, num_users: int) -> List[int]:
    try:
        # utf-8-sig: a byte-order mark is not part of the first id.
        with open(path, encoding='utf-8-sig') as f:
            lines = list(f)
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(path, f'cannot be read as a list of user ids '
                           f'({describe(e)})') from None
    users = []
    for number, line in enumerate(lines, start=1):
        for token in line.replace(',', ' ').split():
            try:
                user = int(token)
            except ValueError:
                hint = (' (the file holds user ids only, no header)'
                        if number == 1 else '')
                raise DatasetError(path, f"line {number}: '{token}' is not "
                                   f"a user id{hint}") from None
            if not 0 <= user < num_users:
                raise DatasetError(path, f'line {number}: user id {user} is '
                                   f'out of range 0..{num_users - 1}')
            users.append(user)
    if not users:
        raise DatasetError(path, 'names no user')
    return users


def _parse_users(spec: str, num_users: int) -> 'torch.Tensor':
    import torch
    if spec == 'all':
        return torch.arange(num_users)
    try:
        # Ids first: a folder or file named '0' does not shadow user 0.
        users = [int(tok) for tok in spec.replace(',', ' ').split()]
    except ValueError:
        if osp.isdir(spec):
            raise DatasetError(spec, 'is a folder, not a file of user '
                               'ids') from None
        if not osp.isfile(spec):
            raise ConfigError(
                f"--users must be 'all', a comma-separated list of user ids "
                f"or an existing file of them, got '{spec}'") from None
        # Checked there, with the line of each problem.
        users = _user_ids_of_file(spec, num_users)
    else:
        if not users:
            raise ConfigError('--users names no user')
        bad = [u for u in users if not 0 <= u < num_users]
        if bad:
            raise ConfigError(f'user id {bad[0]} is out of range 0..'
                              f'{num_users - 1}')
    # Each user once, in the order given: JSON keys cannot repeat, and the
    # CSV should say the same.
    return torch.tensor(list(dict.fromkeys(users)))


def _parse_splits(spec: str) -> List[str]:
    from pyg_mmrec.data.hetero import SPLITS
    if spec.strip() == 'none':
        return []
    splits = [token.strip() for token in spec.split(',') if token.strip()]
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise ConfigError(f"--exclude must name splits among "
                          f"{', '.join(SPLITS)}, or be 'none', got '{spec}'")
    return list(dict.fromkeys(splits))


def _add_recommend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'recommend', help='top-k unseen items per user from a checkpoint',
        description="Top-k items per user from a checkpoint, leaving out the "
        "items each user already has in the data set's splits (--exclude).")
    p.add_argument('--checkpoint', required=True,
                   help="a 'checkpoint.pt' or 'last.pt' written by train")
    p.add_argument('--users', required=True,
                   help="'all', ids like 0,5,7, or a file of ids (each "
                   "user is listed once)")
    p.add_argument('--k', type=int, default=20,
                   help='items per user; fewer for a user with fewer items '
                   'left')
    p.add_argument('--exclude',
                   help="the splits whose items a user has seen, "
                   "comma-separated, or 'none'; e.g. 'train' lets held-out "
                   'items be recommended, for an offline check (default: '
                   'every split of the data set)')
    p.add_argument('--format', choices=('csv', 'json'), default='csv',
                   help='csv: user,rank,item rows; json: {user: [items]}')
    p.add_argument('--output', help='write here instead of standard output')
    p.add_argument('--dataset', help='data set (default: the training one)')
    p.add_argument('--device', help=_CHECKPOINT_DEVICE_HELP)
    p.set_defaults(func=_run_recommend)


def _run_recommend(args: argparse.Namespace) -> int:
    from pyg_mmrec.data.hetero import SPLITS, has_split
    from pyg_mmrec.io import atomic_path
    from pyg_mmrec.train.run import restore, scoring
    if args.k < 1:
        raise ConfigError(f'--k must be at least 1, got {args.k}')
    exclude = None if args.exclude is None else _parse_splits(args.exclude)
    model, data, _ = restore(args.checkpoint, args.dataset, args.device)
    if exclude is None:
        exclude = [split for split in SPLITS if has_split(data, split)]
    else:
        missing = [split for split in exclude if not has_split(data, split)]
        if missing:
            raise ConfigError(f'--exclude names the {missing[0]} split, '
                              f'which the data set does not have')
    users = _parse_users(args.users, model.num_users)
    k = min(args.k, model.num_items)
    with scoring(args.checkpoint):
        top = model.recommend(data, users, k, exclude=exclude)
    # A user with fewer than k unseen items gets only those (the rest of
    # the row is -1).
    rows = [[item for item in row if item >= 0] for row in top.tolist()]
    if args.format == 'json':
        text = json.dumps({str(int(u)): row
                           for u, row in zip(users, rows)}) + '\n'
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator='\n')
        writer.writerow(['user', 'rank', 'item'])
        for user, row in zip(users.tolist(), rows):
            writer.writerows([user, rank + 1, item]
                             for rank, item in enumerate(row))
        text = buffer.getvalue()
    if args.output:
        with atomic_path(args.output) as tmp:
            with open(tmp, 'w') as f:
                f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'info', help='statistics of a data set',
        description='Users, items, interactions per split, degrees, '
        'cold-start users and items of the held-out splits, and feature '
        'statistics of a data set, as JSON.')
    p.add_argument('--dataset', default='synthetic',
                   help="'synthetic' (built in, the default) or a data set "
                   'folder')
    p.add_argument('--plot', help='write the degree distributions to this '
                   'PNG file')
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from pyg_mmrec.train.run import load_data
    data = load_data(args.dataset)
    from pyg_mmrec.prepare.info import (
        dataset_statistics,
        feature_file_dtypes,
        write_degree_plot,
    )
    file_dtypes = None if args.dataset == 'synthetic' else \
        feature_file_dtypes(osp.expanduser(args.dataset))
    stats = dataset_statistics(data, file_dtypes)
    if args.plot:
        write_degree_plot(data, args.plot)
        stats['plot'] = args.plot
    print(json.dumps(stats, indent=2))
    return 0


#: Exit status when the machine runs out of memory.
EXIT_RESOURCES = 1


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog='pyg-mmrec',
        description='Multi-modal recommendation with PyTorch Geometric.')
    parser.add_argument('--version', action='version',
                        version=f'%(prog)s {pyg_mmrec.__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    _add_train(sub)
    _add_evaluate(sub)
    _add_recommend(sub)
    _add_info(sub)
    try:
        from pyg_mmrec.prepare.cli import add_prepare_parser
    except ImportError:
        pass
    else:
        add_prepare_parser(sub)
    return parser


def _format_warning(message: Union[Warning, str], category: type,
                    filename: str, lineno: int,
                    line: Optional[str] = None) -> str:
    # One line, like the errors: the library's warnings are about the
    # input (removed duplicates, a rebuilt cache), not about source lines.
    return f'pyg-mmrec: warning: {message}\n'


class _Stopped(KeyboardInterrupt):
    r"""A stop signal other than :obj:`SIGINT`, turned into the same
    orderly exit as Ctrl-C (temporary files removed, one line printed)."""
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped(signum)


def main(argv: Optional[List[str]] = None) -> int:
    r"""Entry point of ``pyg-mmrec``; returns the exit status."""
    # `timeout`, batch schedulers and `docker stop` send SIGTERM: without a
    # handler the process died at once, leaving temporary files behind.
    others = [sig for sig in STOP_SIGNALS if sig != signal.SIGINT]
    with signal_handlers(_stop, others, only_default=True):
        return _main(argv)


def _main(argv: Optional[List[str]]) -> int:
    warnings.formatwarning = _format_warning
    warnings.filterwarnings('ignore', category=DeprecationWarning)
    # Printed once per process by PyTorch for every CSR tensor user; it says
    # nothing about the run.
    warnings.filterwarnings('ignore', message='Sparse CSR tensor support')
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()  # imports the commands' modules
        # bare command: train
        args, unknown = parser.parse_known_args(argv or ['train'])
        if unknown:
            # (parse_args would name the top-level help, which lists no
            # subcommand's options.)
            prog = ' '.join(filter(None, ['pyg-mmrec', args.command]))
            raise ConfigError(f"unrecognized arguments: {' '.join(unknown)} "
                              f"(see '{prog} --help')")
        return args.func(args)
    except MMRecError as e:
        print(f'pyg-mmrec: error: {e}', file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print('pyg-mmrec: interrupted', file=sys.stderr)
        return 128 + getattr(e, 'signum', signal.SIGINT)
    except BrokenPipeError:
        return quiet_broken_pipe()
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        # Sizes beyond the machine (--set embedding_dim=..., a batch too
        # large for the GPU): one line, though not necessarily bad input.
        # (c10's "[enforce fail at alloc_cpu.cpp:N] err == 0." prefix says
        # nothing to a user.)
        detail = re.sub(r'^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?',
                        '', describe(e))
        print(f'pyg-mmrec: error: out of memory ({detail}); reduce the '
              f'batch, embedding or data sizes', file=sys.stderr)
        return EXIT_RESOURCES


if __name__ == '__main__':
    sys.exit(main())
