"""What the JPEG copy costs in accuracy, estimated with a second JPEG round of the same size.

The shared data is CIFAR-10 decoded from 32x32 JPEG files at quality 75 (its README); the
official pixels are not reachable from here, so the first round's cost cannot be measured
directly. This measures the cost of a *second*, equally strong round and takes it as the
estimate of the first:

    python benchmarks/jpeg_cost.py make --src=../shared/data/cifar10-jpeg --dst=DIR
    python -m cifar_jax.zoo --configs=redes/m1 --seeds=0,1,2 --data_dir=DIR \\
        --out=runs/jpeg2 --results=RECORDS          # the same config on the twice-JPEG copy
    python benchmarks/jpeg_cost.py compare --config=redes/m1 --variant=RECORDS \\
        --out=benchmarks/results/jpeg_cost_cpu.json  # against its records in results/

`make` re-encodes every image at quality 75 with Pillow (libjpeg's standard tables, 4:2:0
chroma), shifted by 4 pixels (wrapping) so that JPEG's 8x8 blocks fall across the first
round's: re-encoded on the same grid, a quality-75 JPEG barely changes (it is close to a fixed
point), so the aligned PSNR also confirms the copy's quality, while the shifted round removes
about as much as a first encoding does (`make` prints both PSNRs). Training and testing on the
twice-encoded copy, against the same config's records on the copy, gives the accuracy one
quality-75 round costs that model, to within the seeds' spread (the second round acts on images
already smoothed once, so if anything it underestimates the first). `compare` also pairs the
seeds run on both copies (same initial weights and batch order) and gives the mean difference of
their accuracy curves over the epochs both ran: where early stopping fires at different epochs
(arquitecturas/a2), that says more than the test accuracies do.
"""

import argparse
import io
import json
import math
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cifar_jax.report import records as records_lib  # pylint: disable=g-import-not-at-top

QUALITY = 75  # The shared copy's (its README).
SHIFT = 4  # Half a JPEG block: the second round's blocks straddle the first's.
RECORD = 1 + 32 * 32 * 3
FILES = [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']


def reencode(image: np.ndarray, quality: int = QUALITY, shift: int = SHIFT) -> np.ndarray:
  """One JPEG round of an HWC uint8 image, its block grid moved by `shift` pixels."""
  moved = np.roll(image, (shift, shift), (0, 1))
  buffer = io.BytesIO()
  Image.fromarray(moved).save(buffer, 'JPEG', quality=quality)
  decoded = np.asarray(Image.open(buffer).convert('RGB'))
  return np.roll(decoded, (-shift, -shift), (0, 1))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / mse))


def _images(records: np.ndarray) -> np.ndarray:
  return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def make(src: str, dst: str) -> dict:
  """Writes DST/cifar-10-batches-bin: SRC's records, every image re-encoded once more."""
  source = Path(src) / 'cifar-10-batches-bin' if (Path(src) / 'cifar-10-batches-bin').is_dir() \
      else Path(src)
  target = Path(dst) / 'cifar-10-batches-bin'
  target.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(source / 'batches.meta.txt', target / 'batches.meta.txt')
  stats = {}
  for name in FILES:
    records = np.fromfile(source / name, np.uint8).reshape(-1, RECORD)
    images = _images(records)
    again = np.stack([reencode(x) for x in images])
    out = records.copy()
    out[:, 1:] = again.transpose(0, 3, 1, 2).reshape(len(records), -1)
    partial = target / f'.{name}.partial'
    out.tofile(partial)
    os.replace(partial, target / name)  # A killed `make` leaves no half file under the name.
    if name == 'test_batch.bin':
      sample = images[:2000]
      stats = {
          'psnr_second_round_db': round(psnr(images, again), 2),
          'psnr_same_grid_reencode_db': round(psnr(
              sample, np.stack([reencode(x, shift=0) for x in sample])), 2),
      }
    print(f'{name}: {len(records)} images re-encoded', flush=True)
  info = {'quality': QUALITY, 'shift': SHIFT, 'pillow': Image.__version__, **stats}
  (Path(dst) / 'jpeg_round.json').write_text(json.dumps(info, indent=2) + '\n')
  print(json.dumps(info), flush=True)
  return info


def _summary(records: list[dict]) -> dict:
  accuracies = [100 * r['test_accuracy'] for r in records]
  return {
      'seeds': [r['seed'] for r in records],
      'test_accuracy': [round(a, 2) for a in accuracies],
      'mean': round(statistics.mean(accuracies), 2),
      'std': round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else None,
      'commits': sorted({r['commit'][:10] for r in records}),
      'data_checksum': sorted({r['data']['checksum'] for r in records}),
  }


def compare(config: str, records_dir: str, variant_dir: str) -> dict:
  """The config's records on the copy against its records on the twice-encoded copy."""
  current = records_lib.current_config(config)
  base, _ = records_lib.choose_records(records_lib.load_records(records_dir), config, current)
  twice, _ = records_lib.choose_records(records_lib.load_records(variant_dir), config, current)
  if not base or not twice:
    raise SystemExit(f'error: need records of {config} in both {records_dir} ({len(base)}) and '
                     f'{variant_dir} ({len(twice)}); run the zoo on both copies first')
  one, two = _summary(base), _summary(twice)
  if set(one['data_checksum']) & set(two['data_checksum']):
    raise SystemExit('error: both sets of records trained on the same data; --variant must hold '
                     "the runs on `make`'s copy")
  difference = one['mean'] - two['mean']
  spread = [s['std'] ** 2 / len(s['seeds']) for s in (one, two) if s['std'] is not None]
  return {
      'config': config,
      'copy': one,
      'twice_encoded': two,
      'cost_of_one_round_points': round(difference, 2),
      'standard_error_points': round(math.sqrt(sum(spread)), 2) if len(spread) == 2 else None,
      'paired_curves': paired_curves(base, twice),
  }


CURVES = ('accuracy', 'val_accuracy')


def paired_curves(base: list[dict], twice: list[dict]) -> dict:
  """Per seed run on both copies (the same initial weights and batch order), the mean over the
  epochs both ran of each accuracy curve, copy minus twice-encoded copy, in points. Unlike the
  test accuracies, this does not depend on when each run's early stopping fired, which for a
  model like arquitecturas/a2 moves the test accuracy by more than the data does."""
  by_seed = {r['seed']: r for r in twice}
  out = {}
  for record in sorted(base, key=lambda r: r['seed']):
    if record['seed'] in by_seed:
      gaps = records_lib.history_difference(record['history'], by_seed[record['seed']]['history'],
                                            CURVES)
      out[str(record['seed'])] = {'epochs': gaps['epochs'], **{
          f'{curve}_points': round(100 * gaps[curve], 2) for curve in CURVES}}
  return out


def main(argv) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  m = sub.add_parser('make', help="write the twice-encoded copy")
  m.add_argument('--src', required=True)
  m.add_argument('--dst', required=True)
  c = sub.add_parser('compare', help='records on the copy vs on the twice-encoded copy')
  c.add_argument('--config', required=True)
  c.add_argument('--records', default=records_lib.DEFAULT_RESULTS_DIR)
  c.add_argument('--variant', required=True, help="records of the runs on `make`'s copy")
  c.add_argument('--round_info', default='', help="`make`'s jpeg_round.json, to include")
  c.add_argument('--out', default='')
  args = parser.parse_args(argv)
  if args.command == 'make':
    make(args.src, args.dst)
    return 0
  result = compare(args.config, args.records, args.variant)
  if args.round_info:
    result['second_round'] = json.loads(Path(args.round_info).read_text())
  text = json.dumps(result, indent=2) + '\n'
  if args.out:
    Path(args.out).write_text(text)
  print(text, end='')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
