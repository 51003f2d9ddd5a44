"""convert: a torch model (ExportedProgram, TorchScript, Hugging Face) to ONNX with torch.onnx's
dynamo exporter, keeping dynamic axes dynamic; an ONNX model to another opset; an ONNX model to torch
(our converter, real layers holding the weights); a torch model to a .pt2 ExportedProgram or TorchScript;
an ONNX model to OpenVINO IR or TFLite (passes.convert.deployment)."""

import contextlib
import inspect
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import version_converter

from app.schemas.errors import JobErrorCode
from passes.convert.causal_lm_export import export_causal_lm, is_causal_lm
from passes.convert.config import Config
from passes.convert.deployment import to_openvino, to_tflite
from passes.convert.transformer_export import export_form
from workers.context import PassContext
from workers.runtime import CompiledPackage, ModelHandle, PassFailed, device_of

log = logging.getLogger(__name__)
DEFAULT_OPSET = 18


def export_to_onnx(handle: ModelHandle, ctx: PassContext, opset: int) -> ModelHandle:
    """torch.onnx.export(dynamo=True) with the handle's dynamic axes; weights kept inside the file. A causal
    LM exports with its KV cache (passes.convert.causal_lm_export)."""
    if is_causal_lm(handle.module):
        return export_causal_lm_handle(handle, ctx, opset)
    args = []
    dynamic_shapes = []
    for name in handle.input_names:
        tensor = torch.from_numpy(ctx.example[name])
        dims = handle.dynamic_axes.get(name, [])
        # Batch 2 for the trace: 1 would be specialised away, and a size shared with another
        # axis could be unified with it.
        if 0 in dims and tensor.shape[0] != 2 and 2 not in tensor.shape[1:]:
            tensor = torch.cat([tensor[:1], tensor[:1]]) if tensor.shape[0] == 1 else tensor[:2]
        args.append(tensor)
        dynamic_shapes.append({axis: torch.export.Dim.AUTO for axis in dims})
    shapes: tuple[Any, ...] = tuple(dynamic_shapes)
    try:
        params = list(inspect.signature(handle.module.forward).parameters.values())
    except ValueError:  # a TorchScript method has no Python signature; its inputs are positional
        params = []
    if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        shapes = (shapes,)  # forward(*tensors): one positional structure holding every input
    path = ctx.path("model.onnx")
    try:
        if isinstance(handle.module, torch.jit.ScriptModule):
            # The dynamo exporter refuses ScriptModules; torch.onnx's TorchScript exporter still takes them.
            torch.onnx.export(
                handle.module,
                tuple(args),
                str(path),
                input_names=handle.input_names,
                output_names=handle.output_names,
                opset_version=opset,
                dynamo=False,
                dynamic_axes={n: handle.dynamic_axes.get(n, []) for n in handle.input_names},
            )
        else:
            with export_form(handle.module, ctx.example) as module:
                torch.onnx.export(
                    module,
                    tuple(args),
                    str(path),
                    input_names=handle.input_names,
                    output_names=handle.output_names,
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    dynamic_shapes=shapes,
                    # torch 2.13's graph optimizer folds an LSTM/GRU/RNN's sequence length into a constant
                    # (the model then refuses any other length); without it the axis stays dynamic
                    optimize=not any(isinstance(m, torch.nn.RNNBase) for m in handle.module.modules()),
                    verbose=False,
                )
    except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        raise PassFailed(
            JobErrorCode.conversion_failed, f"torch.onnx.export failed: {type(root).__name__}: {str(root)[:800]}"
        ) from exc
    model = onnx.load(str(path), load_external_data=False)
    return handle.with_onnx(path, [o.name for o in model.graph.output])


def export_causal_lm_handle(handle: ModelHandle, ctx: PassContext, opset: int) -> ModelHandle:
    path = ctx.path("model.onnx")
    try:
        cache = export_causal_lm(handle.module, path, opset)
    except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        raise PassFailed(
            JobErrorCode.conversion_failed,
            f"the causal LM did not export with a KV cache: {type(root).__name__}: {str(root)[:800]}",
        ) from exc
    return replace(handle.with_onnx(path, ["logits"]), kv_cache=cache)


def _trace_args(handle: ModelHandle, ctx: PassContext) -> tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]:
    args, dynamic_shapes = [], []
    for name in handle.input_names:
        tensor = torch.from_numpy(ctx.example[name])
        dims = handle.dynamic_axes.get(name, [])
        if 0 in dims and tensor.shape[0] == 1:
            tensor = torch.cat([tensor, tensor])  # batch 1 would be specialised away
        args.append(tensor)
        dynamic_shapes.append({axis: torch.export.Dim.AUTO for axis in dims})
    return tuple(args), tuple(dynamic_shapes)


def onnx_to_torch_handle(handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    """The ONNX model as a torch module whose Conv/Linear/BatchNorm layers hold the weights."""
    from workers.conversion.onnx_to_torch import ConversionUnsupported, onnx_to_torch

    try:
        module = onnx_to_torch(onnx.load(str(handle.path)), ctx.example)
    except ConversionUnsupported as exc:
        raise PassFailed(
            JobErrorCode.conversion_unsupported,
            f"ONNX -> torch does not cover operator(s) "
            f"{', '.join(exc.ops)}; run the ONNX passes (quantize, optimize) on this model "
            "instead",
        ) from exc
    return handle.with_torch(module)


def export_torch_artifact(handle: ModelHandle, ctx: PassContext, to: str, aoti: bool | None) -> ModelHandle:
    """Save the torch model as a .pt2 ExportedProgram (dynamic axes kept; with `aoti`, also compiled into an
    AOTInductor package) or as TorchScript (traced), and continue with the module loaded back from that file,
    so what is checked is what is downloaded."""
    args, shapes = _trace_args(handle, ctx)
    module = handle.module
    with contextlib.suppress(NotImplementedError):  # a module from torch.export keeps its exported mode
        module = module.eval()
    try:
        if to == "pt2":  # traced on its weights' device: a GPU method's program takes CUDA tensors
            args = tuple(arg.to(device_of(module)) for arg in args)
            path = ctx.path("model.pt2")
            params = list(inspect.signature(module.forward).parameters.values())
            if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
                shapes = (shapes,)
            program = torch.export.export(module, args, dynamic_shapes=shapes)
            torch.export.save(program, str(path))
        else:
            path = ctx.path("model.torchscript.pt")
            with torch.no_grad():
                traced = torch.jit.trace(module, args, check_trace=False)
            torch.jit.save(traced, str(path))
            return handle.with_torch(torch.jit.load(str(path), map_location="cpu").eval(), path)
    except Exception as exc:  # export and tracing raise many types; all mean "this model did not export"
        raise PassFailed(
            JobErrorCode.conversion_failed, f"export to {to} failed: {type(exc).__name__}: {str(exc)[:800]}"
        ) from exc
    wanted = aoti or (aoti is None and ctx.device == "cuda")
    package = compile_package(program, args, ctx, aoti, device_of(module)) if wanted else None
    return handle.with_torch(torch.export.load(str(path)).module(), path, package)


def compile_package(
    program: torch.export.ExportedProgram,
    args: tuple[torch.Tensor, ...],
    ctx: PassContext,
    required: bool | None,
    device: torch.device,
) -> Path | None:
    """The program compiled ahead of time by AOTInductor for `device`, where its tensors are (model.aoti.pt2),
    loaded back and run once on the trace's inputs; its compile time goes in the step's metrics. Where the
    compiler cannot take the program or the package does not run: a failed job when the spec asked for it
    (`required`), else None, with the reason in the metrics."""
    from torch._inductor import aoti_compile_and_package

    path = ctx.path("model.aoti.pt2")
    started = time.perf_counter()
    try:
        aoti_compile_and_package(program, package_path=str(path))
        seconds = time.perf_counter() - started
        with torch.inference_mode():
            CompiledPackage(path, device)(*args)
    except Exception as exc:  # inductor and the package's runner raise many types; all mean "no package"
        reason = f"{type(exc).__name__}: {str(exc)[:800]}"
        if required:
            raise PassFailed(
                JobErrorCode.conversion_failed,
                f"AOTInductor could not compile a package that runs: {reason}; convert to pt2 without aoti",
            ) from exc
        log.warning("no AOTInductor package; the .pt2 is delivered alone: %s", reason)
        ctx.metrics["aoti"] = {"device": device.type, "error": reason}
        return None
    ctx.metrics["aoti"] = {"device": device.type, "compile_seconds": seconds}
    return path


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    if config.to == "openvino":
        return to_openvino(config, handle, ctx)
    if config.to == "tflite":
        return to_tflite(config, handle, ctx)
    if config.to != "onnx":
        if handle.kind == "onnx":
            handle = onnx_to_torch_handle(handle, ctx)
        return handle if config.to == "torch" else export_torch_artifact(handle, ctx, config.to, config.aoti)
    if handle.kind == "torch":
        return export_to_onnx(handle, ctx, config.opset or DEFAULT_OPSET)
    return change_opset(handle, ctx, config.opset)


def change_opset(handle: ModelHandle, ctx: PassContext, opset: int | None) -> ModelHandle:
    """The ONNX model at `opset` (onnx's version converter), or as it is when it has that opset already."""
    model = onnx.load(str(handle.path))
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or current == opset:
        return handle
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # onnx raises a bare RuntimeError subclass per unsupported adapter
        raise PassFailed(
            JobErrorCode.conversion_failed,
            f"onnx's version converter cannot move this model from opset {current} to {opset} "
            f"({type(exc).__name__}); keep its opset or export it again at {opset}",
        ) from exc
    path = ctx.path("model.onnx")
    onnx.save(converted, str(path))
    return handle.with_onnx(path)
