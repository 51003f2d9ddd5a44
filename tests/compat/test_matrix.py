"""Every corpus model through every ONNX pipeline via the real API and worker (three workers, cells
submitted at once): each cell an artifact that loads with default session options and meets its floor on
the downloaded file, or one of the few documented refusals (tests.compat.matrix.EXPECTED_REFUSALS)."""

from collections.abc import Iterator

import pytest

from tests.compat.corpus import CorpusModel, build_corpus
from tests.compat.matrix import EXPECTED_REFUSALS, Outcome, render, run_matrix
from tests.conftest import Stack, start_worker

pytestmark = pytest.mark.e2e
EXTRA_WORKERS = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[CorpusModel]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def outcomes(
    stack: Stack, corpus: list[CorpusModel], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Outcome]]:
    workers = [
        start_worker(stack.env, stack.home / "logs" / f"compat{i}.log", name=f"compat{i}") for i in range(EXTRA_WORKERS)
    ]
    try:
        with stack.client() as client:
            found = run_matrix(client, corpus, tmp_path_factory.mktemp("artifacts"))
        table = render(corpus, found)
        (stack.home / "compat-matrix.md").write_text(table)
        print("\n" + table)
        yield found
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)


def test_every_cell_gives_an_artifact_above_its_floor_or_a_documented_refusal(outcomes: list[Outcome]) -> None:
    wrong = [o for o in outcomes if not o.expected]
    assert not wrong, "cells other than expected:\n" + "\n".join(
        f"{o.model} x {o.column}: {o.status} {o.code or ''} cosine {o.cosine} {o.message or ''}" for o in wrong
    )


def test_the_matrix_covers_at_least_twelve_models_and_every_pipeline(
    corpus: list[CorpusModel], outcomes: list[Outcome]
) -> None:
    assert len(corpus) >= 12, "the corpus has at least 12 models"
    assert {o.column for o in outcomes} >= {"dynamic", "optimize+dynamic", "static", "int4", "fp16"}
    documented = {cell for cell in EXPECTED_REFUSALS}
    ran = {(o.model, o.column) for o in outcomes}
    assert documented <= ran, f"expected refusals for cells that did not run: {sorted(documented - ran)}"


def _cell(outcomes: list[Outcome], model: str, column: str) -> Outcome:
    return next(o for o in outcomes if (o.model, o.column) == (model, column))


def test_an_old_graph_is_brought_up_and_its_inputs_cleaned(outcomes: list[Outcome]) -> None:
    canonical = _cell(outcomes, "ir3_opset9", "dynamic").canonical
    assert canonical is not None, "an ONNX upload's report has a canonical section"
    assert canonical["opset"] == {"before": 9, "after": 13}, "opset 9 is converted to 13"
    assert canonical["initializers_removed_from_inputs"] == 5, "the five weights listed as inputs are inputs no more"
    assert canonical["fidelity"]["cosine_min"] > 0.9999, "the canonical model computes what the upload does"


def test_constant_node_weights_are_quantized(outcomes: list[Outcome]) -> None:
    cell = _cell(outcomes, "constant_weights13", "dynamic")
    assert cell.canonical is not None and cell.canonical["constants_to_initializers"] == 4
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & cell.ops, f"int8 weights, got ops {sorted(cell.ops)}"
