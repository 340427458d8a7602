"""The PyTorch anchor for configs/fast/airbench94.py: Keller Jordan's own airbench94
(`airbench==0.1.8` from PyPI, `airbench.lib_airbench94.train94`) on this CPU, in float32, on the
data cifar_jax reads (issue #21, "the anchor side by side").

    python -m venv ANCHOR_VENV && ANCHOR_VENV/bin/pip install -r benchmarks/requirements-anchor.txt
    nice -n 10 ANCHOR_VENV/bin/python benchmarks/airbench_anchor.py \\
        --data_dir=PATH/cifar10-jpeg --workdir=/tmp/airbench_anchor --epochs=1 --seeds=0,1 \\
        --out=benchmarks/results/airbench_anchor_cpu.json

Nothing here is installed by cifar_jax, and nothing of airbench is copied into this repository:
this script imports the installed package and adapts it at run time. What it does:

1. Data. airbench's CifarLoader reads `<cwd>/cifar10/train.pt` and `test.pt` ({'images': uint8
   [N, 32, 32, 3] (NHWC), 'labels': int64 [N], 'classes': [str]}) and would download the official
   files when they are missing. This script writes both from the CIFAR-10 binary files that
   cifar_jax reads (`--data_dir`: a folder holding `cifar-10-batches-bin/` or that folder itself;
   records of 1 label byte + 3072 bytes CHW; data_batch_1..5 in order, then test_batch), under
   `--workdir/cifar10/`, and runs with `--workdir` as the working directory, so no download
   happens and both frameworks see the same pixels.

2. Patches (airbench hard-codes one CUDA GPU and fp16). Each is a device/dtype change only:
   - `torch.Tensor.half` and `nn.Module.half` -> `.float()`: the net's weights and the loader's
     images stay float32 (airbench: fp16 convs, fp32 BatchNorm, fp16 images). The recipe's values
     are unchanged; the arithmetic is more precise, as in cifar_jax (float32 everywhere).
     airbench's LookaheadState averages every float tensor of the state_dict
     (`dtype in (torch.half, torch.float)`), so it covers the same tensors as on the GPU (all
     weights and BatchNorm running statistics, not `num_batches_tracked`).
   - `nn.Module.cuda` -> no-op: the net stays on the CPU.
   - `airbench.utils.CifarLoader` / `airbench.lib_airbench94.CifarLoader` -> a subclass whose
     `gpu` argument defaults to 'cpu' (`torch.load(map_location=torch.device('cpu'))` instead of
     device 0); everything else is airbench's loader (normalisation by CIFAR-10's published
     mean/std, the random pre-flip and reflect pre-pad on epoch 0, a fresh random 2-px crop per
     epoch, the whole-set mirror on odd epochs, a fresh permutation per epoch, drop_last).
   - `torch.cuda.Event` -> a wall-clock event (`time.perf_counter`), `torch.cuda.synchronize`
     -> no-op: on the CPU every op has finished when it returns. train94's own time (whitening
     init + training epochs, its `total_time_seconds`) is collected from those events.
   `torch.backends.cudnn.benchmark = True` (set at import) does nothing on the CPU.

3. Runs. For each seed: `torch.manual_seed(seed)`, then `train94(epochs=E, verbose=False)` with
   every other argument airbench's default (hyp), so a reduced E gets airbench's own schedule for
   it: ceil(48 E) steps, triangular LR with int(0.23 T) warm-up steps, lookahead alpha over T,
   whitening bias trained while epoch < 3. Then airbench's `evaluate` on the test set at
   tta_level 0 and 2 (train94 only evaluates when verbose, which also evaluates after every
   epoch; the evaluations here are the same function, timed separately). Wall times, the load
   average (/proc/loadavg) and the CPU model go to `--out`.

The cifar_jax side is the normal command (benchmarks/README.md, "airbench94 against its PyTorch
anchor"); `--ours` copies those runs' test accuracies and times from their workdirs into the
same JSON.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import sys
import time

import numpy as np

import json_out  # This folder's --out writer; its cpu() names the machine.

RECORD = 1 + 3072
TRAIN_FILES = [f'data_batch_{i}.bin' for i in range(1, 6)]
TEST_FILE = 'test_batch.bin'


# ---------------------------------------------------------------------------------------------
# Data: the binary files -> airbench's train.pt / test.pt.
# ---------------------------------------------------------------------------------------------


def binary_dir(data_dir: str) -> str:
  for d in (os.path.join(data_dir, 'cifar-10-batches-bin'), data_dir):
    if os.path.exists(os.path.join(d, TEST_FILE)):
      return d
  raise SystemExit(f'error: no cifar-10-batches-bin/{TEST_FILE} under {data_dir}')


def read_records(paths):
  """uint8 images [N, 32, 32, 3] (NHWC) and int64 labels [N] from binary record files."""
  raw = np.concatenate([np.fromfile(p, np.uint8).reshape(-1, RECORD) for p in paths])
  labels = raw[:, 0].astype(np.int64)
  images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def write_airbench_data(data_dir: str, workdir: str) -> dict:
  """Writes <workdir>/cifar10/{train,test}.pt as airbench's CifarLoader reads them."""
  import torch
  src = binary_dir(data_dir)
  meta = os.path.join(src, 'batches.meta.txt')
  classes = [l.strip() for l in open(meta) if l.strip()] if os.path.exists(meta) else None
  out = os.path.join(workdir, 'cifar10')
  os.makedirs(out, exist_ok=True)
  info = {'source': os.path.basename(os.path.normpath(data_dir)), 'classes': classes}
  for name, files in (('train', TRAIN_FILES), ('test', [TEST_FILE])):
    images, labels = read_records([os.path.join(src, f) for f in files])
    torch.save({'images': torch.from_numpy(images), 'labels': torch.from_numpy(labels),
                'classes': classes}, os.path.join(out, f'{name}.pt'))
    info[name] = len(labels)
    if name == 'train':  # This copy's own statistics (airbench divides by the published ones).
      x = images.reshape(-1, 3).astype(np.float64) / 255
      info['train_mean'] = [round(v, 4) for v in x.mean(0)]
      info['train_std'] = [round(v, 4) for v in x.std(0)]
  return info


# ---------------------------------------------------------------------------------------------
# Run-time patches: airbench on the CPU in float32 (see the module docstring).
# ---------------------------------------------------------------------------------------------

ELAPSED = []  # Seconds of every (start, end) pair that airbench's timing code measured.


class CpuEvent:
  """torch.cuda.Event(enable_timing=True) for CPU code: record() takes the wall clock."""

  def __init__(self, enable_timing=True, **unused):
    self.t = None

  def record(self, stream=None):
    self.t = time.perf_counter()

  def elapsed_time(self, end):
    ms = 1e3 * (end.t - self.t)
    ELAPSED.append(ms / 1e3)
    return ms


def patch_airbench_for_cpu():
  import torch
  from torch import nn
  import airbench.utils
  import airbench.lib_airbench94

  torch.Tensor.half = lambda self, *a, **k: self.float()
  nn.Module.half = lambda self: self.float()
  nn.Module.cuda = lambda self, device=None: self
  torch.cuda.Event = CpuEvent
  torch.cuda.synchronize = lambda device=None: None

  base = airbench.utils.CifarLoader

  class CpuCifarLoader(base):
    def __init__(self, *args, gpu='cpu', **kwargs):
      super().__init__(*args, gpu=gpu, **kwargs)

  airbench.utils.CifarLoader = CpuCifarLoader
  airbench.lib_airbench94.CifarLoader = CpuCifarLoader
  return CpuCifarLoader


# ---------------------------------------------------------------------------------------------
# The cifar_jax side: its runs' results, read from their workdirs.
# ---------------------------------------------------------------------------------------------


def read_ours(workdir: str) -> dict:
  """A finished cifar_jax run's results.json (test accuracy with the config's TTA, train
  seconds) and evaluation_*.json (`launch.py --evaluate`, e.g. with augment.tta=none)."""
  found = {'workdir': os.path.basename(os.path.normpath(workdir))}
  for name in ['results.json'] + sorted(
      os.path.basename(p) for p in glob.glob(os.path.join(workdir, 'evaluation_*.json'))):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      found[name] = {k: redact(v) if isinstance(v, str) else v
                     for k, v in json.load(open(path)).items()}
  return found


# ---------------------------------------------------------------------------------------------


def redact(arg: str) -> str:
  """A command-line argument with this machine's absolute paths cut to their last part."""
  return re.sub(r'(?<![\w.])/[^\s=,]*/([^\s=,/]+)', r'\1', arg)


def load_average() -> list[float]:
  return [float(v) for v in open('/proc/loadavg').read().split()[:3]]



def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--data_dir', required=True,
                 help='folder with cifar-10-batches-bin/ (or that folder itself)')
  p.add_argument('--workdir', required=True,
                 help='scratch folder: cifar10/{train,test}.pt are written here, runs cd here')
  p.add_argument('--epochs', type=float, default=9.9, help="train94's epochs (airbench: 9.9)")
  p.add_argument('--seeds', default='0', help='comma-separated torch.manual_seed values')
  p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: default)')
  p.add_argument('--out', required=True, help='JSON file to write (rewritten after every run)')
  p.add_argument('--ours', action='append', default=[],
                 help='LABEL=WORKDIR of a finished cifar_jax run to copy into the JSON')
  p.add_argument('--ours_wall', action='append', default=[],
                 help='LABEL=SECONDS: the wall time of that cifar_jax command, as measured')
  p.add_argument('--note', default='', help='free text stored in the JSON')
  p.add_argument('--append', action='store_true',
                 help="keep the runs (and 'ours' entries) of an existing --out of the same "
                      'epochs and add these')
  args = p.parse_args(argv)

  import torch
  if args.threads:
    torch.set_num_threads(args.threads)
  workdir = os.path.abspath(args.workdir)
  args.out = os.path.abspath(args.out)  # Before the chdir below.
  os.makedirs(workdir, exist_ok=True)
  seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
  data = {}
  if seeds:  # (No seeds: only merge --ours into an existing --out.)
    t = time.perf_counter()
    data = write_airbench_data(args.data_dir, workdir)
    data['write_seconds'] = round(time.perf_counter() - t, 2)
  os.chdir(workdir)  # airbench reads ./cifar10/*.pt

  import airbench
  from airbench import lib_airbench94
  from airbench.utils import evaluate
  loader_cls = patch_airbench_for_cpu()
  from importlib.metadata import version

  result = {
      'what': 'airbench94 (airbench==%s, lib_airbench94.train94) on CPU, float32'
              % version('airbench'),
      'commands': [' '.join(['python'] + [redact(a) for a in sys.argv])],
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'cpu': json_out.cpu(), 'cpu_count': os.cpu_count(), 'torch': torch.__version__,
      'torch_threads': torch.get_num_threads(), 'python': platform.python_version(),
      'epochs': args.epochs, 'steps': int(np.ceil(48 * args.epochs)), 'data': data,
      'hyp': lib_airbench94.hyp, 'note': args.note, 'runs': [],
      'ours': {label: read_ours(wd) for label, wd in
               (s.split('=', 1) for s in args.ours)},
  }

  if args.append and os.path.exists(args.out):
    old = json.load(open(args.out))
    if old.get('epochs') != args.epochs:
      raise SystemExit(f'error: {args.out} has epochs={old.get("epochs")}, not {args.epochs}')
    result['runs'] = old.get('runs', [])
    result['ours'] = {**old.get('ours', {}), **result['ours']}
    result['data'] = result['data'] or old.get('data', {})
    result['note'] = args.note or old.get('note', '')
    result['commands'] = old.get('commands', []) + result['commands']

  def save():
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or '.', exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1, default=str)

  for label, seconds in (s.split('=', 1) for s in args.ours_wall):
    result['ours'].setdefault(label, {})['wall_seconds'] = float(seconds)
  for seed in seeds:
    del ELAPSED[:]
    load_before = load_average()
    torch.manual_seed(seed)
    c0 = time.process_time()  # CPU seconds of all threads: less load-dependent than wall time.
    t0 = time.perf_counter()
    model = lib_airbench94.train94(epochs=args.epochs, verbose=False)
    t1 = time.perf_counter()
    test_loader = loader_cls('cifar10', train=False, batch_size=2000)
    acc = evaluate(model, test_loader, tta_level=0)
    t2 = time.perf_counter()
    acc_tta = evaluate(model, test_loader, tta_level=lib_airbench94.hyp['net']['tta_level'])
    t3 = time.perf_counter()
    c3 = time.process_time()
    run = {
        'seed': seed, 'test_accuracy': acc, 'test_accuracy_tta': acc_tta,
        'train94_wall_seconds': round(t1 - t0, 2),
        'airbench_timed_seconds': round(sum(ELAPSED), 2),  # whitening init + training epochs
        'eval_seconds': round(t2 - t1, 2), 'tta_eval_seconds': round(t3 - t2, 2),
        'wall_seconds': round(t3 - t0, 2), 'cpu_seconds': round(c3 - c0, 2),
        'loadavg_before': load_before, 'loadavg_after': load_average(),
        'dtype': str(next(model.parameters()).dtype),
        # glibc's malloc settings (cifar_jax's launch.py puts its own on huge pages).
        'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
    }
    result['runs'].append(run)
    print(json.dumps(run), flush=True)
    save()
  if result['runs']:
    for k in ('test_accuracy', 'test_accuracy_tta', 'wall_seconds'):
      result['mean_' + k] = float(np.mean([r[k] for r in result['runs']]))
  save()
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
