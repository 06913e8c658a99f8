import os
import time

import pytest

from pyg_mmrec.errors import OutputError
from pyg_mmrec.io import atomic_path, copy_file, save_json


def test_copy_file_is_a_snapshot(tmp_path):
    src, dst = tmp_path / 'last.json', tmp_path / 'best.json'
    save_json({'epoch': 1}, str(src))
    copy_file(str(src), str(dst))
    assert dst.read_text() == src.read_text()
    # The writers replace files by renaming, so the copy keeps its content.
    save_json({'epoch': 2}, str(src))
    assert '"epoch": 1' in dst.read_text()
    assert '"epoch": 2' in src.read_text()
    assert sorted(os.listdir(tmp_path)) == ['best.json', 'last.json']


def test_copy_file_falls_back_to_a_byte_copy(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError('hard links not supported')

    monkeypatch.setattr(os, 'link', no_links)
    src, dst = tmp_path / 'a.json', tmp_path / 'b.json'
    save_json([1, 2], str(src))
    copy_file(str(src), str(dst))
    assert dst.read_text() == src.read_text()
    assert not os.path.samefile(src, dst)


def test_copy_file_missing_source_leaves_nothing(tmp_path):
    src = str(tmp_path / 'missing.pt')
    with pytest.raises(FileNotFoundError) as info:
        copy_file(src, str(tmp_path / 'out.pt'))
    # The error names the missing source, not the temporary file.
    assert info.value.filename == src
    assert os.listdir(tmp_path) == []


def test_written_files_get_the_usual_mode(tmp_path):
    # mkstemp creates 0600 files; the renamed result must look like any file
    # the user creates (mode 0666 minus the umask).
    old = os.umask(0o027)
    try:
        save_json({'a': 1}, str(tmp_path / 'm.json'))
    finally:
        os.umask(old)
    assert (tmp_path / 'm.json').stat().st_mode & 0o777 == 0o640


def test_unwritable_targets_are_output_errors(tmp_path):
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'file').write_text('x')
    with pytest.raises(OutputError, match=r'folder: is a folder, not a file'):
        save_json({}, str(tmp_path / 'folder'))
    with pytest.raises(OutputError, match=r'm\.json: cannot be written: '
                       r'.*/file is a file, not a folder'):
        save_json({}, str(tmp_path / 'file' / 'm.json'))
    assert sorted(os.listdir(tmp_path)) == ['file', 'folder']


def test_write_failure_is_an_output_error_and_leaves_nothing(tmp_path):
    def fail(path):
        raise OSError(28, 'No space left on device')

    with pytest.raises(OutputError, match=r'm\.json: cannot be written '
                       r'\(No space left on device\)'):
        with atomic_path(str(tmp_path / 'm.json')) as tmp:
            fail(tmp)
    assert os.listdir(tmp_path) == []


def test_deferred_signals_delivers_after_the_block():
    import signal

    from pyg_mmrec.io import deferred_signals
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler would have run by now
            reached_end = True
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_deferred_signals_delivers_every_signal_and_skips_foreign_ones(
        monkeypatch):
    import signal

    from pyg_mmrec import io
    got = []
    pair = (signal.SIGUSR1, signal.SIGUSR2)
    monkeypatch.setattr(io, 'STOP_SIGNALS', pair)

    def record(num, frame):
        got.append(num)

    previous = {sig: signal.signal(sig, record) for sig in pair}
    try:
        with io.deferred_signals():
            for sig in (*pair, signal.SIGUSR1):
                os.kill(os.getpid(), sig)
            time.sleep(0.05)
            assert got == []
        # Every kind received is delivered, once (only the first was).
        assert got == list(pair)
        # A handler installed outside Python reads as None and cannot be
        # put back by signal.signal: it is left alone.
        real_getsignal = signal.getsignal
        monkeypatch.setattr(signal, 'getsignal', lambda sig: None if sig ==
                            signal.SIGUSR2 else real_getsignal(sig))
        with io.deferred_signals():
            assert real_getsignal(signal.SIGUSR2) is record
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
