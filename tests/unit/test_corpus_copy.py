"""tests/data/policies is a copy of ../shared/policies, the project's real-world corpus: the same files, byte for
byte, where the project is cloned beside ../shared (as CI clones it). A clone elsewhere tests with the copy."""
from __future__ import annotations

import pytest

from tests.corpus import CORPUS, SHARED_CORPUS


def files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_copy_holds_the_corpus():
    assert len([name for name in files(CORPUS) if name.endswith(".yaml")]) == 76


@pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason="../shared/policies is not beside this clone")
def test_the_copy_is_the_shared_corpus():
    assert files(CORPUS) == files(SHARED_CORPUS)
