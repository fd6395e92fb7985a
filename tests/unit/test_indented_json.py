"""netpol_scan.indented_json: what `netpol-scan cluster -o json|asff` prints must be what json.dump(..., indent=2)
printed, byte for byte, while it is written as it is made."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_scan import indented_json

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
keys = st.one_of(st.text(max_size=10), st.integers(), st.floats(), st.booleans(), st.none())
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                          st.lists(inner, max_size=5).map(tuple),
                                                          st.dictionaries(keys, inner, max_size=5)), max_leaves=40)


def dumped(value: Any) -> str:
    stream = io.StringIO()
    indented_json.dump(value, stream)
    return stream.getvalue()


def with_iterators(value: Any) -> Any:
    """The same document with every list an iterator: what the CLI hands over for results and findings."""
    if isinstance(value, dict):
        return {key: with_iterators(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return iter([with_iterators(item) for item in value])
    return value


@PROPS
@given(documents)
def test_dump_writes_what_json_dumps_with_indent_2_writes(document):
    assert dumped(document) == json.dumps(document, indent=2)
    assert indented_json.text(document) == json.dumps(document, indent=2)


@PROPS
@given(documents)
def test_an_iterator_is_written_as_the_list_it_yields(document):
    assert dumped(with_iterators(document)) == json.dumps(document, indent=2)


def test_a_result_document_as_the_cli_prints_it():
    result = {"control_id": "cis-k8s-5.3.2", "namespace": "ledger", "status": "PASSED", "title": "Namespace ledger",
              "description": "It has \"two\" policies: é, \u2028", "evidence": ["allow", "deny"], "fields": {}}
    document = {"contexts": [{"context": "kind", "error": None, "policies": {"ledger": 2, "batch": 0},
                              "results": [result, {**result, "evidence": []}]}], "summary": {"contexts": 1}}

    assert dumped(document) == json.dumps(document, indent=2)
    assert dumped({**document, "contexts": [{**document["contexts"][0], "results": iter([result])}]}) == json.dumps(
        {**document, "contexts": [{**document["contexts"][0], "results": [result]}]}, indent=2)


def test_the_text_reaches_the_stream_while_the_iterator_is_consumed():
    stream = io.StringIO()
    written_while_consumed: list[int] = []

    def results():
        for index in range(3 * indented_json.BLOCK_CHARS // 100):
            written_while_consumed.append(len(stream.getvalue()))
            yield {"index": index, "text": "x" * 80}

    indented_json.dump({"results": results()}, stream)

    assert written_while_consumed[0] == 0 and written_while_consumed[-1] >= 2 * indented_json.BLOCK_CHARS
    assert json.loads(stream.getvalue())["results"][-1]["index"] == len(written_while_consumed) - 1


@pytest.mark.parametrize("value", [{(1, 2): [1]}, {"a": {b"bytes": 1}}, [object()], {"a": [1, {2, 3}]}])
def test_what_json_cannot_encode_is_a_type_error_as_in_json(value):
    with pytest.raises(TypeError):
        json.dumps(value, indent=2)
    with pytest.raises(TypeError):
        dumped(value)
