"""Results pages are generated from the logged runs committed beside them, and the README's headline with them."""

from pathlib import Path

from scripts import results_pages

RUNS = Path(__file__).resolve().parents[1] / "docs" / "results" / "runs"
README = Path(__file__).resolve().parents[1] / "README.md"


def test_uci_page_and_readme_headline_come_from_the_logged_run(tmp_path):
    results_pages.main(["uci", str(RUNS / "uci-concrete"), "--out", str(tmp_path / "uci.md")])
    page = (tmp_path / "uci.md").read_text()
    assert "| concrete |" in page and "python experiments/uci.py --dataset concrete" in page and "machine:" in page
    committed = (RUNS.parent / "uci.md").read_text()
    assert committed == page  # the committed page is what the script writes from the committed run
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text())
    results_pages.put_headline(readme, "uci", page)
    assert readme.read_text() == README.read_text()  # the README's headline is the page's first table


def test_speed_page_quotes_each_benchmark_with_its_command(tmp_path):
    logs = [RUNS / f"bench_{name}.log" for name in ("mfvi", "ensemble", "hmc")]
    results_pages.main(["speed", *map(str, logs), "--out", str(tmp_path / "speed.md")])
    page = (tmp_path / "speed.md").read_text()
    assert "`python scripts/bench_hmc.py --skip-nuts --skip-mixing`" in page
    assert (RUNS.parent / "speed.md").read_text() == page
