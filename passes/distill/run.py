"""distill: train a student to reproduce the job's original model (the teacher) on a dataset.

The teacher's outputs are computed once, before training. Logits (a [batch, classes] output) are matched
by KL divergence on temperature-softened distributions (times T^2), plus alpha x cross-entropy when the
dataset has labels; any other output (embeddings, hidden states) by MSE or 1 - cosine.
"""

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from app.schemas.errors import JobErrorCode
from passes.distill.config import Config
from workers.context import PassContext
from workers.evaluation.causal_lm import is_causal_lm
from workers.layers import deepest_stack, keep_layers
from workers.runtime import ModelHandle
from workers.training import Loss, dataset, fit, is_logits, predict


def drop_layers(module: nn.Module) -> tuple[nn.Module, list[int], int]:
    """A copy of a transformer keeping every other layer of its deepest stack of layers (the last one kept):
    MiniLM's 6 encoder layers become 3. Returns the copy, the kept indices and the original depth."""
    student = copy.deepcopy(module)
    name, stack = deepest_stack(
        student,
        JobErrorCode.distill_unsupported,
        "student 'drop_layers' needs a transformer with a stack of layers (e.g. a Hugging Face BERT-like model); "
        "use student 'current' instead",
    )
    depth = len(stack)
    kept = list(range(depth))[1::2] if depth % 2 == 0 else list(range(depth))[::2]
    keep_layers(student, name, kept)
    return student, kept, depth


def distill_loss(
    teacher: torch.Tensor, labels: torch.Tensor | None, config: Config, device: str, token_logits: bool
) -> Loss:
    temperature = config.temperature
    if token_logits:
        return token_kl(teacher, temperature, device)
    if is_logits(teacher):
        soft = F.softmax(teacher / temperature, dim=1)

        def kd(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            loss = (
                F.kl_div(F.log_softmax(out / temperature, dim=1), soft[index].to(device), reduction="batchmean")
                * temperature**2
            )
            if labels is not None:
                loss = loss + config.alpha * F.cross_entropy(out, labels[index].to(device))
            return loss

        return kd
    if config.embedding_loss == "cosine":

        def cosine(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            target = teacher[index].to(device)
            return 1 - F.cosine_similarity(out.float().flatten(1), target.flatten(1), dim=1).mean()

        return cosine

    def mse(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out.float(), teacher[index].to(device))

    return mse


def is_token_logits(teacher: ModelHandle, output: torch.Tensor) -> bool:
    """A causal LM's next-token logits at every position, [batch, sequence, vocab]; an encoder's [batch,
    sequence, hidden] states are matched as embeddings (embedding_loss)."""
    causal = is_causal_lm(teacher) or teacher.kv_cache is not None
    return causal and output.dim() == 3 and output.shape[-1] > 1


def token_kl(teacher: torch.Tensor, temperature: float, device: str) -> Loss:
    """KL divergence of the student's next-token distribution from the teacher's at every position."""
    soft = F.softmax(teacher / temperature, dim=-1)

    def kd(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(out.float() / temperature, dim=-1).flatten(0, 1)
        target = soft[index].to(device).flatten(0, 1)
        return F.kl_div(log_p, target, reduction="batchmean") * temperature**2

    return kd


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    teacher: ModelHandle = ctx.original
    data = dataset(ctx.datasets, config.dataset_id, handle.input_names)
    metrics: dict[str, Any] = {
        "teacher": teacher.origin,
        "student": config.student,
        "device": ctx.device,
        "dataset_id": config.dataset_id,
    }
    if config.student == "drop_layers":
        student, kept, depth = drop_layers(handle.module)
        metrics.update({"layers_kept": kept, "layers_before": depth})
    else:
        student = copy.deepcopy(handle.module)
    targets = predict(teacher, data, config.batch_size, ctx.device)
    labels = torch.from_numpy(data["labels"]).long() if "labels" in data else None
    token_logits = is_token_logits(teacher, targets)
    loss = distill_loss(targets, labels, config, ctx.device, token_logits)
    metrics["loss"] = (
        "kl per token"
        if token_logits
        else "kl" + ("+alpha*ce" if labels is not None else "")
        if is_logits(targets)
        else config.embedding_loss
    )
    metrics["epoch_losses"] = fit(
        student,
        data,
        handle.input_names,
        loss,
        config.epochs,
        config.lr,
        config.batch_size,
        ctx.device,
    )
    metrics["student_params"] = sum(p.numel() for p in student.parameters())
    ctx.metrics.update(metrics)
    return handle.with_torch(student)
