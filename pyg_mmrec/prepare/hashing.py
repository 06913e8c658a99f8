r"""SHA-256 checksums of bytes, files and folders: what a ``recipe.json``
records of the inputs and outputs of :mod:`pyg_mmrec.prepare`."""
import hashlib
import os
import os.path as osp


def bytes_sha256(data: bytes) -> str:
    r"""SHA-256 of :obj:`data` (hex)."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str:
    r"""SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(folder: str) -> str:
    r"""SHA-256 over the relative paths and contents of a folder's files
    (sorted), e.g. a text model."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = osp.join(dirpath, name)
            rel = osp.relpath(path, folder).replace(osp.sep, '/')
            digest.update(rel.encode() + b'\0')
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()
