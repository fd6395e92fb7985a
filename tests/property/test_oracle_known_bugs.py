"""The known bugs of our analysis the oracle found (oracle_claims.KnownBug), one minimal example each.

Each example is shown wrong by NCA itself, not by us. While the code under test still gives the buggy verdict the
example is an expected failure naming the fix; once it does not, the example is checked strictly like any other
world, and its entry in the kind's list can be deleted.
"""
from __future__ import annotations

import pytest

from tests.property.oracle_claims import Kind, KnownBug, disagreements
from tests.property.test_oracle_calico import CALICO
from tests.property.test_oracle_networkpolicy import KUBERNETES

KNOWN = [pytest.param(kind, bug, id=bug.name) for kind in (KUBERNETES, CALICO) for bug in kind.known_bugs]


@pytest.mark.parametrize(("kind", "bug"), KNOWN)
def test_example_is_wrong_per_nca(kind: Kind, bug: KnownBug) -> None:
    assert bug.wrong_per_nca(kind.to_nca)


@pytest.mark.parametrize(("kind", "bug"), KNOWN)
def test_example_agrees_with_nca_once_fixed(kind: Kind, bug: KnownBug) -> None:
    if bug.reproduces():
        pytest.xfail(f"our bug, {bug.fixed_by}")
    assert disagreements(bug.example, Kind(kind.to_nca, kind.peers_alone, ())) == []
