"""The evaluation report as one static HTML page (no scripts, images beside it in ``plots/``)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import List, Optional

import pandas as pd

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.tables { display: flex; gap: 2em; flex-wrap: wrap; }
"""


@dataclass
class Section:
    """A heading with paragraphs, tables (titled) and images (paths relative to the page)."""

    id: str
    title: str
    text: List[str] = field(default_factory=list)
    tables: List[tuple] = field(default_factory=list)   # (caption, DataFrame)
    images: List[tuple] = field(default_factory=list)   # (relative path, alt text)


def _table(caption: str, frame: pd.DataFrame, float_format: str = "{:.4f}") -> str:
    body = frame.to_html(index=False, na_rep="—", float_format=float_format.format, border=0, escape=True)
    return f"<div><h4>{html.escape(caption)}</h4>{body}</div>"


def render(title: str, summary: List[str], sections: List[Section], footer: Optional[str] = None) -> str:
    """The whole page as text; every string is escaped, tables come from pandas."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in summary]
    parts.append("<nav><ul>" + "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
                 + "</ul></nav>")
    for s in sections:
        parts.append(f'<section id="{html.escape(s.id)}"><h2>{html.escape(s.title)}</h2>')
        parts += [f"<p>{html.escape(t)}</p>" for t in s.text]
        if s.tables:
            parts.append('<div class="tables">' + "".join(_table(c, f) for c, f in s.tables) + "</div>")
        parts += [f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">' for src, alt in s.images]
        parts.append("</section>")
    if footer:
        parts.append(f"<footer><p>{html.escape(footer)}</p></footer>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
