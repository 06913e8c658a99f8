r"""The documented example runs end to end (without the text encoder, which
``test_prepare_text.py`` covers)."""
import os
import runpy
import sys

EXAMPLE = os.path.join(os.path.dirname(__file__), '..', '..', 'examples',
                       'prepare_dataset.py')


def test_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [EXAMPLE, '--out', str(tmp_path),
                                      '--no-text'])
    runpy.run_path(EXAMPLE, run_name='__main__')
    out = capsys.readouterr().out
    assert 'files byte-identical' in out
    assert (tmp_path / 'degrees.png').is_file()
    assert sorted(os.listdir(tmp_path / 'shop')) == [
        'audio_feat.npy', 'image_feat.npy', 'interactions.csv', 'items.csv',
        'processed', 'recipe.json', 'users.csv']
