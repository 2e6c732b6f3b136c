"""`llamaforge report RUN_DIR`: report.md and report.html of a pipeline run (paper §2.2.1, §3.2-§3.4,
§4.2-§4.4 beside this run's numbers). The pipeline runs it as its last stage; on a run that stopped
early it reports what exists and names what is missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from llamaforge.errors import UserError
from llamaforge.report.document import to_html, to_markdown
from llamaforge.report.sections import SECTIONS, Run

TITLE = "llamaforge run report"


@dataclass
class ReportArgs:
    """Write report.md and report.html (self-contained) for a pipeline run directory."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The pipeline's --out directory."""


def write_report(run_dir: Path) -> Path:
    """Writes RUN_DIR/report.md (figures in RUN_DIR/report_figures/) and RUN_DIR/report.html; returns the html path."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory (expected a pipeline run directory)")
    run = Run(run_dir)
    if not run.records:
        raise UserError(f"{run_dir}: no stage records (stage.json) found; is it a pipeline run directory?")
    sections = [build(run) for build in SECTIONS]
    title = f"{TITLE}: {run_dir.name}"
    (run_dir / "report.md").write_text(to_markdown(title, sections, run_dir / "report_figures"))
    path = run_dir / "report.html"
    partial = path.with_suffix(".html.tmp")
    partial.write_text(to_html(title, sections))
    partial.replace(path)
    return path


def main(args: ReportArgs) -> Path:
    path = write_report(args.run_dir)
    print(f"report: {path}")
    return path
