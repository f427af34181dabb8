"""The docs say what the code does: docs/warehouse.md holds the contract exactly as warehouse.py
declares it, and the README stays a front door (short, its pictures and links there)."""

import re
from pathlib import Path

from anomaly_assets.warehouse import TABLES, readme_table_docs

REPO = Path(__file__).resolve().parents[1]
# pages other branches write; linked from here before they land
WRITTEN_ELSEWHERE = {"docs/operations.md", "docs/demo.md"}


def test_the_warehouse_page_holds_the_generated_contract():
    text = (REPO / "docs" / "warehouse.md").read_text()
    assert readme_table_docs() in text, (
        "docs/warehouse.md's contract differs from warehouse.py; regenerate it with "
        "`python -c 'from anomaly_assets.warehouse import readme_table_docs; print(readme_table_docs())'`"
    )
    for table in TABLES:
        assert f"#### `{table.qualified}`" in text


def test_the_readme_is_short_and_its_pictures_and_links_exist():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert any(l.startswith("docs/img/") for l in links)
    for link in links:
        if not link.startswith(("http://", "https://")) and link not in WRITTEN_ELSEWHERE:
            assert (REPO / link).exists(), f"README links to {link}, which does not exist"
