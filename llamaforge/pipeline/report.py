"""The pipeline's last stage: report.md and report.html of the whole run (llamaforge report)."""

from __future__ import annotations

from llamaforge.pipeline.stage import Stage, StageContext
from llamaforge.report import write_report


def report_stage(after: list[str]) -> Stage:
    """Reads every earlier stage's outputs, so it re-runs whenever any of them changes."""

    def run(ctx: StageContext):
        html = write_report(ctx.run_dir)
        return {"html": html, "markdown": ctx.run_dir / "report.md"}, {"sections": html.read_text().count("<section")}

    return Stage("report", tuple(after), lambda preset, seed: {}, run)
