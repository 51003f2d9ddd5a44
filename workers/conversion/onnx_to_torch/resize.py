"""Resize (opset 10 on: scales, or roi + scales + sizes from 11) and Upsample (before 10).

Where F.interpolate computes ONNX's coordinate and rounding modes exactly it is used (it exports back to one
Resize); the other nearest and linear forms (Paddle2ONNX's asymmetric linear, round_prefer_floor nearest,
tf_half_pixel_for_nn) are computed axis by axis from ONNX's own formulas with index gathers."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from workers.conversion.onnx_to_torch.module import FormUnsupported, Value
from workers.conversion.onnx_to_torch.node import Node, ints

Maker = Callable[[Node], Callable[..., Value]]
LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}
COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
ROUNDING: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "round_prefer_floor": lambda c: torch.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: torch.floor(c + 0.5),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


@dataclass(frozen=True)
class Form:
    mode: str
    """nearest, linear or cubic"""
    coordinates: str
    rounding: str
    interpolate: tuple[str, bool | None] | None
    """F.interpolate's (mode, align_corners) when it computes this form exactly, else None: gathered"""


def form_of(node: Node, upscale_only: bool) -> Form:
    mode = node.attrs.get("mode", "nearest")
    coordinates = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    rounding = node.attrs.get("nearest_mode", "round_prefer_floor")
    if node.op == "Upsample" or node.opset < 11:
        coordinates, rounding = "asymmetric", "floor"
    if node.attrs.get("antialias", 0) or node.attrs.get("exclude_outside", 0):
        raise FormUnsupported("antialias / exclude_outside")
    if node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise FormUnsupported("keep_aspect_ratio_policy")
    if coordinates not in COORDINATES or mode not in ("nearest", "linear", "cubic"):
        raise FormUnsupported(f"mode {mode} with {coordinates}")
    return Form(mode, coordinates, rounding, _interpolate(mode, coordinates, rounding, upscale_only, node))


def _interpolate(mode: str, coordinates: str, rounding: str, upscale_only: bool, node: Node) -> Any:
    if mode == "nearest":
        if coordinates == "asymmetric" and rounding == "floor":
            return "nearest", None
        # half-pixel centres rounded up are nearest-exact; rounded down they differ only on downscaling ties
        if coordinates == "half_pixel" and (rounding == "round_prefer_ceil" or upscale_only):
            return "nearest-exact", None
        return None
    if coordinates in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        if mode == "cubic" and float(node.attrs.get("cubic_coeff_a", -0.75)) != -0.75:
            raise FormUnsupported("cubic_coeff_a other than -0.75")
        return ("linear" if mode == "linear" else "bicubic"), coordinates == "align_corners"
    if mode == "cubic":
        raise FormUnsupported(f"mode cubic with {coordinates}")
    return None


def _source(form: Form, size_in: Any, size_out: Any, scale: float, device: torch.device) -> torch.Tensor:
    """ONNX's coordinate transformation: where each output position samples the input."""
    x = torch.arange(size_out, dtype=torch.float32, device=device)
    if form.coordinates == "asymmetric":
        return x / scale
    if form.coordinates == "align_corners":
        return x * ((size_in - 1) / (size_out - 1)) if size_out > 1 else x * 0
    if form.coordinates == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if form.coordinates == "pytorch_half_pixel" and size_out == 1:
        return x * 0
    return (x + 0.5) / scale - 0.5


def _gathered(x: torch.Tensor, form: Form, sizes: list[Any], scales: list[float]) -> torch.Tensor:
    """Nearest or linear, one spatial axis at a time (both are separable)."""
    for i, (size_out, scale) in enumerate(zip(sizes, scales, strict=True)):
        dim, size_in = 2 + i, x.shape[2 + i]
        c = _source(form, size_in, size_out, scale, x.device)
        if form.mode == "nearest":
            index = ROUNDING[form.rounding](c).clamp(0, size_in - 1).long()
            x = x.index_select(dim, index)
            continue
        c = c.clamp(0, size_in - 1)
        low = c.floor().long()
        high = (low + 1).clamp(max=size_in - 1)
        weight = (c - low).reshape([-1] + [1] * (x.dim() - dim - 1)).to(x.dtype)
        x = x.index_select(dim, low) * (1 - weight) + x.index_select(dim, high) * weight
    return x


def _floats(value: Value) -> list[float]:
    return [float(s) for s in (value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else value)]


def _resize(node: Node) -> Callable[..., Value]:
    if node.attrs.get("axes") is not None:
        raise FormUnsupported("axes")
    scales_index = 1 if node.op == "Upsample" or node.opset < 11 else 2
    fixed = node.attrs.get("scales") or (node.static(scales_index) if node.input(scales_index) else None)
    fixed_scales = [float(s) for s in fixed] if fixed is not None and len(fixed) else None
    form = form_of(node, fixed_scales is not None and all(s >= 1 for s in fixed_scales))

    def fn(x: torch.Tensor, *rest: Value) -> torch.Tensor:
        given_sizes = rest[2] if len(rest) > 2 and rest[2] is not None and len(ints(rest[2])) else None
        if given_sizes is not None:
            sizes = ints(given_sizes)[2:]
            scales = [size / x.shape[2 + i] for i, size in enumerate(sizes)]
        else:
            all_scales = fixed_scales or _floats(rest[scales_index - 1])
            if all_scales[0] != 1 or all_scales[1] != 1:
                raise FormUnsupported("Resize (scales on the batch or channel axis)")  # seen at run time only
            scales = all_scales[2:]
            sizes = [math.floor(x.shape[2 + i] * s) for i, s in enumerate(scales)]
        if form.interpolate is None:
            return _gathered(x, form, sizes, scales)
        mode, align = form.interpolate
        kwargs: dict[str, Any] = {"mode": LINEAR[x.dim() - 2] if mode == "linear" else mode}
        if align is not None:
            kwargs["align_corners"] = align
        if given_sizes is not None:
            return F.interpolate(x, size=sizes, **kwargs)
        return F.interpolate(x, scale_factor=scales, recompute_scale_factor=False, **kwargs)

    return fn


OPS: dict[str, Maker] = {"Resize": _resize, "Upsample": _resize}
