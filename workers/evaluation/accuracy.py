"""Top-1 accuracy of a classifier's outputs against a dataset's integer labels."""

import numpy as np


def top1(outputs: list[list[np.ndarray]], index: int, labels: np.ndarray) -> float | None:
    """`outputs[b][index]` is the scored output on batch b (argmax over its last axis, one class per sample);
    None when the output does not have one score row per label."""
    if len({batch[index].shape[1:] for batch in outputs}) != 1:
        return None
    scores = np.concatenate([batch[index] for batch in outputs])
    if scores.ndim < 2 or scores.shape[0] != labels.shape[0]:
        return None
    predicted = scores.reshape(scores.shape[0], -1, scores.shape[-1]).argmax(axis=-1)
    if predicted.shape[1] != 1:
        return None
    return float((predicted[:, 0] == labels).mean())
