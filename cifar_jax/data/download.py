"""Downloads the official CIFAR-10 tarball into the Keras cache, verified; no TensorFlow needed.

What: the python version, cifar-10-python.tar.gz, from its official URL, as
`keras.datasets.cifar10.load_data()` and torchvision fetch it, checked against the md5 published
on https://www.cs.toronto.edu/~kriz/cifar.html. It is saved under Keras 3's own name for that
download, <keras home>/datasets/cifar-10-batches-py-target_archive, so Keras and cifar_jax each
reuse the other's copy: sources.py's Keras-cache search reads it (with the restricted reader in
cifar10.py), and Keras checks its own hash of it and extracts it.

Why this way: the bytes stream into a temp file in the cache folder whose name holds this host
and process id, the md5 is computed while streaming, and only a file whose md5 matches is
renamed (atomically) to the final name; every failure deletes the temp file. So an interrupted,
truncated or wrong download never leaves a file a later run would trust. Processes sharing a
cache folder (several per host, or hosts sharing a home over NFS) take turns on a lock file
beside it: the first downloads, the others wait, then read its file. Where the file system
cannot lock, each process downloads to its own temp name and the renames, of identical
verified bytes, are atomic, so the outcome is the same.

For tests only, $CIFAR_JAX_CIFAR10_URL and $CIFAR_JAX_CIFAR10_MD5 replace the URL and the md5
(a local server and a tarball built by the test); leave them unset otherwise.
"""

import contextlib
import hashlib
import http.client
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cifar_jax.data.cifar10 import DataError

logger = logging.getLogger(__name__)

OFFICIAL_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
OFFICIAL_MD5 = 'c58f30108f718f92721af3b95e74349a'  # Published beside the URL; torchvision's too.
URL_ENV_VAR = 'CIFAR_JAX_CIFAR10_URL'  # Tests only.
MD5_ENV_VAR = 'CIFAR_JAX_CIFAR10_MD5'  # Tests only.
# keras.datasets.cifar10 calls get_file(fname='cifar-10-batches-py-target', extract=True), which
# keeps the downloaded tarball as '<fname>_archive' (Keras 3).
CACHE_NAME = 'cifar-10-batches-py-target_archive'
_CHUNK_BYTES = 1 << 20
_TIMEOUT_SECONDS = 60.0  # Per connect and per read: a stalled server fails, a slow one does not.

FileIdentity = tuple[int, int, int, int]  # (device, inode, size, mtime_ns) of a file.


def keras_datasets_dir() -> Path:
  """Where Keras caches datasets: $KERAS_HOME/datasets, else ~/.keras/datasets."""
  return Path(os.environ.get('KERAS_HOME') or Path.home() / '.keras').expanduser() / 'datasets'


def cache_path() -> Path:
  """Where a download is kept (and where Keras 3 keeps its own)."""
  return keras_datasets_dir() / CACHE_NAME


def url_and_md5() -> tuple[str, str]:
  """The URL to fetch and the md5 it must have: the official ones unless a test overrides them."""
  return (os.environ.get(URL_ENV_VAR) or OFFICIAL_URL,
          (os.environ.get(MD5_ENV_VAR) or OFFICIAL_MD5).lower())


def file_identity(path: Path) -> FileIdentity | None:
  """What tells one file at `path` from a later one written there; None if there is none."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def fetch(dest: Path | None = None, stale: FileIdentity | None = None) -> Path:
  """Downloads and verifies CIFAR-10 into `dest` (default `cache_path()`), unless it is there.

  Args:
    dest: the final path; its folder is created.
    stale: `file_identity` of a copy at `dest` the caller found unreadable; that one is replaced.
      Any other file at `dest` (e.g. written by another process while this one waited) is kept.

  Returns:
    `dest`, holding a tarball with the expected md5 (or a copy some other process put there).

  Raises:
    DataError: the download failed (unreachable, HTTP error, cut off, wrong md5, disk); the
      message names the URL, what happened and how to get the data by hand.
  """
  url, md5 = url_and_md5()
  dest = Path(dest or cache_path())
  try:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.with_name(dest.name + '.lock')):
      present = file_identity(dest)
      if present is not None and present != stale:
        logger.info('CIFAR-10 is already in %s (another process downloaded it).', dest)
        return dest
      _download(url, md5, dest)
  except OSError as e:  # The folder or its lock file cannot be made (_download raises DataError).
    raise DataError(f'cannot write in the cache folder {dest.parent} for the CIFAR-10 download '
                    f'({e}). Set $KERAS_HOME to a writable folder. '
                    f'{_by_hand(url, md5, dest)}') from e
  return dest


def _by_hand(url: str, md5: str, dest: Path) -> str:
  return (f'To get it by hand, download {url} (md5 {md5}) where there is network and set '
          f'$CIFAR10_DIR (or --config.data.dir) to that file, or copy it to {dest}.')


@contextlib.contextmanager
def _exclusive(lock_path: Path):
  """Holds an exclusive lock on `lock_path` (created, never deleted) where the OS offers one.

  The lock file stays: deleting it would let a waiting process and a newcomer lock two different
  files. It is empty and nothing reads it as data.
  """
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # Windows: no flock; unique temp names keep concurrent downloads safe.
    yield
    return
  with open(lock_path, 'a') as lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logger.info('Another process is downloading CIFAR-10 into %s; waiting for it.',
                  lock_path.parent)
      fcntl.flock(lock_file, fcntl.LOCK_EX)
    except OSError as e:  # E.g. ENOLCK on a file system without locks: go on unlocked.
      logger.warning('Cannot lock %s (%s); downloading without waiting for other processes.',
                     lock_path, e)
    yield  # Closing the file releases the lock.


def _download(url: str, md5: str, dest: Path):
  """Streams `url` into a temp name beside `dest`, and renames it to `dest` if the md5 matches."""
  partial = dest.with_name(f'{dest.name}.{socket.gethostname()}.{os.getpid()}.partial')
  received, expected_size = 0, None
  try:
    logger.info('Downloading CIFAR-10 from %s into %s.', url, dest)
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response, \
         open(partial, 'wb') as out:
      expected_size = _content_length(response)
      digest = hashlib.md5()
      progress = _Progress(dest.name, expected_size)
      try:
        while chunk := response.read(_CHUNK_BYTES):
          out.write(chunk)
          digest.update(chunk)
          received += len(chunk)
          progress.update(received)
      finally:
        progress.close()
    # http.client's read(n) ends quietly, not with IncompleteRead, when the connection closes
    # before Content-Length bytes came: count them.
    if expected_size is not None and received != expected_size:
      raise DataError(f'the transfer from {url} was cut off after {received:,} of '
                      f'{expected_size:,} bytes; the partial file was deleted and nothing was '
                      f'cached. Run again to retry. {_by_hand(url, md5, dest)}')
    if digest.hexdigest() != md5:
      raise DataError(f'the {received:,} bytes downloaded from {url} have md5 '
                      f'{digest.hexdigest()}, not the published {md5}: a corrupt, truncated '
                      f'or different file. It was deleted and nothing was cached. '
                      f'{_by_hand(url, md5, dest)}')
    os.replace(partial, dest)  # Atomic: `dest` is either absent or complete and verified.
    logger.info('Downloaded CIFAR-10 (%.1f MB, md5 verified) into %s in %.1fs.', received / 1e6,
                dest, time.perf_counter() - start)
  except urllib.error.HTTPError as e:  # Before URLError: it is one.
    raise DataError(f'{url} answered HTTP {e.code} {e.reason}; nothing was cached. '
                    f'{_by_hand(url, md5, dest)}') from e
  except urllib.error.URLError as e:
    raise DataError(f'cannot reach {url} ({e.reason}); nothing was cached. Check the network '
                    f'(and a proxy, via $https_proxy). {_by_hand(url, md5, dest)}') from e
  except (OSError, http.client.HTTPException) as e:  # Reset, timeout, disk full, bad response.
    got = f' after {received:,} of {expected_size or "?"} bytes' if received else ''
    raise DataError(f'downloading {url} into {dest} failed{got} '
                    f'({type(e).__name__}: {e}); nothing was cached. Run again to retry. '
                    f'{_by_hand(url, md5, dest)}') from e
  finally:
    partial.unlink(missing_ok=True)  # Also on Ctrl-C: no partial file outlives this process.


def _content_length(response) -> int | None:
  """The size the server announced, if any (a malformed header counts as none: md5 decides)."""
  try:
    return int(response.headers.get('Content-Length') or 0) or None
  except ValueError:
    return None


class _Progress:
  """`name: 41.9/170.5 MB [=====>........] 25% 11.2 MB/s` on stderr, only on a terminal.

  (cifar_jax/train/progress.py has the training bar; the data package imports nothing from train.)
  """

  def __init__(self, name: str, total: int | None, interval: float = 0.25, width: int = 30):
    self.name, self.total, self.interval, self.width = name, total, interval, width
    self.enabled = sys.stderr.isatty()
    self.start = self._last_draw = time.perf_counter()
    self._drawn = False

  def update(self, received: int):
    now = time.perf_counter()
    if not self.enabled or (now - self._last_draw < self.interval and received != self.total):
      return
    self._last_draw, self._drawn = now, True
    rate = received / 1e6 / max(now - self.start, 1e-9)
    if self.total:
      done = min(self.width, self.width * received // self.total)
      bar = '=' * max(done - 1, 0) + ('>' if done < self.width else '=') + '.' * (self.width - done)
      text = (f'{received / 1e6:.1f}/{self.total / 1e6:.1f} MB [{bar}] '
              f'{100 * received // self.total}%')
    else:
      text = f'{received / 1e6:.1f} MB'
    sys.stderr.write(f'\r{self.name}: {text} {rate:.1f} MB/s ')
    sys.stderr.flush()

  def close(self):
    if self._drawn:
      sys.stderr.write('\n')
      sys.stderr.flush()
