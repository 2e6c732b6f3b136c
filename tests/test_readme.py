from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = "pip install -e '.[test]' && python -m pytest"
    assert f"```bash\n{command}\n```" in readme
    assert (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1] == command


def test_readme_quickstart_runs_the_pipeline():
    assert "```bash\npip install -e . && llamaforge pipeline\n```" in (ROOT / "README.md").read_text()
