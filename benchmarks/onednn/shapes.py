"""The convolution layer shapes the oneDNN benchmarks time (bench.py; tf_convs.py, in
TensorFlow's venv) and their shared command line: no jax or TensorFlow, so either interpreter
imports it."""

import argparse
import sys

# name -> (spatial size, Cin, Cout, kernel, padding): every convolution of exp0, p2cnn/exp1,
# redes/m1, redes/m2 and m3 (m2's first, then the two 3x3 shapes) and exp11 (3x3 SAME blocks 64,
# 128, 256, 512).
SHAPES = {
    'exp0_3-32@32_k3': (32, 3, 32, 3, 'SAME'),
    'p2cnn1_3-32@32_k3v': (32, 3, 32, 3, 'VALID'),
    'p2cnn1_32-64@15_k4v': (15, 32, 64, 4, 'VALID'),
    'p2cnn1_64-128@6_k3v': (6, 64, 128, 3, 'VALID'),
    'm1_3-16@32_k6': (32, 3, 16, 6, 'SAME'),
    'm2_3-32@32_k6': (32, 3, 32, 6, 'SAME'),
    'm1_16-32@16_k6': (16, 16, 32, 6, 'SAME'),
    'm1_32-64@8_k6': (8, 32, 64, 6, 'SAME'),
    '3x3_32-64@16': (16, 32, 64, 3, 'SAME'),
    '3x3_64-128@8': (8, 64, 128, 3, 'SAME'),
    'exp11_3-64@32': (32, 3, 64, 3, 'SAME'),
    'exp11_64-64@32': (32, 64, 64, 3, 'SAME'),
    'exp11_64-128@16': (16, 64, 128, 3, 'SAME'),
    'exp11_128-128@16': (16, 128, 128, 3, 'SAME'),
    'exp11_128-256@8': (8, 128, 256, 3, 'SAME'),
    'exp11_256-256@8': (8, 256, 256, 3, 'SAME'),
    'exp11_256-512@4': (4, 256, 512, 3, 'SAME'),
    'exp11_512-512@4': (4, 512, 512, 3, 'SAME'),
}


def parse_args(description: str):
  """(args, the shape names asked for): --shapes (names or 'all'), --batches, --reps, --out. An
  unknown shape is one error line and exit 2."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--shapes', default='all')
  parser.add_argument('--batches', default='64,128')
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  shapes = list(SHAPES) if args.shapes == 'all' else args.shapes.split(',')
  unknown = [s for s in shapes if s not in SHAPES]
  if unknown:
    print(f'error: unknown --shapes {unknown}; known: {list(SHAPES)}', file=sys.stderr)
    sys.exit(2)
  return args, shapes
