"""The README documents every warehouse table and column exactly as warehouse.py declares them."""

from pathlib import Path

from anomaly_assets.warehouse import TABLES, readme_table_docs

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_holds_the_generated_table_docs():
    text = README.read_text()
    docs = readme_table_docs()
    assert docs in text, (
        "README's warehouse section differs from warehouse.py; regenerate it with "
        "`python -c 'from anomaly_assets.warehouse import readme_table_docs; print(readme_table_docs())'`"
    )
    for table in TABLES:
        assert f"#### `{table.qualified}`" in text
