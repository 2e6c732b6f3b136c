"""`llamaforge report` on a smoke pipeline run and on a partial one: every section present, the page
self-contained (every image decodes in headless Chromium, the page fetches nothing), and a run that
stopped early reported as far as it got, naming what is missing."""

import json
import os
import re
import shutil
import subprocess

import pytest

from llamaforge.cli import main as cli_main
from llamaforge.pipeline import PipelineArgs, main
from llamaforge.report.sections import SECTIONS, by_turn_rows

SECTION_IDS = ["stages", "losses", "reward-models", "rlhf", "gatt", "distillation", "examples"]
# Measured inside the page once it has loaded: how many images decoded, and every resource the
# page itself requested (the Resource Timing API lists each fetch; data: URIs are not fetches).
PROBE = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.requests = performance.getEntriesByType('resource').length;
  document.body.dataset.sections = [...document.querySelectorAll('section')].map(s => s.id).join(',');
});</script>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report_run")
    main(PipelineArgs(out=out, preset="smoke", seed=0))
    return out


def test_the_pipeline_ends_with_the_report(run):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"]["report"]["outputs"]["html"] == "report.html"
    assert [section.__name__ for section in SECTIONS][-1] == "examples_section"
    html = (run / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)"', html) == SECTION_IDS
    markdown = (run / "report.md").read_text()
    for figure in re.findall(r"\]\((report_figures/[^)]+\.png)\)", markdown):
        assert (run / figure).stat().st_size > 1000, figure
    assert "| PPO |" in markdown and "| RLHF-V2 |" in markdown  # a row per version
    for label in ("questions name no one else", "questions name another person"):  # GAtt's attribute sets
        assert f"| {label}, without GAtt |" in markdown and f"| {label}, with GAtt |" in markdown


def test_the_page_is_self_contained(run):
    html = (run / "report.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources), sources[:5]
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_headless_chromium_decodes_every_image_and_fetches_nothing(run, tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("LLAMAFORGE_REQUIRE_CHROMIUM"):  # set by .ci/run, which installs it
            pytest.fail("chromium not found")
        pytest.skip("chromium not installed (apt install chromium)")
    page = tmp_path / "probe.html"
    page.write_text((run / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
    )
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body, result.stderr[-2000:]
    found = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert int(found["images"]) >= 5
    assert found["decoded"] == found["images"]
    assert found["requests"] == "0"
    assert found["sections"].split(",") == SECTION_IDS


def test_a_partial_run_reports_what_exists_and_names_what_is_missing(run, tmp_path):
    partial = shutil.copytree(run, tmp_path / "partial")
    for stage in ("rlhf_v1", "rlhf_v2", "rlhf_ppo", "report"):
        shutil.rmtree(partial / stage)
    (partial / "report.html").unlink()
    assert cli_main(["report", str(partial)]) == 0
    html = (partial / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)"', html) == SECTION_IDS
    assert "Missing: rlhf_v1, rlhf_v2, rlhf_ppo" in html  # the stages table names them
    assert "Missing: sft, rlhf_v1" in html  # the RLHF section has only SFT
    assert "Table 8" in html  # the reward stage ran: its section is there


def test_report_on_something_that_is_not_a_run(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert cli_main(["report", str(tmp_path)]) == 1
    assert "no stage records" in capsys.readouterr().err


def test_gatt_tables_read_without_then_with_gatt_in_percent():
    recall = {"with_gatt": {"1": 0.5, "2": 0.25}, "without_gatt": {"1": 0.125, "2": 0.0}}
    assert by_turn_rows(recall, 100) == {"without GAtt": {"1": 12.5, "2": 0.0}, "with GAtt": {"1": 50.0, "2": 25.0}}
    assert list(by_turn_rows(recall)) == ["without GAtt", "with GAtt"]
