"""Resize (opset 10 on: scales, or roi + scales + sizes from 11) and Upsample (before 10) as F.interpolate.

Only the coordinate/rounding modes F.interpolate computes exactly are taken; others are refused by name."""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from workers.conversion.onnx_to_torch.module import FormUnsupported, Value
from workers.conversion.onnx_to_torch.node import Node, ints

Maker = Callable[[Node], Callable[..., Value]]
LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def interpolation(node: Node, upscale_only: bool) -> tuple[str, bool | None]:
    """F.interpolate's (mode, align_corners) for the node's mode, coordinate mode and rounding."""
    mode = node.attrs.get("mode", "nearest")
    coordinates = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    if node.op == "Upsample" or node.opset < 11:
        coordinates = "asymmetric"
    if node.attrs.get("antialias", 0) or node.attrs.get("exclude_outside", 0):
        raise FormUnsupported("antialias / exclude_outside")
    if node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise FormUnsupported("keep_aspect_ratio_policy")
    if mode == "nearest":
        rounding = node.attrs.get("nearest_mode", "round_prefer_floor")
        if coordinates == "asymmetric" and (rounding == "floor" or node.opset < 11):
            return "nearest", None
        # half-pixel centres rounded up are nearest-exact; rounded down they differ only on downscaling ties
        if coordinates == "half_pixel" and (rounding == "round_prefer_ceil" or upscale_only):
            return "nearest-exact", None
        raise FormUnsupported(f"nearest with {coordinates} / {rounding}")
    if mode == "linear" and coordinates in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return "linear", coordinates == "align_corners"
    if mode == "cubic" and coordinates in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        if float(node.attrs.get("cubic_coeff_a", -0.75)) != -0.75:
            raise FormUnsupported("cubic_coeff_a other than -0.75")
        return "bicubic", coordinates == "align_corners"
    raise FormUnsupported(f"mode {mode} with {coordinates}")


def _resize(node: Node) -> Callable[..., Value]:
    if node.attrs.get("axes") is not None:
        raise FormUnsupported("axes")
    scales_index = 1 if node.op == "Upsample" or node.opset < 11 else 2
    fixed = node.attrs.get("scales") or (node.static(scales_index) if node.input(scales_index) else None)
    fixed_scales = [float(s) for s in fixed] if fixed is not None and len(fixed) else None
    mode, align = interpolation(node, fixed_scales is not None and all(s >= 1 for s in fixed_scales))

    def fn(x: torch.Tensor, *rest: Value) -> torch.Tensor:
        spatial = x.dim() - 2
        torch_mode = LINEAR[spatial] if mode == "linear" else mode
        kwargs: dict[str, Any] = {"mode": torch_mode}
        if align is not None:
            kwargs["align_corners"] = align
        sizes = rest[2] if len(rest) > 2 and rest[2] is not None else None
        if sizes is not None and len(ints(sizes)):
            return F.interpolate(x, size=ints(sizes)[2:], **kwargs)
        given = rest[scales_index - 1]
        scales = fixed_scales or [
            float(s) for s in (given.reshape(-1).tolist() if isinstance(given, torch.Tensor) else given)
        ]
        if scales[0] != 1 or scales[1] != 1:
            raise FormUnsupported("Resize (scales on the batch or channel axis)")  # seen at run time only
        return F.interpolate(x, scale_factor=scales[2:], recompute_scale_factor=False, **kwargs)

    return fn


OPS: dict[str, Maker] = {"Resize": _resize, "Upsample": _resize}
