r"""The checksums a recipe records."""
import hashlib

from pyg_mmrec.prepare import features, hashing


def test_file_and_tree_checksums(tmp_path):
    data = b'x' * ((1 << 20) + 3)  # more than one block
    (tmp_path / 'model' / 'sub').mkdir(parents=True)
    (tmp_path / 'model' / 'sub' / 'w.bin').write_bytes(data)
    path = str(tmp_path / 'model' / 'sub' / 'w.bin')
    assert hashing.file_sha256(path) == hashing.bytes_sha256(data) == \
        hashlib.sha256(data).hexdigest()
    expected = hashlib.sha256(
        b'sub/w.bin\0' + hashing.bytes_sha256(data).encode()).hexdigest()
    assert hashing.tree_sha256(str(tmp_path / 'model')) == expected
    # Still importable from where they were defined before.
    assert features.file_sha256 is hashing.file_sha256
    assert features.tree_sha256 is hashing.tree_sha256
