"""Self-contained HTML pages: tables and PNGs inline (base64), so a page can be mailed or moved."""

import base64
import html
from typing import Sequence

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1900px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f0f0f0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
.note { color: #a00; }
"""


def image(png_path: str, alt: str) -> str:
  with open(png_path, 'rb') as f:
    data = base64.b64encode(f.read()).decode('ascii')
  return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">\n'


def note(text: str) -> str:
  return f'<p class="note">{html.escape(text)}</p>\n'


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
  """A page of (heading, html) sections under `title`."""
  body = ''.join(f'<h2>{html.escape(heading)}</h2>\n{content}' for heading, content in sections)
  return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
          f'</title><style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n'
          f'{body}</body></html>\n')
