import argparse
import json
import math
import os
import os.path as osp
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARKS = osp.join(ROOT, 'benchmarks')
SMALL = ['--users', '120', '--items', '80', '--edges', '1500',
         '--batch-size', '256', '--threads', '1']
# Small settings of each script, so that a bad value that slips through
# costs seconds; the bad value comes last and overrides them.
SMALL_SPMM = ['--no-tiktok', '--sizes', '20x10x50', '--threads', '1',
              '--dim', '4', '--min-time', '0', '--max-repeats', '1']
SMALL_EPOCH = ['--model', 'lightgcn', '--epochs', '1', '--threads', '1']


def run_mmssl_memory(out: str, *extra: str) -> dict:
    subprocess.run([sys.executable,
                    osp.join(ROOT, 'benchmarks', 'mmssl_memory.py'), *SMALL,
                    '--out', out, *extra], check=True, capture_output=True)
    with open(osp.join(out, 'mmssl_memory.json')) as f:
        return json.load(f)


@pytest.mark.parametrize('max_batches', [None, 2])
def test_mmssl_memory_epoch_is_measured_or_marked_extrapolated(
        tmp_path, max_batches):
    extra = [] if max_batches is None else ['--max-batches',
                                            str(max_batches)]
    result = run_mmssl_memory(str(tmp_path), *extra)
    assert result['device'] == 'cpu' and result['batch_peak_cuda_gib'] == []
    num_batches = math.ceil(1500 / 256)
    assert result['batches_per_epoch'] == num_batches
    assert result['edges'] == 1500
    steps = result['batch_seconds']
    assert len(result['batch_discriminator_seconds']) == len(steps)
    if max_batches is None:
        assert not result['extrapolated'] and 'note' not in result
        assert len(steps) == result['batches_timed'] == num_batches
        # Measured: regeneration plus the wall time of all batches.
        assert result['seconds_epoch'] >= (
            result['seconds_graph_regeneration'] + sum(steps) - 1e-6)
    else:
        assert result['extrapolated'] and 'extrapolated' in result['note']
        assert len(steps) == result['batches_timed'] == max_batches
        mean_rest = sum(steps[1:]) / len(steps[1:])
        assert result['seconds_epoch'] == pytest.approx(
            result['seconds_graph_regeneration'] + steps[0] +
            mean_rest * (num_batches - 1))
    # Both per-batch means leave out the same, first (warm-up) batch.
    disc = result['batch_discriminator_seconds']
    assert result['seconds_per_batch'] == pytest.approx(
        sum(steps[1:]) / len(steps[1:]))
    assert result['seconds_discriminator_per_batch'] == pytest.approx(
        sum(disc[1:]) / len(disc[1:]))
    assert result['per_batch_means_over'].startswith(
        f'batches 2..{len(steps)}')
    assert result['device'] == 'cpu' and result['peak_cuda_gib'] is None
    assert 0 < result['peak_rss_gib_after_data'] <= result['peak_rss_gib']
    assert osp.getsize(tmp_path / 'mmssl_memory.png') > 0


def test_generated_graph_benchmark_reports_ratio_and_phases(
        make_dataset, tiny_features):
    rng = np.random.default_rng(0)
    num_users, num_items = 30, 40
    train = sorted({(int(u), int(rng.integers(num_items)))
                    for u in range(num_users) for _ in range(4)})
    splits = {'train': train, 'val': [(0, 5)], 'test': [(1, 6)]}
    root = make_dataset('diffmm', splits=splits,
                        features=tiny_features(num_items=num_items),
                        shapes={s: (num_users, num_items) for s in splits})
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'benchmarks', 'generated_graph.py'),
         '--root', str(root), '--denoisers', '2', '--repeats', '1',
         '--screen-dtype', 'bfloat16', '--train-batch-size', '8'],
        check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert (result['num_users'], result['num_items']) == (30, 40)
    # ratio = build / train, up to the rounding of the three printed values.
    ratio, train = result['ratio'], result['train_pass_seconds']
    assert abs(ratio * train - result['graph_build_seconds']) <= (
        5e-5 * train + (ratio + 1) * 5e-4 + 1e-9)
    assert result['screen_dtype'] == 'bfloat16'
    phases = {'fold', 'hidden_steps', 'decode_topk'}
    assert set(result['build_phase_seconds']) == phases
    # The screened, hidden-space build is the literal process.
    assert result['fast_path_top_k_agreement_with_literal'] == 1.0


def load_spmm(monkeypatch):
    r"""benchmarks/spmm.py as a module (it imports its sibling common)."""
    import importlib.util
    monkeypatch.syspath_prepend(osp.join(ROOT, 'benchmarks'))
    spec = importlib.util.spec_from_file_location(
        'spmm_bench', osp.join(ROOT, 'benchmarks', 'spmm.py'))
    spmm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(spmm)
    return spmm


CPU_OUT_OF_MEMORY = RuntimeError(
    "[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: "
    "can't allocate memory")


@pytest.mark.parametrize('oom', [
    torch.OutOfMemoryError('CUDA out of memory (simulated)'),
    # The CPU allocator raises a RuntimeError, which used to end the run.
    CPU_OUT_OF_MEMORY,
], ids=['cuda', 'cpu'])
def test_spmm_backend_out_of_memory_is_skipped_not_fatal(monkeypatch, oom):
    # One backend that does not fit must not lose the others'
    # measurements (simulated on CPU).
    import argparse

    spmm = load_spmm(monkeypatch)
    real = spmm.make_conv_out

    def make_conv_out(name, *args):
        if name == 'csr':
            raise oom
        return real(name, *args)

    monkeypatch.setattr(spmm, 'make_conv_out', make_conv_out)
    args = argparse.Namespace(backends=['default', 'csr', 'coo'], dim=8,
                              max_memory_gb=None, max_seconds=5.0,
                              min_time=0.01, max_repeats=3,
                              peak_bandwidth=None)
    edge_index = torch.stack([torch.arange(30) % 10, torch.arange(30) % 7])
    rows = spmm.bench_graph('tiny', edge_index, 10, 7, args,
                            torch.device('cpu'), 1, {})
    by_backend = {(r['backend'], r['layers']): r['skipped'] for r in rows}
    assert by_backend[('csr', 1)] == by_backend[('csr', 3)] == \
        'out of memory on cpu'
    for backend in ('default', 'coo'):
        assert by_backend[(backend, 1)] is None
        assert by_backend[(backend, 3)] is None


def run_script(path, args, monkeypatch, capsys):
    r"""Runs the script :obj:`path` in this process (one torch import for
    all cases) as ``__main__``; expects bad input: exit status 2 and no
    traceback. Returns the last line of stderr."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    monkeypatch.setattr(sys, 'argv', [osp.basename(path), *args])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(path, run_name='__main__')
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    return err.splitlines()[-1]


def bench(name):
    return osp.join(BENCHMARKS, name)


@pytest.mark.parametrize('args, message', [
    (['--train-batch-size', '-5'], 'argument --train-batch-size: must be '
     "an integer >= 1, got '-5'"),
    (['--train-batch-size', '0'], 'argument --train-batch-size'),
    (['--build-batch-size', '-1'], 'argument --build-batch-size'),
    (['--k', '0'], "argument --k: must be an integer >= 1, got '0'"),
    (['--k', '6'], 'argument --k: 6 is more than the 5 items of'),
    (['--keep-rate', '0'], "argument --keep-rate: must be a number in "
     "(0, 1], got '0'"),
    (['--repeats', '0'], 'argument --repeats'),
    (['--seed', str(2**64)], "argument --seed: must be an integer in "
     "[0, 2**32), got '18446744073709551616'"),
])
def test_generated_graph_refuses_bad_options_up_front(
        monkeypatch, capsys, make_dataset, args, message):
    root = make_dataset('diffmm')
    err = run_script(bench('generated_graph.py'),
                     ['--root', str(root), '--denoisers', '1', *args],
                     monkeypatch, capsys)
    assert err.startswith('generated_graph.py: error: ' + message)


@pytest.mark.parametrize('edges, message', [
    # It used to draw pairs forever; now one line before any work.
    ('101', '--edges: 101 edges do not fit 10 users x 10 items (at most 100 '
     'distinct pairs)'),
    # Within the count, but no negative item left to sample: it used to end
    # in the sampler's traceback, with an empty --out folder left behind.
    ('100', '--edges: user 0 has interacted with every item: no negative '
     'item can be sampled; use fewer edges'),
])
def test_mmssl_memory_refuses_too_many_edges_in_one_line(tmp_path, edges,
                                                         message):
    proc = subprocess.run(
        [sys.executable, bench('mmssl_memory.py'), '--users', '10',
         '--items', '10', '--edges', edges, '--out', str(tmp_path / 'o')],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert proc.stderr.splitlines() == [f'mmssl_memory.py: error: {message}']
    assert not (tmp_path / 'o').exists()


# Bad values of each script, refused at once (parse time, or before any
# data is made): (script, bad arguments, start of the error message).
BAD_OPTIONS = [
    ('mmssl_memory.py', ['--max-batches', '0'], 'argument --max-batches: '
     "must be an integer >= 1, got '0'"),
    ('mmssl_memory.py', ['--batch-size', '0'], 'argument --batch-size'),
    ('mmssl_memory.py', ['--threads', '-2'], 'argument --threads: must be '
     "an integer >= 1, got '-2'"),
    ('mmssl_memory.py', ['--users', '0'], 'argument --users'),
    ('mmssl_memory.py', ['--device', 'gpu'], "argument --device: unknown "
     "device 'gpu'"),
    ('spmm.py', ['--device', 'gpu'], "argument --device: unknown device "
     "'gpu'"),
    ('spmm.py', ['--backends', 'bogus'], "argument --backends: unknown "
     "backend(s) 'bogus'; known: lgconv_plain, scatter, coo, csr, "
     "sparse_tensor, edge_index, default"),
    ('spmm.py', ['--backends', 'default,edgeindex'], 'argument --backends: '
     "unknown backend(s) 'edgeindex'"),
    ('spmm.py', ['--sizes', '0x0x0'], 'argument --sizes: must be '
     'USERSxITEMSxEDGES'),
    ('spmm.py', ['--sizes=-5x10x10'], 'argument --sizes: must be '
     'USERSxITEMSxEDGES'),
    ('spmm.py', ['--sizes', '10x10x1000'], "argument --sizes: '10x10x1000': "
     '1000 edges do not fit 10 users x 10 items'),
    ('spmm.py', ['--dim', '0'], "argument --dim: must be an integer >= 1, "
     "got '0'"),
    ('spmm.py', ['--dim', '-3'], 'argument --dim'),
    ('spmm.py', ['--max-repeats', '0'], 'argument --max-repeats'),
    ('spmm.py', ['--threads', '0'], 'argument --threads: must be thread '
     'counts >= 1'),
    ('spmm.py', ['--threads', 'foo'], 'argument --threads'),
    ('spmm.py', ['--no-tiktok', '--sizes'], 'nothing to measure'),
    ('spmm.py', ['--quick', '--full'], 'argument --full: not allowed with '
     'argument --quick'),
    ('train_epoch.py', ['--epochs', '0'], 'argument --epochs: must be an '
     "integer >= 1, got '0'"),
    ('train_epoch.py', ['--epochs', '-1'], 'argument --epochs'),
    ('train_epoch.py', ['--threads', '-1'], 'argument --threads: must be '
     "an integer >= 1, got '-1'"),
    ('train_epoch.py', ['--threads', '0'], 'argument --threads'),
    ('train_epoch.py', ['--tag', '../x'], 'argument --tag'),
    # The script's own options, which it used to override or ignore.
    ('train_epoch.py', ['--set', 'train.device=cuda'], '--set train.device: '
     'use --device instead'),
    ('train_epoch.py', ['--set', 'epochs=5'], '--set epochs: use --epochs '
     'instead'),
    ('train_epoch.py', ['--set', 'train.patience=2'], '--set train.patience: '
     'every epoch is timed (no early stopping)'),
    ('mmssl_memory.py', ['--seed', '-1'], "argument --seed: must be an "
     "integer in [0, 2**32), got '-1'"),
    ('mmssl_memory.py', ['--seed', str(2**32)], "argument --seed: must be "
     "an integer in [0, 2**32), got '4294967296'"),
    ('mmssl_memory.py', ['--seed', str(2**64)], 'argument --seed: must be '
     'an integer in [0, 2**32)'),
]
SMALL_ARGS = {'mmssl_memory.py': SMALL, 'spmm.py': SMALL_SPMM,
              'train_epoch.py': SMALL_EPOCH}


@pytest.mark.parametrize('script, args, message', BAD_OPTIONS)
def test_bad_options_are_refused_before_any_output(monkeypatch, capsys,
                                                   tmp_path, script, args,
                                                   message):
    err = run_script(bench(script), [*SMALL_ARGS[script], '--out',
                                     str(tmp_path / 'o'), *args],
                     monkeypatch, capsys)
    assert err.startswith(f'{script}: error: {message}')
    assert not (tmp_path / 'o').exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available')
def test_spmm_refuses_cuda_index_without_cuda(monkeypatch, capsys,
                                              tmp_path):
    err = run_script(bench('spmm.py'), [*SMALL_SPMM, '--device', 'cuda:0',
                                        '--out', str(tmp_path)],
                     monkeypatch, capsys)
    assert err == ("spmm.py: error: argument --device: device 'cuda:0' "
                   "requested but CUDA is not available (see 'spmm.py "
                   "--help')")
    assert os.listdir(tmp_path) == []


def test_spmm_explicit_missing_root_is_an_error(monkeypatch, capsys,
                                                tmp_path):
    missing = str(tmp_path / 'no-such-data')
    args = [*SMALL_SPMM[1:], '--root', missing, '--out', str(tmp_path / 'o')]
    err = run_script(bench('spmm.py'), args, monkeypatch, capsys)
    assert err == (f'spmm.py: error: {missing}: data set folder not found '
                   f'(--root; pass --no-tiktok to leave TikTok out)')
    assert not (tmp_path / 'o').exists()


def test_spmm_writes_all_outputs(monkeypatch, capsys, tmp_path):
    # --no-tiktok ignores a missing --root; the backends run in report
    # order, each once.
    monkeypatch.syspath_prepend(BENCHMARKS)
    monkeypatch.setattr(sys, 'argv', [
        'spmm.py', *SMALL_SPMM, '--root', str(tmp_path / 'nope'),
        '--backends', 'default,csr,default', '--out', str(tmp_path / 'o')])
    runpy.run_path(bench('spmm.py'), run_name='__main__')
    report = json.loads(capsys.readouterr().out)
    assert [r['backend'] for r in report['results']] == [
        'csr', 'csr', 'default', 'default']
    with open(tmp_path / 'o' / 'spmm.json') as f:
        assert json.load(f) == report
    assert sorted(os.listdir(tmp_path / 'o')) == [
        'spmm.json', 'spmm.md', 'spmm.png']


@pytest.mark.parametrize('script', sorted(SMALL_ARGS))
def test_unwritable_out_fails_before_the_run(monkeypatch, capsys, tmp_path,
                                             script):
    afile = tmp_path / 'afile'
    afile.write_text('keep me')
    args = SMALL_ARGS[script]
    err = run_script(bench(script), [*args, '--out', str(afile)],
                     monkeypatch, capsys)
    assert err == f'{script}: error: {afile}: is a file, not a folder'
    err = run_script(bench(script), [*args, '--out', str(afile / 'sub')],
                     monkeypatch, capsys)
    assert err == (f'{script}: error: {afile / "sub"}: cannot be created: '
                   f'{afile} is a file, not a folder')
    assert afile.read_text() == 'keep me'


def test_output_folder_refuses_an_output_name_that_is_a_folder(
        monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import common
    from pyg_mmrec.errors import OutputError
    (tmp_path / 'spmm.png').mkdir()
    with pytest.raises(OutputError, match='spmm.png: is a folder'):
        common.output_folder(str(tmp_path), ['spmm.json', 'spmm.png'])


def test_write_outputs_writes_all_files_or_none(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import common

    def broken(path):
        raise RuntimeError('plot failed')

    with pytest.raises(RuntimeError, match='plot failed'):
        common.write_outputs(str(tmp_path), {'a.json': '{}',
                                             'a.png': broken})
    assert os.listdir(tmp_path) == []  # no a.json, no temporary file
    common.write_outputs(str(tmp_path), {'a.json': '{}'})
    assert (tmp_path / 'a.json').read_text() == '{}\n'


def test_custom_recommender_example_bad_epochs_is_one_line(monkeypatch,
                                                           capsys):
    err = run_script(osp.join(ROOT, 'examples', 'custom_recommender.py'),
                     ['--epochs', '0'], monkeypatch, capsys)
    assert err == 'custom_recommender.py: error: epochs must be >= 1, got 0'


def test_readme_quotes_the_skip_reason_spmm_prints(monkeypatch):
    import argparse
    import importlib.util
    monkeypatch.syspath_prepend(BENCHMARKS)
    spec = importlib.util.spec_from_file_location('spmm_bench',
                                                  bench('spmm.py'))
    spmm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(spmm)
    args = argparse.Namespace(backends=['scatter'], dim=8,
                              max_memory_gb=1e-9, max_seconds=5.0,
                              min_time=0.0, max_repeats=1,
                              peak_bandwidth=None)
    edge_index = torch.stack([torch.arange(30) % 10, torch.arange(30) % 7])
    rows = spmm.bench_graph('tiny', edge_index, 10, 7, args,
                            torch.device('cpu'), 1, {})
    reason = rows[0]['skipped']
    # 'needs ~X GiB for [nnz, d] messages > Y GiB (--max-memory-gb)'
    tail = reason[reason.index(' GiB for'):reason.index('> ') + 2]
    with open(osp.join(BENCHMARKS, 'README.md')) as f:
        readme = f.read()
    assert tail in readme and ' GiB (--max-memory-gb)' in readme
    assert '> --max-memory-gb' in readme  # only in the note on old files


@pytest.mark.parametrize('name, gbs', [
    ('NVIDIA GH200 480GB', 4000.),  # 'H200' matched first, giving 4800
    ('NVIDIA H200', 4800.),
    ('NVIDIA H100 80GB HBM3', 3350.),
    ('NVIDIA H100 PCIe', 2000.),
    ('NVIDIA H800 PCIe', 2000.),
    ('NVIDIA A800 80GB PCIe', 1935.),
    ('NVIDIA A100-SXM4-80GB', 2039.),
    ('NVIDIA A100-SXM4-40GB', 1555.),
    ('Some Future GPU', None),
])
def test_spmm_peak_bandwidth_of_the_most_specific_name(
        monkeypatch, name, gbs):
    assert load_spmm(monkeypatch).bandwidth_of(name) == gbs


def test_spmm_leaves_out_cpu_time_on_cuda(monkeypatch):
    # On CUDA the process time is the host spinning in the synchronisation
    # (simulated here with a plain clock for the 'cuda' device).
    import time
    spmm = load_spmm(monkeypatch)
    monkeypatch.setattr(spmm, 'device_clock', lambda device: time.time())
    calls = []
    for device, has_cpu_time in (('cpu', True), ('cuda', False)):
        timing = spmm.time_fn(lambda: calls.append(1), torch.device(device),
                              0.0, 3, 10.0)
        assert timing['repeats'] == 3
        assert (timing['cpu_ms_median'] is not None) == has_cpu_time
    assert len(calls) == 8  # a warm-up and three timed calls, twice


SCRIPTS = [bench('spmm.py'), bench('train_epoch.py'),
           bench('generated_graph.py'), bench('mmssl_memory.py'),
           *(osp.join(ROOT, 'examples', name) for name in (
               'custom_recommender.py', 'prepare_dataset.py',
               'train_diffmm.py', 'train_mmssl.py'))]


#: An option of each script that takes a value.
VALUE_OPTION = {'spmm.py': '--out', 'train_epoch.py': '--out',
                'generated_graph.py': '--root', 'mmssl_memory.py': '--out',
                'custom_recommender.py': '--epochs',
                'prepare_dataset.py': '--out', 'train_diffmm.py': '--epochs',
                'train_mmssl.py': '--epochs'}


@pytest.mark.parametrize('path', SCRIPTS, ids=osp.basename)
@pytest.mark.parametrize('unknown', [True, False])
def test_every_script_reports_argparse_errors_in_one_line(
        monkeypatch, capsys, path, unknown):
    # argparse's own errors used to print the usage block first.
    name = osp.basename(path)
    option = VALUE_OPTION[name]
    args, message = ((['--bogus'], 'unrecognized arguments: --bogus')
                     if unknown else
                     ([option], f'argument {option}: expected one argument'))
    monkeypatch.syspath_prepend(BENCHMARKS)
    monkeypatch.setattr(sys, 'argv', [name, *args])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(path, run_name='__main__')
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"{name}: error: {message} (see '{name} --help')"]


def test_random_seed_accepts_exactly_the_training_range(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import common
    assert common.random_seed('0') == 0
    assert common.random_seed(str(2**32 - 1)) == 2**32 - 1
    for text in ('-1', str(2**32), '1.5', 'x'):
        with pytest.raises(argparse.ArgumentTypeError, match=r'in \[0, '):
            common.random_seed(text)


def test_output_folder_creates_nothing(monkeypatch, tmp_path):
    # The folder is made with the files, so a run that fails after the
    # check leaves no empty folder.
    monkeypatch.syspath_prepend(BENCHMARKS)
    import common
    out = tmp_path / 'a' / 'b'
    assert common.output_folder(str(out), ['x.json']) == str(out)
    assert os.listdir(tmp_path) == []
    common.write_outputs(str(out), {'x.json': '{}'})
    assert os.listdir(out) == ['x.json']


@pytest.mark.parametrize('users, items, edges', [
    (10, 10, 100), (30, 20, 599), (40, 50, 1500), (300, 300, 90_000),
    (400, 250, 99_990),
    # Rounds of draws (skewed ones giving way to uniform ones), no filling.
    (2000, 1000, 900_000)])
def test_synthetic_graphs_of_any_density_are_drawn(monkeypatch, users,
                                                   items, edges):
    # Near full density, rounds of random draws found the last free pairs
    # only by chance: (300, 300, 90_000) did not finish in 100 s, and
    # (400, 250, 99_990) took 15 s for uniform pairs.
    spmm = load_spmm(monkeypatch)
    import mmssl_memory
    uniform = spmm.synthetic_edges(users, items, edges)
    skewed = mmssl_memory.synthetic_interactions(
        users, items, edges, feature_dim=2)['user', 'interacts',
                                            'item'].edge_index
    for edge_index in (uniform, skewed):
        keys = edge_index[0] * items + edge_index[1]
        assert keys.numel() == edges
        assert torch.equal(keys, keys.unique())  # distinct and sorted
        assert int(edge_index[0].max()) < users
        assert int(edge_index[1].max()) < items


def test_mmssl_memory_plot_title_names_the_sizes(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import mmssl_memory
    sizes = mmssl_memory.AMAZON_BOOK
    result = {'users': sizes['num_users'], 'items': sizes['num_items'],
              'edges': sizes['num_edges']}
    assert mmssl_memory.graph_label(result) == 'Amazon-Book size'
    assert mmssl_memory.graph_label({**result, 'edges': 1500}) == \
        '52,643 users x 91,599 items x 1,500 edges'


def test_spmm_median_of_two_repeats_is_their_mean(monkeypatch):
    import time
    spmm = load_spmm(monkeypatch)
    monkeypatch.setattr(spmm, 'device_clock',
                        lambda device: time.perf_counter())
    sleeps = iter([0.0, 0.02, 0.10])  # warm-up, then two timed calls
    timing = spmm.time_fn(lambda: time.sleep(next(sleeps)),
                          torch.device('cpu'), 10.0, 2, 10.0)
    assert timing['repeats'] == 2
    # The mean of 20 and 100 ms; it used to be the slower call's.
    assert 50 < timing['ms_median'] < 90
    assert 15 < timing['ms_min'] < 50


def test_spmm_graph_out_of_memory_skips_the_graph_not_the_run(monkeypatch):
    # The graph and features themselves may not fit on the device.
    import argparse
    spmm = load_spmm(monkeypatch)
    args = argparse.Namespace(backends=['default', 'csr'], dim=8,
                              max_memory_gb=None, max_seconds=5.0,
                              min_time=0.0, max_repeats=1,
                              peak_bandwidth=None)
    edge_index = torch.stack([torch.arange(30) % 10, torch.arange(30) % 7])

    def no_room(*args, **kwargs):
        raise CPU_OUT_OF_MEMORY

    monkeypatch.setattr(spmm, 'sym_norm_bipartite', no_room)
    rows = spmm.bench_graph('tiny', edge_index, 10, 7, args,
                            torch.device('cpu'), 1, {})
    assert [(r['backend'], r['layers'], r['skipped'], r['nnz'])
            for r in rows] == [
        (name, layers, 'out of memory on cpu (graph and features)', 77)
        for name in ('csr', 'default') for layers in (1, 3)]

    def bug(*args, **kwargs):
        raise RuntimeError('shape mismatch')  # a bug keeps its traceback

    monkeypatch.setattr(spmm, 'sym_norm_bipartite', bug)
    with pytest.raises(RuntimeError, match='shape mismatch'):
        spmm.bench_graph('tiny', edge_index, 10, 7, args,
                         torch.device('cpu'), 1, {})


def test_spmm_root_that_is_a_file_is_named_so(monkeypatch, capsys,
                                              tmp_path):
    afile = tmp_path / 'afile'
    afile.write_text('')
    err = run_script(bench('spmm.py'), [*SMALL_SPMM[1:], '--root',
                                        str(afile), '--out',
                                        str(tmp_path / 'o')],
                     monkeypatch, capsys)
    assert err == (f'spmm.py: error: {afile}: is a file, not a data set '
                   f'folder (--root; pass --no-tiktok to leave TikTok out)')


def test_prepare_dataset_example_refuses_a_file_as_out(monkeypatch, capsys,
                                                       tmp_path):
    afile = tmp_path / 'afile'
    afile.write_text('keep me')
    err = run_script(osp.join(ROOT, 'examples', 'prepare_dataset.py'),
                     ['--out', str(afile)], monkeypatch, capsys)
    assert err == (f'prepare_dataset.py: error: {afile}: cannot be used: '
                   f'{afile} is a file, not a folder')
    assert afile.read_text() == 'keep me'
