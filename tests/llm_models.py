"""A small Llama-architecture causal LM trained here, for the LLM tests and bench/llm.py: a corpus generated
from a fixed grammar (no downloads), a byte-level BPE tokenizer trained on it with the `tokenizers` package,
and a 4-layer, 256-wide LlamaForCausalLM trained on it to a perplexity far below the unigram baseline, saved
as the zipped Hugging Face folder a user uploads (config.json, model.safetensors, tokenizer files)."""

import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workers.examples import zip_folder

if TYPE_CHECKING:  # transformers loads inside the builders
    from transformers import LlamaConfig, PreTrainedTokenizerFast

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kate", "Leo"]
PLACES = ["the market", "the station", "the library", "the harbour", "the museum", "the garden", "the office"]
THINGS = ["bread", "a book", "fresh fish", "a red umbrella", "two tickets", "a map", "some coffee", "a letter"]
TIMES = ["in the morning", "at noon", "after lunch", "in the evening", "on Sunday", "before the rain"]
FEELINGS = ["happy", "tired", "surprised", "calm", "hungry", "curious"]
TEMPLATES = [
    "{a} went to {p} {t} and bought {x}.",
    "{a} met {b} at {p} {t}.",
    "At {p}, {a} gave {b} {x}.",
    "{a} was {f} because {b} had brought {x}.",
    "{t}, {a} and {b} walked home from {p}.",
    "{a} asked {b} where {p} was, and {b} showed {a} a map.",
]
PROMPTS = [
    "Anna went to the market",
    "At the station, Ben",
    "Clara was happy because",
    "In the evening, David and Emma",
    "Felix asked Grace where",
    "Hugo met Iris at",
    "Jonas went to the library",
    "Kate was tired because Leo",
]
"""the fixed prompts the greedy-generation checks start from"""
VOCAB = 384
CONTEXT = 128
WINDOW = 64
"""training and perplexity windows, in tokens"""


def sentence(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    return rng.choice(TEMPLATES).format(
        a=a, b=b, p=rng.choice(PLACES), x=rng.choice(THINGS), t=rng.choice(TIMES), f=rng.choice(FEELINGS)
    )


def corpus(documents: int, seed: int) -> list[str]:
    """`documents` lines of text, each three to five sentences of the grammar, the same for the same seed."""
    rng = random.Random(seed)
    return [" ".join(sentence(rng) for _ in range(rng.randint(3, 5))) for _ in range(documents)]


def train_tokenizer(texts: list[str], folder: Path) -> "PreTrainedTokenizerFast":
    """A byte-level BPE of VOCAB tokens trained on `texts`, saved in `folder` as AutoTokenizer loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=CONTEXT,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(str(folder))
    return fast


@dataclass
class TrainedLM:
    folder: Path
    """the Hugging Face folder (config.json, model.safetensors, tokenizer files)"""
    perplexity: float
    """on held-out documents of the grammar, after training"""
    unigram_perplexity: float
    """a unigram model of the training tokens on the same documents: what no context gives"""
    seconds: float


def _token_stream(tokenizer: "PreTrainedTokenizerFast", texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for text in texts:
        ids += [tokenizer.bos_token_id, *tokenizer(text)["input_ids"], tokenizer.eos_token_id]
    return torch.tensor(ids)


def unigram_perplexity(train: torch.Tensor, held_out: torch.Tensor) -> float:
    counts = Counter(train.tolist())
    total = sum(counts.values()) + VOCAB  # add-one smoothing
    nll = [-math.log((counts.get(t, 0) + 1) / total) for t in held_out.tolist()]
    return math.exp(sum(nll) / len(nll))


def _perplexity(model: torch.nn.Module, stream: torch.Tensor) -> float:
    windows = stream[: len(stream) // WINDOW * WINDOW].view(-1, WINDOW)
    with torch.inference_mode():
        loss = model(input_ids=windows, labels=windows).loss
    return math.exp(float(loss))


def llama_config(layers: int = 4, hidden: int = 256) -> "LlamaConfig":
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def train_llama(folder: Path, steps: int = 150, seed: int = 0) -> TrainedLM:
    """The tokenizer and the model trained on 3,000 generated documents with a fixed seed (WINDOW-token
    windows, batch 16, AdamW with a cosine schedule), saved in `folder`."""
    from transformers import LlamaForCausalLM

    started = time.perf_counter()
    torch.manual_seed(seed)
    texts = corpus(3000, seed)
    tokenizer = train_tokenizer(texts, folder)
    stream = _token_stream(tokenizer, texts)
    held_out = _token_stream(tokenizer, corpus(64, seed + 1))
    model = LlamaForCausalLM(llama_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - WINDOW - 1, (16,), generator=generator)
        batch = torch.stack([stream[s : s + WINDOW] for s in starts.tolist()])
        optimizer.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    model.generation_config.pad_token_id = 0
    model.save_pretrained(str(folder), safe_serialization=True)
    return TrainedLM(
        folder, _perplexity(model, held_out), unigram_perplexity(stream, held_out), time.perf_counter() - started
    )


def evaluation_text(path: Path, documents: int = 48, seed: int = 7) -> Path:
    """Held-out documents of the grammar, one a line: the text dataset LLM jobs evaluate and calibrate on."""
    path.write_text("\n".join(corpus(documents, seed)) + "\n", encoding="utf-8")
    return path


def llama_zip(folder: Path, path: Path) -> Path:
    return zip_folder(folder, path, "tiny-llama")
