"""The report as data (sections of paragraphs, tables and figures) and its two renderings:
report.md (figures as PNG files beside it) and report.html (one self-contained file: figures as
inline base64 PNG, no stylesheet, script or font fetched from anywhere)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    header: list[str]
    rows: list[list]


@dataclass
class Figure:
    name: str  # file name stem, e.g. "loss_curves"
    png: bytes
    caption: str


@dataclass
class Section:
    id: str  # the html anchor: stable, tests look for it
    title: str
    blocks: list = field(default_factory=list)  # str (a paragraph), Table or Figure

    def add(self, *blocks) -> Section:
        self.blocks.extend(blocks)
        return self


def cell(value) -> str:
    """A table cell: floats to 3 significant places, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def to_markdown(title: str, sections: list[Section], figures_dir: Path) -> str:
    """The markdown report; writes each figure as figures_dir/NAME.png, linked relatively."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append("| " + " | ".join(block.header) + " |")
                lines.append("|" + "---|" * len(block.header))
                lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in block.rows]
            elif isinstance(block, Figure):
                (figures_dir / f"{block.name}.png").write_bytes(block.png)
                lines.append(f"![{block.caption}]({figures_dir.name}/{block.name}.png)")
                lines.append(f"*{block.caption}*")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def to_html(title: str, sections: list[Section]) -> str:
    """One self-contained page: inline CSS, figures as data: URIs, nothing to fetch."""
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>", "<nav>" + " · ".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections) + "</nav>"]
    for section in sections:
        body.append(f'<section id="{section.id}"><h2>{esc(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
                rows = "".join("<tr>" + "".join(f"<td>{esc(cell(v))}</td>" for v in row) + "</tr>" for row in block.rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode()
                body.append(f'<figure><img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{esc(block.caption)}</figcaption></figure>")
            else:
                body.append(f"<p>{esc(block)}</p>")
        body.append("</section>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%}figcaption{font-size:90%;color:#555}nav{margin-bottom:1.5em}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
