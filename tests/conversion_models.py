"""Small models as torch's exporters write them, for the ONNX -> torch tests: a DBNet-like detector (Resize,
ConvTranspose, Split, a sigmoid map), a CRNN recogniser (LSTM or GRU over a dynamic width), a transformer
encoder."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class Detector(nn.Module):
    """A DBNet-like text detector: a strided backbone, an upsampled skip, a transposed-conv head, two maps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.fuse = nn.Conv2d(24, 8, 3, padding=1)
        self.head = nn.ConvTranspose2d(8, 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.stem(x)
        high = F.interpolate(self.down(low), size=low.shape[2:], mode="nearest")
        fused = F.hardsigmoid(self.fuse(torch.cat([low, high], dim=1)))
        prob, thresh = torch.split(self.head(fused), 1, dim=1)
        up = F.interpolate(torch.sigmoid(prob - thresh), scale_factor=2.0, mode="bilinear")
        return up.clamp(0.0, 1.0)


class Recogniser(nn.Module):
    """A CRNN: convolutions over a text line, height pooled away, a bidirectional LSTM or GRU over the width.

    The GRU's keeps the width: torch 2.13's dynamo exporter cannot decompose a bidirectional GRU whose
    sequence length is a computed size (width // 2), so that model would not export back."""

    def __init__(self, cell: type[nn.LSTM] | type[nn.GRU]) -> None:
        super().__init__()
        pool = nn.MaxPool2d(2) if cell is nn.LSTM else nn.MaxPool2d((2, 1))
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), pool)
        self.rnn = cell(8, 12, bidirectional=True)
        self.out = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).amax(dim=2)  # [batch, channels, width]
        seq, _ = self.rnn(f.permute(2, 0, 1))
        return F.log_softmax(self.out(seq), dim=-1)


class Encoder(nn.Module):
    """A one-layer transformer encoder over token ids, mean-pooled into a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, activation="gelu")
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.layer(self.embed(ids))).mean(dim=1))


def export(module: nn.Module, example: torch.Tensor, path: Path, axes: list[int], dynamo: bool, opset: int) -> Path:
    module.eval()
    if dynamo:
        shapes = ({a: torch.export.Dim.AUTO for a in axes},)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=shapes,
            input_names=["x"],
            output_names=["y"],
            verbose=False,
        )
    else:
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {a: f"d{a}" for a in axes}},
        )
    return path
