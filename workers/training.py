"""Training loops shared by the passes that change weights (prune, lowrank fine-tuning; distill): batches
of a dataset in the model's input order, on the job's device, with the model's first output as prediction."""

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from app.schemas.errors import JobErrorCode
from passes.finetune import FinetuneConfig
from workers.runtime import Feeds, ModelHandle, PassFailed, onnx_session, run

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(prediction, batch indices) -> loss"""


def check_dataset(data: Feeds, input_names: list[str], dataset_id: str) -> int:
    """The number of samples; fails the job when an input is missing or the arrays disagree in length."""
    missing = [n for n in input_names if n not in data]
    if missing:
        raise PassFailed(
            JobErrorCode.dataset_mismatch,
            f"dataset {dataset_id} has no array for input(s) {missing}; it holds {sorted(data)}",
        )
    sizes = {len(data[n]) for n in [*input_names, *(["labels"] if "labels" in data else [])]}
    if len(sizes) != 1:
        raise PassFailed(
            JobErrorCode.dataset_mismatch, f"dataset {dataset_id}'s arrays differ in length: {sorted(sizes)}"
        )
    return sizes.pop()


def _first(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, list | tuple) else result


def forward(
    module: torch.nn.Module, data: Feeds, input_names: list[str], index: torch.Tensor | slice, device: str
) -> torch.Tensor:
    """The module's first output on the rows `index` of `data`."""
    tensors = [torch.from_numpy(np.ascontiguousarray(data[n][index])).to(device) for n in input_names]
    return _first(module(*tensors))


def predict(handle: ModelHandle, data: Feeds, batch_size: int, device: str) -> torch.Tensor:
    """The first output on every sample, on the CPU: targets for fine-tuning or a teacher's outputs."""
    count = len(data[handle.input_names[0]])
    chunks = []
    if handle.kind == "onnx":
        session = onnx_session(handle.path, threads=torch.get_num_threads())
        for start in range(0, count, batch_size):
            feeds = {n: data[n][start : start + batch_size] for n in handle.input_names}
            chunks.append(torch.from_numpy(run(handle, feeds, session)[0]).float())
        return torch.cat(chunks)
    module = handle.module.to(device)
    with torch.no_grad():
        for start in range(0, count, batch_size):
            chunks.append(
                forward(module, data, handle.input_names, slice(start, start + batch_size), device).float().cpu()
            )
    handle.module.to("cpu")
    return torch.cat(chunks)


def is_logits(output: torch.Tensor) -> bool:
    return output.dim() == 2 and output.shape[1] > 1


def fit(
    module: torch.nn.Module,
    data: Feeds,
    input_names: list[str],
    loss_fn: Loss,
    epochs: int,
    lr: float,
    batch_size: int,
    device: str,
    after_step: Callable[[], None] | None = None,
    seed: int = 0,
) -> list[float]:
    """Adam over every trainable parameter; returns the mean loss of each epoch. The module ends on the CPU,
    in eval mode."""
    count = len(data[input_names[0]])
    module.to(device).train()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    try:
        for _ in range(epochs):
            total = 0.0
            order = torch.randperm(count, generator=generator)
            for index in order.split(batch_size):
                optimizer.zero_grad()
                loss = loss_fn(forward(module, data, input_names, index.numpy(), device), index)
                if not math.isfinite(loss.item()):
                    raise PassFailed(
                        JobErrorCode.training_diverged, f"the training loss became {loss.item()}; lower `lr`"
                    )
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    with torch.no_grad():
                        after_step()
                total += loss.item() * len(index)
            history.append(total / count)
    finally:
        module.zero_grad(set_to_none=True)
        module.to("cpu").eval()
    return history


def finetune_loss(data: Feeds, targets: torch.Tensor | None, device: str) -> Loss:
    """Cross-entropy on the dataset's labels when it has them, else MSE to `targets` (the outputs of the model
    as it entered the pass)."""
    if "labels" in data:
        labels = torch.from_numpy(np.asarray(data["labels"])).long()

        def ce(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(out, labels[index].to(device))

        return ce
    assert targets is not None

    def mse(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(out.float(), targets[index].to(device))

    return mse


def dataset(datasets: dict[str, Feeds], dataset_id: str, input_names: list[str]) -> Feeds:
    """The dataset the pipeline loaded for `dataset_id`, checked against the model's inputs."""
    if dataset_id not in datasets:
        raise PassFailed(JobErrorCode.dataset_missing, f"dataset {dataset_id} was not loaded for this job")
    data = datasets[dataset_id]
    check_dataset(data, input_names, dataset_id)
    return data


class Finetuner:
    """Fine-tuning of a pass that changes weights: targets come from the model as it entered the pass (taken
    before the change), training runs after it."""

    def __init__(
        self, config: FinetuneConfig | None, handle: ModelHandle, datasets: dict[str, Feeds], device: str
    ) -> None:
        self.config = config
        self.device = device
        self.input_names = handle.input_names
        self.data: Feeds = {}
        self.targets: torch.Tensor | None = None
        if config is not None:
            self.data = dataset(datasets, config.dataset_id, handle.input_names)
            if "labels" not in self.data:
                self.targets = predict(handle, self.data, config.batch_size, device)

    def loss(self) -> Loss:
        return finetune_loss(self.data, self.targets, self.device)

    def run(self, module: torch.nn.Module, after_step: Callable[[], None] | None = None) -> dict[str, Any] | None:
        """Train `module` in place; returns what the report shows (epochs, loss per epoch), None without
        config."""
        if self.config is None:
            return None
        losses = fit(
            module,
            self.data,
            self.input_names,
            self.loss(),
            self.config.epochs,
            self.config.lr,
            self.config.batch_size,
            self.device,
            after_step,
        )
        return {
            "dataset_id": self.config.dataset_id,
            "epochs": self.config.epochs,
            "device": self.device,
            "loss": "cross_entropy" if "labels" in self.data else "mse_to_input_model",
            "epoch_losses": losses,
        }
