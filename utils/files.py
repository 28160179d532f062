"""Atomic file writing: a reader (or a crash) never sees a half-written file."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb", **kwargs):
    """Open a temporary file beside `path`; rename it over `path` only when the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary_path = tempfile.mkstemp(
        dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, mode, **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_path, path)
    except BaseException:
        if os.path.exists(temporary_path):
            os.remove(temporary_path)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path with the same extension for writers that take a file name
    (Keras' save_weights chooses the format by extension); it replaces `path` on success."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, extension = os.path.splitext(os.path.basename(path))
    temporary_path = os.path.join(folder, ".{}.{}.tmp{}".format(base, os.getpid(), extension))
    try:
        yield temporary_path
        os.replace(temporary_path, path)
    finally:
        if os.path.exists(temporary_path):
            os.remove(temporary_path)
