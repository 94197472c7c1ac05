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
