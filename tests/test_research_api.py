"""The research API: README's snippet runs as written, and the state it builds from a config is
the state a run of that config starts from."""

import math
import re

import jax
import numpy as np

from cifar_jax.train import create_train_state_from_config
from cifar_jax.train import loop
from tests.conftest import REPO, tiny_config

README = REPO / 'README.md'
SECTION = '## Research API'


def readme_snippet(text: str) -> str:
  """The first ```python block of README's research section."""
  section = text.split(f'\n{SECTION}\n', 1)
  assert len(section) == 2, f'README.md has no "{SECTION}" section'
  block = re.search(r'```python\n(.*?)```', section[1].split('\n## ', 1)[0], re.DOTALL)
  assert block, f'README.md\'s "{SECTION}" section has no ```python block'
  return block.group(1)


def test_the_readme_snippet_runs_as_written(synthetic_dir, monkeypatch):
  snippet = readme_snippet(README.read_text())
  monkeypatch.setenv('CIFAR10_DIR', synthetic_dir)  # Where README says the data is found.
  monkeypatch.chdir(REPO)
  namespace = {'__name__': '__readme__'}
  exec(compile(snippet, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  state, metrics = namespace['state'], namespace['metrics']
  assert int(state.step) > 0
  assert math.isfinite(float(metrics['loss'])) and float(metrics['count']) > 0


def test_the_snippet_reader_takes_the_section_block_only():
  text = ('# x\n```python\nwrong = 1\n```\n' + f'\n{SECTION}\n\nText.\n\n```python\nright = 2\n'
          '```\n\n## Next\n```python\nlater = 3\n```\n')
  assert readme_snippet(text) == 'right = 2\n'


def test_the_builder_gives_the_state_a_run_starts_from(synthetic_dir, tmp_path):
  config = tiny_config(synthetic_dir)
  state, splits = create_train_state_from_config(config)
  run = loop.Run(config, str(tmp_path))
  try:
    assert len(splits.train) == len(run.splits.train) == 240
    for a, b in zip(jax.tree.leaves((state.params, state.batch_stats, state.opt_state, state.rng)),
                    jax.tree.leaves((run.state.params, run.state.batch_stats,
                                     run.state.opt_state, run.state.rng))):
      np.testing.assert_array_equal(a, b)
    assert state.input_pipeline == run.state.input_pipeline
  finally:
    run.close()
