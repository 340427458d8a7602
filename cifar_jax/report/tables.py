"""Tables as markdown, CSV and HTML, and the number formats every report table shares."""

import csv
import dataclasses
import html
import io
import math
from typing import Sequence

from cifar_jax import paths

MISSING = '—'


@dataclasses.dataclass(frozen=True)
class Table:
  """Rows of already formatted cells under a header; numeric columns are right-aligned."""
  header: Sequence[str]
  rows: Sequence[Sequence[str]]
  numeric: Sequence[bool] = ()  # Per column; default: every column but the first.

  def _is_numeric(self, column: int) -> bool:
    return self.numeric[column] if self.numeric else column > 0

  def to_markdown(self) -> str:
    def line(cells):
      return '| ' + ' | '.join(str(c).replace('|', '\\|') for c in cells) + ' |'
    rule = ['---:' if self._is_numeric(i) else '---' for i in range(len(self.header))]
    return '\n'.join([line(self.header), line(rule)] + [line(r) for r in self.rows]) + '\n'

  def to_csv(self) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(self.header)
    writer.writerows([['' if c == MISSING else c for c in row] for row in self.rows])
    return buffer.getvalue()

  def to_html(self) -> str:
    def cells(tag, values):
      return ''.join(
          f'<{tag}{" class=num" if self._is_numeric(i) else ""}>{html.escape(str(v))}</{tag}>'
          for i, v in enumerate(values))
    body = ''.join(f'<tr>{cells("td", row)}</tr>\n' for row in self.rows)
    return f'<table>\n<tr>{cells("th", self.header)}</tr>\n{body}</table>\n'


def percent(fraction) -> str:
  """0.6058 -> '60.58'; the tables print accuracies in percent, as the reports do."""
  if fraction is None or not math.isfinite(float(fraction)):
    return MISSING
  return f'{100.0 * float(fraction):.2f}'


def duration(seconds) -> str:
  if seconds is None:
    return MISSING
  seconds = float(seconds)
  if seconds < 120:
    return f'{seconds:.1f} s'
  if seconds < 7200:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.2f} h'


def count(value) -> str:
  return MISSING if value is None else f'{int(value):,}'


def write(path: str, text: str) -> str:
  paths.write_text(path, text)  # Local or gs:// (a sweep's tables go to its workdir).
  return path
