"""A decoder-only LLM through the API: the tiny Llama trained in this session (tests.llm_models) uploaded as
a zipped Hugging Face folder, exported to ONNX with a KV cache, and quantized weight-only to int8 and to
int4 by two algorithms, each judged by perplexity on held-out text of its grammar. Figures are printed
(pytest -s) for the README."""

import io
import json
import zipfile
from pathlib import Path

import httpx
import onnx
import pytest

from tests.conftest import Stack, upload
from tests.e2e.test_compression_cnn import run_job
from tests.llm_models import TrainedLM, corpus, evaluation_text

pytestmark = [pytest.mark.e2e, pytest.mark.numerics]
MAX_INT8_INCREASE = 0.03
"""int8 weight-only: perplexity within a few percent of the original"""
MAX_INT4_INCREASE = 0.03
"""int4 (either algorithm): perplexity within a few percent of the original"""
HQQ_SQNR_SLACK_DB = 0.5
"""HQQ's logits are at least as close to the original's as round-to-nearest's, within this many dB: on this small
model the two land within 0.1 dB (and their perplexity intervals overlap), so neither ordering is a given"""
INT4 = {"method": "int4", "block_size": 128, "embeddings": False}
"""blocks of 128 along a 256-wide input: coarse enough that the rounding shows in the perplexity"""


@pytest.fixture(scope="module")
def ids(stack: Stack, tiny_llama_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    text = evaluation_text(tmp_path_factory.mktemp("llm-text") / "held_out.txt")
    with stack.client() as client:
        model = upload(client, tiny_llama_zip)
        response = client.post("/v1/datasets", files={"file": ("held_out.txt", text.read_bytes())})
        assert response.status_code == 201, response.text
        return {"model": model["id"], "text": response.json()["id"], "details": json.dumps(model["details"])}


def spec(ids: dict[str, str], passes: list[dict]) -> dict:
    return {
        "model_id": ids["model"],
        "evaluate": {"dataset_id": ids["text"], "latency": {"runs": 5, "warmup": 1}},
        "input_shapes": {"input_ids": [8, 64], "attention_mask": [8, 64]},
        "passes": passes,
    }


def ppl(figures: dict) -> float:
    return float(figures["perplexity"]["perplexity"])


def test_upload_detects_a_causal_lm(ids: dict[str, str], tiny_llama: TrainedLM) -> None:
    details = json.loads(ids["details"])["causal_lm"]
    assert details["architecture"] == "LlamaForCausalLM" and details["layers"] == 4
    assert details["context_length"] == 128 and details["vocab_size"] == 384
    assert details["param_count"] > 2_000_000
    assert tiny_llama.perplexity < tiny_llama.unigram_perplexity / 10, "the fixture learned its grammar"
    print(
        f"\ntiny Llama: {details['param_count']} parameters, trained in {tiny_llama.seconds:.0f} s to perplexity "
        f"{tiny_llama.perplexity:.3f} (unigram baseline {tiny_llama.unigram_perplexity:.1f})"
    )


def test_custom_code_is_refused(client: httpx.Client, tiny_llama: TrainedLM) -> None:
    buffer = io.BytesIO()
    config = json.loads((tiny_llama.folder / "config.json").read_text())
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("m/config.json", json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Model"}}))
        zf.write(tiny_llama.folder / "model.safetensors", "m/model.safetensors")
    response = client.post("/v1/models", files={"file": ("custom.zip", buffer.getvalue())})
    assert response.status_code == 422 and "auto_map" in response.json()["detail"], response.text


def test_kv_cache_export_generates_as_the_original(client: httpx.Client, stack: Stack, ids: dict[str, str]) -> None:
    report, _, artifact = run_job(client, stack, spec(ids, [{"type": "convert", "to": "onnx"}]))
    inputs = [i.name for i in onnx.load_from_string(artifact).graph.input]
    assert "past_key_values.3.value" in inputs, f"the artifact takes its KV cache: {inputs}"
    llm = report["causal_lm"]
    agreement = llm["greedy_agreement"]
    assert agreement["share"] >= 0.75, f"greedy tokens as the original's on most prompts: {agreement}"
    assert abs(llm["perplexity_change"]["relative"]) < 1e-3, llm["perplexity_change"]
    assert llm["result"]["generation"]["kv_cache"], "the ONNX artifact generates on its cache"
    print(
        f"\nKV-cache ONNX export: first {agreement['first_tokens']} greedy tokens identical on "
        f"{agreement['identical']}/{agreement['prompts']} prompts; perplexity {ppl(llm['original']):.4f} -> "
        f"{ppl(llm['result']):.4f}; decode {llm['original']['generation']['decode_tokens_per_s']:.0f} tokens/s "
        f"(torch) -> {llm['result']['generation']['decode_tokens_per_s']:.0f} (onnxruntime), time to first token "
        f"{llm['original']['generation']['time_to_first_token_ms']:.1f} -> "
        f"{llm['result']['generation']['time_to_first_token_ms']:.1f} ms"
    )
    for sample in llm["samples"][:2]:
        print(f"  {sample['prompt']!r}: {sample['original']!r} | {sample['result']!r}")


def test_weight_only_int8_and_int4(client: httpx.Client, stack: Stack, ids: dict[str, str]) -> None:
    runs = {
        "int8_blocks": {"type": "quantize", "method": "int8_blocks"},
        "int4 rtn": {"type": "quantize", **INT4, "algorithm": "rtn"},
        "int4 hqq": {"type": "quantize", **INT4, "algorithm": "hqq"},
    }
    full = {name: run_job(client, stack, spec(ids, [config])) for name, config in runs.items()}
    reports = {name: report["causal_lm"] for name, (report, _, _) in full.items()}
    sqnr = {name: report["result"]["fidelity"]["sqnr_db"] for name, (report, _, _) in full.items()}
    original = ppl(reports["int8_blocks"]["original"])
    change = {name: llm["perplexity_change"]["relative"] for name, llm in reports.items()}
    print(f"\nperplexity: original {original:.4f}")
    for name, llm in reports.items():
        interval = llm["perplexity_change"]["ci95"]
        print(
            f"  {name}: {ppl(llm['result']):.4f} ({change[name]:+.3%}, 95% CI {interval['low']:+.3%} .. "
            f"{interval['high']:+.3%}), weights {llm['original']['weight_memory_bytes']} -> "
            f"{llm['result']['weight_memory_bytes']} bytes, logits SQNR {sqnr[name]:.2f} dB, decode "
            f"{llm['result']['generation']['decode_tokens_per_s']:.0f} tokens/s, greedy identical "
            f"{llm['greedy_agreement']['identical']}/{llm['greedy_agreement']['prompts']}"
        )
    assert abs(change["int8_blocks"]) < MAX_INT8_INCREASE, "int8 weight-only keeps the perplexity"
    for name in ("int4 rtn", "int4 hqq"):
        assert change[name] < MAX_INT4_INCREASE, f"{name} keeps the perplexity: {change[name]:+.3%}"
    assert full["int4 hqq"][2] != full["int4 rtn"][2], "HQQ's scales and zeros differ from round-to-nearest's"
    assert sqnr["int4 hqq"] > sqnr["int4 rtn"] - HQQ_SQNR_SLACK_DB, f"HQQ no further from the original: {sqnr}"
    memory = (
        reports["int4 rtn"]["result"]["weight_memory_bytes"],
        reports["int8_blocks"]["result"]["weight_memory_bytes"],
    )
    assert memory[0] < memory[1] < reports["int8_blocks"]["original"]["weight_memory_bytes"]


def test_depth_pruning_then_distillation(
    client: httpx.Client, stack: Stack, ids: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    train = tmp_path_factory.mktemp("llm-train") / "train.txt"
    train.write_text("\n".join(corpus(128, 11)) + "\n", encoding="utf-8")
    response = client.post("/v1/datasets", files={"file": ("train.txt", train.read_bytes())})
    assert response.status_code == 201, response.text
    passes = [
        {"type": "prune", "method": "depth", "ratio": 0.25, "dataset_id": ids["text"]},
        {"type": "distill", "dataset_id": response.json()["id"], "epochs": 1, "lr": 3e-4, "batch_size": 16},
    ]
    report, _, _ = run_job(client, stack, spec(ids, passes))
    pruned, distilled = (step["perplexity"]["perplexity"] for step in report["steps"][:2])
    original = ppl(report["causal_lm"]["original"])
    metrics = report["steps"][0]["metrics"]
    print(
        f"\ndepth pruning 25% (dropped layers {metrics['layers_dropped']} of 4, importance "
        f"{[round(i, 3) for i in metrics['importance']]}): perplexity {original:.4f} -> {pruned:.4f} after pruning "
        f"-> {distilled:.4f} after 1 epoch of distillation; delivered {ppl(report['causal_lm']['result']):.4f}"
    )
    assert len(metrics["layers_kept"]) == 3, "a quarter of the 4 layers is dropped"
    assert pruned > original, "dropping a layer costs perplexity"
    assert distilled - original < (pruned - original) / 2, "distillation recovers most of what pruning lost"
