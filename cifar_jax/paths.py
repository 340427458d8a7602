"""The one file-system layer: every file a run, a report or a data reader touches goes through here.

A path is a string: a local path, or a URL of an object store (`gs://bucket/folder`). Local
paths use `os` directly; URLs go through `etils.epath` (which orbax uses too), whose `gs://`
backend is gcsfs (or TensorFlow's gfile when TensorFlow is installed). Python's `os` calls
would take `gs://b/x` for a relative local path and silently write `./gs:/b/x`, so no module
calls them on a path it was given: it calls these functions.

Crash safety differs by kind, and `write_bytes` hides the difference:
  - local: the bytes go to `<path>.tmp`, are fsynced and renamed over `path`, so a killed
    process leaves the old file or the new one, never a torn one;
  - object store: rename is a copy + delete there, not atomic, but one object upload is (the
    object appears whole when its upload completes, or not at all), so each object is written
    once under its final name. A reader of several objects (a run's files) may see the newest
    one missing; the run files are ordered so that results.json, the mark of a finished run,
    is written last.

gs:// needs the optional extra `requirements-gcs.txt` (gcsfs); without it a gs:// path is one
`MissingExtraError` naming the install command. Against an emulator (tests), gcsfs reads
STORAGE_EMULATOR_HOST and orbax's TensorStore TENSORSTORE_GCS_HTTP_URL.
"""

import hashlib
import importlib.util
import io
import logging
import os
import pathlib
import re

GCS_EXTRA = 'requirements-gcs.txt'
_URL = re.compile(r'^([a-zA-Z][a-zA-Z0-9+.-]*)://')


def _no_listing_cache() -> None:
  """gcsfs caches folder listings per process, so a process would not see objects that another
  wrote after its first look (a resumed run's checkpoints, written by TensorStore's own client;
  a test watching a run). Listings here are few and small: always ask the store."""
  try:
    import fsspec  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for protocol in ('gs', 'gcs'):
    fsspec.config.conf.setdefault(protocol, {}).setdefault('use_listings_cache', False)


_no_listing_cache()
# gcsfs warns on every call that it cannot ask the bucket's storage layout without credentials
# (the emulator, or a VM's service account without that permission); the reads still work.
logging.getLogger('gcsfs').setLevel(logging.ERROR)


class MissingExtraError(ImportError):
  """An object-store path needs an optional package that is not installed."""


def is_url(path) -> bool:
  """Whether `path` is an object-store URL (gs://...), not a local path."""
  return bool(_URL.match(os.fspath(path)))


def check_usable(path) -> None:
  """Raises MissingExtraError if `path` is a URL whose file system is not installed; at the
  start of a command, so that it fails before any work."""
  path = os.fspath(path)
  match = _URL.match(path)
  if not match:
    return
  scheme = match.group(1)
  if scheme != 'gs':
    raise MissingExtraError(f'{path}: only local paths and gs:// URLs are supported')
  try:
    import gcsfs  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    if not _installed('tensorflow'):  # etils.epath's other gs:// backend (TF's gfile).
      raise MissingExtraError(
          f'{path}: gs:// paths need gcsfs, which is not installed; install it with '
          f'`pip install -r {GCS_EXTRA}`') from None


def _installed(module: str) -> bool:
  """Whether `module` can be imported, without importing it (TensorFlow takes seconds)."""
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # ValueError: set to None in sys.modules (unimportable).
    return False


def file_digest(path, algorithm: str = 'sha256') -> str:
  """The hex digest of a file's bytes, read 1 MiB at a time (local or gs://)."""
  digest = hashlib.new(algorithm)
  with (epath(path).open('rb') if is_url(path) else open(path, 'rb')) as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def epath(path):
  """`path` as an etils.epath.Path (for libraries that take one, e.g. orbax)."""
  from etils import epath as epath_lib  # pylint: disable=g-import-not-at-top
  check_usable(path)
  return epath_lib.Path(os.fspath(path))


def join(path, *names: str) -> str:
  """`os.path.join` that keeps a URL's `//` (it does: only normpath would fold it)."""
  return os.path.join(os.fspath(path), *names)


def absolute(path) -> str:
  """A local path made absolute; a URL as it is."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def name(path) -> str:
  """The last component, ignoring a trailing slash: 'gs://b/runs/exp0/' -> 'exp0'."""
  return os.path.basename(os.fspath(path).rstrip('/')) or os.fspath(path)


def parent(path) -> str:
  return os.path.dirname(os.fspath(path).rstrip('/'))


def exists(path) -> bool:
  return epath(path).exists() if is_url(path) else os.path.exists(path)


def isdir(path) -> bool:
  return epath(path).is_dir() if is_url(path) else os.path.isdir(path)


def isfile(path) -> bool:
  if is_url(path):
    p = epath(path)
    return p.exists() and not p.is_dir()
  return os.path.isfile(path)


def listdir(path) -> list[str]:
  """The names in a folder (for a URL: the objects and prefixes directly under it)."""
  if is_url(path):
    return sorted(p.name for p in epath(path).iterdir())
  return sorted(os.listdir(path))


def makedirs(path) -> None:
  """Creates a local folder and its parents. A URL's folders are name prefixes that need no
  object, so nothing is done (gcsfs's makedirs would create a missing bucket, e.g. a typo's)."""
  if is_url(path):
    check_usable(path)
  else:
    os.makedirs(path, exist_ok=True)


def read_bytes(path) -> bytes:
  if is_url(path):
    return epath(path).read_bytes()
  with open(path, 'rb') as f:
    return f.read()


def read_text(path) -> str:
  return read_bytes(path).decode('utf-8')


def write_bytes(path, data: bytes) -> None:
  """Writes `data` so that a crash never leaves a torn `path` (see the module docstring)."""
  path = os.fspath(path)
  if is_url(path):
    with epath(path).open('wb') as f:
      f.write(data)
    return
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_text(path, text: str) -> None:
  write_bytes(path, text.encode('utf-8'))


def rename(path, target) -> None:
  """Moves a file or folder. Local: atomic. URL: copy then delete, object by object (used only to
  set a run aside, where a half-done move is redone by running the command again)."""
  if is_url(path) or is_url(target):
    epath(path).rename(epath(target))
  else:
    os.rename(path, target)


def remove(path) -> None:
  if is_url(path):
    epath(path).unlink()
  else:
    os.remove(path)


def bytes_file(path) -> io.BytesIO:
  """The whole file in memory, as a seekable file object (np.load, tarfile, Pillow)."""
  return io.BytesIO(read_bytes(path))


def as_path(path):
  """A pathlib-like object: pathlib.Path for a local path, etils.epath.Path for a URL (the same
  methods: `/`, exists, is_dir, is_file, iterdir, open, read_bytes), for readers written against
  pathlib."""
  return epath(path) if is_url(path) else pathlib.Path(path)
