"""The README's example runs as written; module docstring examples run as doctests."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

import lrfree.blocks
import lrfree.optimizer

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    assert text.index("make bench") < text.index("make test") < text.index("## Use")


@pytest.mark.parametrize("module", [lrfree.blocks, lrfree.optimizer])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _block(text: str, name: str) -> str:
    m = re.search(rf"<!-- {name} -->\n(.*?)\n<!-- /{name} -->", text, re.S)
    assert m, f"no {name} markers"
    return m.group(1).strip()


def test_readme_auto_table_is_the_results_page_one():
    """The README's table of where Auto stands is copied from the results page the bench
    wrote (docs/results-auto.md, section "Auto against the tuned baseline and every peer")."""
    page = README.parent / "docs" / "results-auto.md"
    assert _block(README.read_text(), "auto-table") == _block(page.read_text(), "auto-table")
