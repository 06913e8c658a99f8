import os

import pytest

from pyg_mmrec.io import copy_file, save_json


def test_copy_file_is_a_snapshot(tmp_path):
    src, dst = str(tmp_path / 'last.json'), str(tmp_path / 'best.json')
    save_json({'epoch': 1}, src)
    copy_file(src, dst)
    assert open(dst).read() == open(src).read()
    # The writers replace files by renaming, so the copy keeps its content.
    save_json({'epoch': 2}, src)
    assert '"epoch": 1' in open(dst).read()
    assert '"epoch": 2' in open(src).read()
    assert sorted(os.listdir(tmp_path)) == ['best.json', 'last.json']


def test_copy_file_falls_back_to_a_byte_copy(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError('hard links not supported')

    monkeypatch.setattr(os, 'link', no_links)
    src, dst = str(tmp_path / 'a.json'), str(tmp_path / 'b.json')
    save_json([1, 2], src)
    copy_file(src, dst)
    assert open(dst).read() == open(src).read()
    assert not os.path.samefile(src, dst)


def test_copy_file_missing_source_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        copy_file(str(tmp_path / 'missing.pt'), str(tmp_path / 'out.pt'))
    assert os.listdir(tmp_path) == []
