"""cifar_jax's train step against Keras 3's on the same jax/XLA, compiled program against
compiled program: where the time of a config's step (default exp11) goes on each side.

    python benchmarks/exp11_vs_keras.py --hlo_dir=/tmp/exp11_hlo --out=/tmp/exp11_vs_keras.json
    python benchmarks/exp11_vs_keras.py --batch_size=128 --variants=keras,ours --profile \
        --hlo_dir=/tmp/exp11_hlo  # a few minutes

One process, so both sides run under the same XLA flags (cifar_jax's XLA:CPU defaults, which
the suite's Keras children get too) and the same malloc, and their steps interleave, so a
change in the machine's load hits them alike. The config's batch size (--batch_size to change
it) of random uint8 images, or CIFAR-10's first training images (--data_dir). Variants
(--variants, comma-separated):

  keras          Keras's own train step (`model.train_step`, jitted with the state donated, as
                 fit's train function is), the model built from the config as
                 benchmarks/suite.py builds it (same initial weights), on images / 255 in float32
  keras_highest  the same, traced under jax.default_matmul_precision('highest')
  ours           cifar_jax's `steps.train_step`, one step per call, as the CPU loop runs it
                 (model.conv_grad=auto, the config's on-device augmentation)
  ours_noaug     the same without the augmentation (Keras's step has none: fit gets augmented
                 images from the host)
  ours_default   the same with model.matmul_precision='default' (the config says 'highest')
  ours_keras_bn  the same with BatchNorm in Keras's formulation (`keras_form_batch_norm`: the
                 statistics as jnp.mean and jnp.var, then x * inv + (beta - mean * inv)) in
                 place of flax's nn.BatchNorm ((x - mean) * inv + beta)
  ours_xla / ours_conv / ours_matmul   model.conv_grad=xla / conv / matmul (for 3x3
                 kernels 'conv' is what 'auto' picks: the same program as ours)
  ours_onednn    model.conv_backend='onednn' (oneDNN's convolutions, custom calls: the profile
                 names them after their custom-call instructions)
  ours_loop      --loop_steps steps per call in a lax.fori_loop (train.device_loop=True's
                 program); reported per step

Per variant: XLA's optimised HLO (to --hlo_dir/<variant>.hlo.txt), the count of each opcode
(top level and inside fusions), convolutions by dimension labels, window and output shape,
the bytes transposes and copies write, the MiB each class of top-level op reads and writes
(a static measure of memory passes), XLA's buffer sizes, and with --profile the seconds per op
kind of one profiled step (XLA:CPU's thunk trace events, named after the HLO instructions; not
for ours_loop). Then the steps, timed interleaved: --reps rounds over all variants after a
warm-up step each; median and fastest wall seconds per step, median CPU seconds (this process,
all threads: with other work on the cores, wall time follows their share, CPU time much less)
and minor page faults per step (glibc maps XLA's temporaries afresh for every step).
"""

import argparse
import collections
import contextlib
import glob
import gzip
import json
import os
import re
import resource
import statistics
import sys
import time

import json_out  # This folder's --out writer (local or gs://).
from config_file import load_config, step_batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault('KERAS_BACKEND', 'jax')

VARIANTS = ('keras', 'keras_highest', 'ours', 'ours_noaug', 'ours_default', 'ours_keras_bn',
            'ours_xla', 'ours_conv', 'ours_matmul', 'ours_onednn', 'ours_loop')
DEFAULT_VARIANTS = ('keras', 'ours', 'ours_noaug', 'ours_keras_bn', 'ours_xla', 'ours_loop')
CONV_MODES = {'ours_xla': 'xla', 'ours_conv': 'conv', 'ours_matmul': 'matmul'}
NO_AUGMENT = {'rotation_range': 0.0, 'width_shift_range': 0.0, 'height_shift_range': 0.0,
              'horizontal_flip': False, 'vertical_flip': False, 'shear_range': 0.0,
              'zoom_range': (0.0, 0.0), 'channel_shift_range': 0.0, 'brightness_range': None}


# --- The two sides' programs -------------------------------------------------------------------

class Step:
  """A compiled step and its state: `run()` does one call and waits for it."""

  def __init__(self, name, compiled, state, args, steps_per_call=1):
    self.name, self.compiled, self.state, self.args = name, compiled, state, args
    self.steps_per_call = steps_per_call

  def run(self):
    import jax  # pylint: disable=g-import-not-at-top
    self.state, out = self.compiled(self.state, *self.args)
    jax.block_until_ready(out)


def keras_form_batch_norm():
  """A flax module with nn.BatchNorm's arguments and variables that computes as Keras 3's
  BatchNormalization does on jax (keras/src/backend/jax/nn.py `moments`, `batch_normalization`)."""
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top

  class KerasFormBatchNorm(nn.Module):
    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-3
    use_bias: bool = True
    use_scale: bool = True
    use_fast_variance: bool = False  # Accepted for nn.BatchNorm's signature; unused.
    dtype: object = None

    @nn.compact
    def __call__(self, x):
      features = (x.shape[-1],)
      ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros(features, jnp.float32))
      ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones(features, jnp.float32))
      scale = self.param('scale', nn.initializers.ones, features) if self.use_scale else None
      bias = self.param('bias', nn.initializers.zeros, features) if self.use_bias else None
      if self.use_running_average:
        mean, var = ra_mean.value, ra_var.value
      else:
        axes = tuple(range(x.ndim - 1))
        mean, var = jnp.mean(x, axes), jnp.var(x, axes)
        if not self.is_initializing():
          ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
          ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
      inv = lax.rsqrt(var + self.epsilon)
      if scale is not None:
        inv = inv * scale
      res = -mean * inv
      if bias is not None:
        res = res + bias
      return x * inv + res

  return KerasFormBatchNorm


@contextlib.contextmanager
def batch_norm_class(cls):
  """flax.linen.BatchNorm is `cls` while a model is made and traced (layer_kinds reads it)."""
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  previous = nn.BatchNorm
  nn.BatchNorm = cls
  try:
    yield
  finally:
    nn.BatchNorm = previous


def build_ours(variant: str, config_path: str, batch_size: int, images, labels,
               loop_steps: int) -> Step:
  import jax  # pylint: disable=g-import-not-at-top
  from cifar_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from cifar_jax.models import create_model  # pylint: disable=g-import-not-at-top
  from cifar_jax.train import create_train_state, optimizers, steps  # pylint: disable=g-import-not-at-top

  config = load_config(config_path)
  config.train.batch_size = batch_size
  if variant == 'ours_noaug':
    for key, value in NO_AUGMENT.items():
      if key in config.augment:
        config.augment[key] = value
  if variant == 'ours_default':
    config.model.matmul_precision = 'default'
  config.model.conv_grad = CONV_MODES.get(variant, 'auto')
  config.model.conv_backend = 'onednn' if variant == 'ours_onednn' else 'xla'
  if variant == 'ours_onednn':
    from cifar_jax.models import onednn_conv  # pylint: disable=g-import-not-at-top
    onednn_conv.load()
  tx = optimizers.make_optimizer(config.optim, 100, 100 * config.train.epochs)
  with contextlib.ExitStack() as stack:
    if variant == 'ours_keras_bn':
      stack.enter_context(batch_norm_class(keras_form_batch_norm()))
    state = create_train_state(config, create_model(config.model), tx,
                               pipeline.make_input_pipeline(config, images))
    batch = step_batch(config, images, labels)
    if variant == 'ours_loop':
      def loop(state, batch):
        state = jax.lax.fori_loop(0, loop_steps, lambda _, s: steps.train_step(s, batch)[0],
                                  state)
        return state, state.step
      compiled = jax.jit(loop, donate_argnums=0).lower(state, batch).compile()
      return Step(variant, compiled, state, (batch,), steps_per_call=loop_steps)
    compiled = jax.jit(steps.train_step, donate_argnums=0).lower(state, batch).compile()
    return Step(variant, compiled, state, (batch,))


class KerasStep(Step):
  """Keras's train_step(state, data) -> (logs, state)."""

  def run(self):
    import jax  # pylint: disable=g-import-not-at-top
    logs, self.state = self.compiled(self.state, *self.args)
    jax.block_until_ready((logs, self.state))


def build_keras(variant: str, config_path: str, batch_size: int, images, labels) -> Step:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import suite  # pylint: disable=g-import-not-at-top  # This folder's: the suite's Keras model.

  config = load_config(config_path)
  config.train.batch_size = batch_size
  model = suite.build_keras(config, 'jax')
  x = jax.device_put(images.astype(np.float32) / np.float32(255))
  y = jax.device_put(labels)
  model._symbolic_build(data_batch=(x, y))  # pylint: disable=protected-access
  state = model._get_jax_state(  # pylint: disable=protected-access
      trainable_variables=True, non_trainable_variables=True, optimizer_variables=True,
      metrics_variables=True)
  precision = (jax.default_matmul_precision('highest') if variant == 'keras_highest'
               else contextlib.nullcontext())
  with precision:
    compiled = jax.jit(model.train_step, donate_argnums=0).lower(state, (x, y)).compile()
  return KerasStep(variant, compiled, state, ((x, y),))


def build(variant, config_path, batch_size, images, labels, loop_steps) -> Step:
  if variant.startswith('keras'):
    return build_keras(variant, config_path, batch_size, images, labels)
  return build_ours(variant, config_path, batch_size, images, labels, loop_steps)


# --- The optimised HLO -------------------------------------------------------------------------

INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?(%?[\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\((.*)$')
COMPUTATION = re.compile(r'^(?:ENTRY\s+)?(%?[\w.\-]+)\s.*\{\s*$')
SHAPE = re.compile(r'(f32|f16|bf16|s32|u32|u8|s8|pred|u64|s64|f64)\[([\d,]*)\]')
BYTES = {'f32': 4, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'u8': 1, 's8': 1, 'pred': 1,
         'u64': 8, 's64': 8, 'f64': 8}


def shape_bytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in SHAPE.findall(shape_text):
    n = 1
    for d in filter(None, dims.split(',')):
      n *= int(d)
    total += n * BYTES[dtype]
  return total


def parse_hlo(text: str) -> dict:
  """instruction name -> (computation, opcode, shape text, rest of line) of every instruction."""
  instructions, computation = {}, None
  for line in text.splitlines():
    if not line.startswith(' '):
      match = COMPUTATION.match(line)
      computation = match.group(1).lstrip('%') if match else computation
      continue
    match = INSTRUCTION.match(line)
    if match:
      name, shape, opcode, rest = match.groups()
      instructions[name.lstrip('%')] = (computation, opcode, shape, rest)
  return instructions


def fused_computations(instructions) -> set:
  """Names of the computations that fusions call (their ops run inside one fused kernel)."""
  called = set()
  for _, opcode, _, rest in instructions.values():
    if opcode == 'fusion':
      match = re.search(r'calls=%?([\w.\-]+)', rest)
      if match:
        called.add(match.group(1))
  return called


def conv_key(shape: str, rest: str) -> str:
  """A convolution as 'dim_labels window -> output shape (the jax op it came from)'."""
  labels = re.search(r'dim_labels=([\w>\-]+)', rest)
  window = re.search(r'window=\{([^}]*)\}', rest)
  op_name = re.search(r'op_name="([^"]*)"', rest)
  where = '/'.join(op_name.group(1).split('/')[-2:]) if op_name else ''
  return (f"{labels.group(1) if labels else '?'} {window.group(1) if window else ''} -> "
          f"{shape.split('{')[0]} ({where})")


def hlo_summary(text: str) -> dict:
  """Counts of the optimised program: opcodes at the top level (what runs as a thunk) and
  inside fusions, fusion kinds by name, convolutions by dimension labels and shapes, and the
  bytes the top-level transposes and copies (plus transpose fusions) write."""
  instructions = parse_hlo(text)
  fused = fused_computations(instructions)
  top, inside = collections.Counter(), collections.Counter()
  fusions, convolutions = collections.Counter(), collections.Counter()
  moved = collections.Counter()
  for name, (computation, opcode, shape, rest) in instructions.items():
    if opcode in ('parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast'):
      continue
    (inside if computation in fused else top)[opcode] += 1
    if computation in fused:
      continue
    if opcode == 'fusion':
      fusions[re.sub(r'\.\d+$', '', name)] += 1
    if opcode == 'convolution':
      convolutions[conv_key(shape, rest)] += 1
    if opcode in ('transpose', 'copy') or (opcode == 'fusion' and 'transpose' in name):
      moved[opcode if opcode != 'fusion' else 'transpose fusion'] += shape_bytes(shape)
  return {'top_level': dict(top.most_common()), 'in_fusions': dict(inside.most_common()),
          'fusions': dict(fusions.most_common()), 'convolutions': dict(convolutions),
          'moved_mib': {k: v / 2**20 for k, v in moved.items()},
          'traffic_mib': traffic_mib(instructions, fused)}


def traffic_class(name: str, opcode: str) -> str:
  if opcode in ('convolution', 'dot'):
    return opcode
  if opcode == 'copy' or 'transpose' in name or 'copy' in name:
    return 'transpose/copy'
  if 'reduce' in name:
    return 'reduction'
  return 'elementwise/other'


def traffic_mib(instructions, fused) -> dict:
  """MiB each class of top-level op reads and writes (operands + result), a static measure of
  memory passes: on a CPU with little bandwidth per core, what the ops other than convolutions
  and dots cost goes with it. Ops inside loop bodies count once."""
  traffic = collections.Counter()
  skip = ('parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast', 'while', 'call',
          'conditional')
  for name, (computation, opcode, shape, rest) in instructions.items():
    if computation in fused or opcode in skip:
      continue
    operands = re.findall(r'%([\w.\-]+)', rest.split('), ')[0])
    total = shape_bytes(shape) + sum(shape_bytes(instructions[o][2]) for o in operands
                                     if o in instructions)
    traffic[traffic_class(name, opcode)] += total
  return {k: round(v / 2**20) for k, v in traffic.most_common()}


def memory_mib(compiled) -> dict:
  """XLA's buffer sizes of a compiled program (MiB): arguments, outputs, temporaries."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # Not every backend reports it.
    return {}
  names = {'argument': 'argument_size_in_bytes', 'output': 'output_size_in_bytes',
           'alias': 'alias_size_in_bytes', 'temp': 'temp_size_in_bytes'}
  return {k: getattr(analysis, v, 0) / 2**20 for k, v in names.items()}


# --- Per-op time from XLA:CPU's thunk trace events ----------------------------------------------

def op_kind(name: str, instructions) -> str:
  """What a trace event's HLO instruction is: 'convolution', 'fusion:<name>', its opcode."""
  entry = instructions.get(name)
  if entry is None:
    return ''
  opcode = entry[1]
  if opcode == 'fusion':
    return 'fusion:' + re.sub(r'\.\d+$', '', name)
  return opcode


CONTAINERS = ('while', 'call', 'conditional')


def profile_step(step: Step, directory: str, instructions) -> dict:
  """Seconds per op kind, and the ten slowest convolutions, of one profiled call of `step`.

  A thunk's trace event covers its launch; an async one (convolutions, dots) ends at its
  'end: <op>' event, so an op runs from its event's start to that end. XLA:CPU runs
  independent thunks concurrently: each moment of the step is split evenly between the ops
  running then (a while loop's own span is left to the ops of its body), so the seconds add
  up to the wall time spent in ops."""
  import jax  # pylint: disable=g-import-not-at-top
  with jax.profiler.trace(directory, create_perfetto_trace=True):
    step.run()
  trace = sorted(glob.glob(os.path.join(directory, 'plugins/profile/*/perfetto_trace.json.gz')))
  events = json.load(gzip.open(trace[-1]))
  events = [e for e in (events['traceEvents'] if isinstance(events, dict) else events)
            if e.get('ph') == 'X']
  ends = collections.defaultdict(list)
  for event in events:
    if event['name'].startswith('end: '):
      ends[event['name'][5:]].append(event['ts'])
  spans = []  # (start, end, kind, convolution key or '')
  for event in events:
    kind = op_kind(event['name'], instructions)
    if not kind or kind in CONTAINERS or event['name'].startswith('end: '):
      continue
    start = event['ts']
    end = next((t for t in ends[event['name']] if t >= start), None)
    end = max(start + event.get('dur', 0), end if end is not None else start)
    _, _, shape, rest = instructions[event['name']]
    spans.append((start, end, kind, conv_key(shape, rest) if kind == 'convolution' else ''))
  boundaries = sorted({t for span in spans for t in span[:2]})
  starting = collections.defaultdict(list)
  for i, span in enumerate(spans):
    starting[span[0]].append(i)
  kinds, convolutions, active = collections.Counter(), collections.Counter(), set()
  scale = 1e-6 / step.steps_per_call
  for t, t_next in zip(boundaries, boundaries[1:]):
    active = {i for i in active if spans[i][1] > t} | set(starting[t])
    active = {i for i in active if spans[i][1] > t}
    for i in active:
      share = (t_next - t) * scale / len(active)
      kinds[spans[i][2]] += share
      if spans[i][3]:
        convolutions[spans[i][3]] += share
  return {'op_seconds': sum(kinds.values()), 'by_kind': dict(kinds.most_common()),
          'slowest_convolutions': dict(convolutions.most_common(10))}


# --- Main ----------------------------------------------------------------------------------------

def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/exp11.py')
  parser.add_argument('--batch_size', type=int, default=0, help="0: the config's")
  parser.add_argument('--variants', default=','.join(DEFAULT_VARIANTS),
                      help=f'comma-separated, of {", ".join(VARIANTS)}')
  parser.add_argument('--reps', type=int, default=3, help='timed rounds over the variants')
  parser.add_argument('--loop_steps', type=int, default=3, help="ours_loop's steps per call")
  parser.add_argument('--hlo_dir', default='', help='where the optimised HLO (and profiles) go')
  parser.add_argument('--profile', action='store_true', help='time per op kind (one step each)')
  parser.add_argument('--data_dir', default='',
                      help="CIFAR-10's folder (holding cifar-10-batches-bin): train on its first "
                           'images instead of random ones')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  variants = [v for v in args.variants.split(',') if v]
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown:
    print(f'error: --variants: unknown {unknown}; known: {", ".join(VARIANTS)}', file=sys.stderr)
    sys.exit(2)
  if args.reps < 1 or args.loop_steps < 1 or args.batch_size < 0:
    print('error: --reps and --loop_steps must be at least 1, --batch_size at least 0',
          file=sys.stderr)
    sys.exit(2)
  if not os.path.isfile(os.path.join(REPO, args.config)):
    print(f'error: --config: no file {args.config!r} (a path like configs/exp11.py)',
          file=sys.stderr)
    sys.exit(2)
  if args.profile and not args.hlo_dir:
    print('error: --profile writes its traces under --hlo_dir: give one', file=sys.stderr)
    sys.exit(2)
  batches_file = os.path.join(args.data_dir, 'cifar-10-batches-bin', 'data_batch_1.bin')
  if args.data_dir and not os.path.isfile(batches_file):
    print(f'error: --data_dir: no {batches_file}; give the folder that holds '
          'cifar-10-batches-bin', file=sys.stderr)
    sys.exit(2)
  json_out.check(args.out)

  json_out.use_cifar_jax_xla_flags()  # For both sides.
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  config = load_config(args.config)
  batch_size = args.batch_size or config.train.batch_size
  if args.data_dir:  # The official binary layout: a label byte, then the image as [C, H, W].
    records = np.fromfile(batches_file, np.uint8).reshape(-1, 1 + 32 * 32 * 3)
    records = records[np.arange(batch_size) % len(records)]
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    labels = records[:, 0].astype(np.int32)
  else:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, *config.model.input_shape), dtype=np.uint8)
    labels = rng.integers(0, 10, (batch_size,), dtype=np.int32)
  result = {'cpu': json_out.cpu(), 'config': args.config, 'batch_size': batch_size, 'jax': jax.__version__,
            'data': 'cifar10 data_batch_1' if args.data_dir else 'random uint8',
            'xla_flags': os.environ.get('XLA_FLAGS', ''), 'load_average_start': os.getloadavg(),
            'variants': {}}
  print(f'{args.config}, batch {batch_size}, XLA_FLAGS={result["xla_flags"]!r}, '
        f'load {os.getloadavg()[0]:.1f}', flush=True)

  built = {}
  for variant in variants:
    start = time.perf_counter()
    step = build(variant, args.config, batch_size, images, labels, args.loop_steps)
    compile_seconds = time.perf_counter() - start
    text = step.compiled.as_text()
    summary = hlo_summary(text)
    if args.hlo_dir:
      os.makedirs(args.hlo_dir, exist_ok=True)
      with open(os.path.join(args.hlo_dir, f'{variant}.hlo.txt'), 'w') as f:
        f.write(text)
    start = time.perf_counter()
    step.run()  # Warm-up (allocations, caches).
    row = {'build_and_compile_seconds': compile_seconds,
           'first_call_seconds': time.perf_counter() - start, 'hlo': summary,
           'memory_mib': memory_mib(step.compiled)}
    if args.profile and step.steps_per_call == 1:  # Loop bodies' repeated ops: not attributed.
      row['profile'] = profile_step(step, os.path.join(args.hlo_dir, f'profile_{variant}'),
                                    parse_hlo(text))
    built[variant], result['variants'][variant] = step, row
    top = summary['top_level']
    print(f"{variant:14} compiled in {compile_seconds:5.1f} s: "
          f"{top.get('convolution', 0)} convolutions, {top.get('fusion', 0)} fusions, "
          f"{top.get('transpose', 0)} transposes, {top.get('copy', 0)} copies, "
          f"{top.get('custom-call', 0)} custom calls, {top.get('while', 0)} whiles; "
          f"top-level ops read+write {sum(summary['traffic_mib'].values())} MiB "
          f"{summary['traffic_mib']}", flush=True)

  # Interleaved, each round in a rotated order: load changes hit every variant alike. CPU
  # seconds (this process's, all threads) too: with other work on the cores, wall time swings
  # with their share, CPU time much less.
  seconds = {variant: [] for variant in variants}
  cpu_seconds = {variant: [] for variant in variants}
  faults = {variant: [] for variant in variants}
  order = list(built)
  for rep in range(args.reps):
    for variant in order[rep % len(order):] + order[:rep % len(order)]:
      step = built[variant]
      start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      start, start_cpu = time.perf_counter(), time.process_time()
      step.run()
      seconds[variant].append((time.perf_counter() - start) / step.steps_per_call)
      faults[variant].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
                             / step.steps_per_call)
      cpu_seconds[variant].append((time.process_time() - start_cpu) / step.steps_per_call)
  keras = statistics.median(seconds['keras']) if 'keras' in seconds else None
  keras_cpu = statistics.median(cpu_seconds['keras']) if 'keras' in seconds else None
  print(f"\n{'variant':14} {'median s':>9} {'best s':>8} {'img/s':>7} {'vs keras':>9} "
        f"{'CPU s':>7} {'CPU vs keras':>12} {'faults MiB':>10} {'temp MiB':>8}  "
        f"(load {os.getloadavg()[0]:.1f})")
  for variant in variants:
    median = statistics.median(seconds[variant])
    cpu = statistics.median(cpu_seconds[variant])
    row = result['variants'][variant]
    row.update(step_seconds=seconds[variant], median_step_seconds=median,
               best_step_seconds=min(seconds[variant]), images_per_second=batch_size / median,
               speed_vs_keras=keras / median if keras else None,
               step_cpu_seconds=cpu_seconds[variant], median_step_cpu_seconds=cpu,
               cpu_speed_vs_keras=keras_cpu / cpu if keras else None,
               minor_faults_per_step=statistics.median(faults[variant]))
    print(f"{variant:14} {median:9.3f} {min(seconds[variant]):8.3f} {batch_size / median:7.1f} "
          + (f'{keras / median:9.3f}' if keras else f"{'':9}") + f' {cpu:7.2f} '
          + (f'{keras_cpu / cpu:12.3f}' if keras else f"{'':12}")
          + f" {statistics.median(faults[variant]) * resource.getpagesize() / 2**20:10.0f}"
          f" {row['memory_mib'].get('temp', 0):8.0f}", flush=True)
  if args.profile:
    print('\nseconds per step by op kind (profiled step; top 12 of each):')
    for variant in [v for v in variants if 'profile' in result['variants'][v]]:
      profile = result['variants'][variant]['profile']
      print(f"{variant}: {profile['op_seconds']:.2f} s in ops; " + ', '.join(
          f'{k} {v:.2f}' for k, v in list(profile['by_kind'].items())[:12]))
  result['load_average_end'] = os.getloadavg()
  json_out.write(args.out, result)


if __name__ == '__main__':
  main()
