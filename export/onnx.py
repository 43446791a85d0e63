"""ONNX export of gantk generators: a clean static graph with dynamic batch/height/width, metadata,
an fp16/bf16 variant that keeps normalisation in fp32, and a TensorRT-parser lint."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.export.spec import ExportSpec, on_device
from gantk.runtime import require_module

DEFAULT_OPSET = 17


def _onnx():
    return require_module("onnx", "ONNX export")


def export_onnx(spec: ExportSpec, path: str | Path, opset: int = DEFAULT_OPSET, size: int | None = None) -> Path:
    """Write `spec.net` as ONNX: named inputs/outputs, dynamic N/H/W, constants folded, checked."""
    onnx = _onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = spec.example_inputs(batch=1, size=size or spec.default_size())
    dims = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}
    if spec.nz:
        dims["z"] = {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), on_device(spec.net, "cpu"):
        warnings.simplefilter("ignore")
        torch.onnx.export(spec.net, example, buf, dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=spec.input_names, output_names=["output"], dynamic_axes=dims)
    model = fold_constants(onnx.load_from_string(buf.getvalue()))
    set_metadata(model, spec.metadata())
    check_onnx(model, str(path))
    onnx.save(model, str(path))
    return path


def fold_constants(model):
    """Fold every subgraph of constants (e.g. the exporter's reflect-pad index arithmetic) into initializers
    and drop what no output uses: onnx-graphsurgeon's folding, as `polygraphy surgeon sanitize
    --fold-constants` does, so Pad/Conv see plain constant inputs."""
    import onnx_graphsurgeon as gs
    graph = gs.import_onnx(model)
    graph.fold_constants().cleanup().toposort()
    folded = gs.export_onnx(graph)
    del folded.graph.value_info[:]
    return _onnx().shape_inference.infer_shapes(folded)


def set_metadata(model, meta: dict) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v)
    model.producer_name = "gantk"


def read_metadata(model) -> dict:
    out = {}
    for p in model.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except json.JSONDecodeError:
            out[p.key] = p.value
    return out


def check_onnx(model, source: str) -> None:
    """onnx.checker full check (incl. strict shape inference); one-line error on failure."""
    onnx = _onnx()
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise GantkError(f"{source}: ONNX checker failed: {str(e).splitlines()[0]}") from None


def load_onnx(path: str | Path):
    """Load and check an ONNX file; a missing, truncated or corrupt file is a one-line error."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise GantkError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise GantkError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    if not model.graph.node:
        raise GantkError(f"{path}: not a readable ONNX model (empty graph)")
    check_onnx(model, str(path))
    return model


# --- reduced precision ----------------------------------------------------------------------------
KEEP_FP32_OPS = {"InstanceNormalization", "BatchNormalization", "ReduceMean", "LayerNormalization"}
BF16_MIN_OPSET = 22  # Conv/ConvTranspose/InstanceNormalization take bfloat16 from opset 22 on


def convert_precision(model, dtype: str = "fp16"):
    """A copy of `model` computing in fp16 (or bf16) with fp32 inputs/outputs: onnxconverter-common's float16
    converter with the normalisation ops blocked, so they run in fp32 behind Casts (InstanceNorm's variance
    overflows fp16 otherwise). bf16: the same graph retyped, its weights rounded from the fp32 originals, at
    opset BF16_MIN_OPSET at least (earlier opsets have no bfloat16 Conv, so the graph would be invalid)."""
    onnx = _onnx()
    from onnx import version_converter
    from onnxconverter_common import float16
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if dtype == "bf16" and opset_of(m) < BF16_MIN_OPSET:
        m = version_converter.convert_version(m, BF16_MIN_OPSET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on values clamped to the fp16 range
        low = float16.convert_float_to_float16(m, keep_io_types=True,
                                               op_block_list=float16.DEFAULT_OP_BLOCK_LIST + sorted(KEEP_FP32_OPS))
    if dtype == "bf16":
        _retype_bf16(low, m)
    meta = read_metadata(low)
    meta["precision"] = dtype
    set_metadata(low, meta)
    del low.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(low)


def _retype_bf16(low, fp32) -> None:
    """Turn the fp16 graph `low` into bf16 in place: every float16 type and Cast becomes bfloat16, and each
    weight is rounded to bf16 from its fp32 original in `fp32` (not from its fp16 copy)."""
    from onnx import TensorProto, numpy_helper
    f16, bf16 = TensorProto.FLOAT16, TensorProto.BFLOAT16
    originals = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    for i, t in enumerate(low.graph.initializer):
        if t.data_type == f16:
            low.graph.initializer[i].CopyFrom(_cast_tensor(originals.get(t.name, numpy_helper.to_array(t)), t.name, bf16))
    g = low.graph
    for v in (*g.input, *g.output, *g.value_info):
        if v.type.tensor_type.elem_type == f16:
            v.type.tensor_type.elem_type = bf16
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == f16:
                a.i = bf16
            if a.type == a.TENSOR and a.t.data_type == f16:
                a.t.CopyFrom(_cast_tensor(numpy_helper.to_array(a.t), a.t.name, bf16))


def write_precision_variant(base: str | Path, precision: str) -> Path:
    """`<base>.<precision>.onnx` next to the fp32 file `<base>.onnx` (see convert_precision)."""
    base = Path(base)
    return save_onnx(convert_precision(load_onnx(base), precision), base.with_suffix(f".{precision}.onnx"))


def _cast_tensor(arr: np.ndarray, name: str, low: int):
    from onnx import TensorProto, helper, numpy_helper
    if low == TensorProto.FLOAT16:
        return numpy_helper.from_array(arr.astype(np.float16), name)
    bits = (torch.from_numpy(np.array(arr, dtype=np.float32)).to(torch.bfloat16).view(torch.int16)
            .numpy().astype(np.uint16))  # bf16 stored as raw 16-bit words
    t = helper.make_tensor(name, TensorProto.BFLOAT16, arr.shape, bits.tobytes(), raw=True)
    return t


def save_onnx(model, path: str | Path) -> Path:
    _onnx().save(model, str(path))
    return Path(path)


# --- TensorRT parser lint --------------------------------------------------------------------------
# Ops our generators produce that the TensorRT 10/11 ONNX parsers import natively (onnx-tensorrt
# operator matrix), and the inputs they require to be initializers/constants.
TRT_OPS = {"Add", "Sub", "Mul", "Div", "Cast", "Concat", "Constant", "Conv", "ConvTranspose", "Identity",
           "InstanceNormalization", "BatchNormalization", "LeakyRelu", "Relu", "Tanh", "Sigmoid", "Pad",
           "Reshape", "Resize", "Upsample", "Shape", "Gather", "Slice", "Unsqueeze", "Squeeze", "Expand",
           "Tile", "Transpose", "MatMul", "Gemm", "Flatten", "ReduceMean", "Sqrt", "Pow", "Exp", "Clip",
           "AveragePool", "MaxPool", "Softmax", "ConstantOfShape", "Where", "Equal", "Neg", "Split"}
TRT_CONST_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "InstanceNormalization": (1, 2), "Pad": (1,),
                    "Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,)}
# The newest opset each TensorRT major version's parser is documented for: 10.x: 20 (support matrix,
# onnx-tensorrt operators.md for most ops); 11.x: 25 (NVIDIA's "ONNX Opset Guide" for TensorRT 11).
# bf16 graphs need opset 22 (BF16_MIN_OPSET), so they need TensorRT 11.
TRT_MAX_OPSET = {10: 20, 11: 25}
PAD_MODES = {"constant", "reflect", "edge"}
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


def opset_of(model) -> int:
    """The model's default-domain (ai.onnx) opset version."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def lint_tensorrt(model, trt_version: int = 11) -> list[str]:
    """Problems TensorRT `trt_version`'s (10 or 11) ONNX parser would reject or handle badly; [] when clean."""
    from onnx import helper
    if trt_version not in TRT_MAX_OPSET:
        raise GantkError(f"TensorRT {trt_version}: expected one of {', '.join(map(str, TRT_MAX_OPSET))}")
    problems = []
    g = model.graph
    opset, limit = opset_of(model), TRT_MAX_OPSET[trt_version]
    if opset > limit:
        problems.append(f"opset {opset} > {limit}, the newest TensorRT {trt_version}'s parser is documented for")
    consts = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    for n in g.node:
        where = f"{n.op_type} node {n.name or n.output[0]!r}"
        if n.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {n.domain!r} (needs a TensorRT plugin)")
            continue
        if n.op_type not in TRT_OPS:
            problems.append(f"{where}: op not in the supported set")
        for i in TRT_CONST_INPUTS.get(n.op_type, ()):
            if i < len(n.input) and n.input[i] and n.input[i] not in consts:
                problems.append(f"{where}: input {i} ({n.input[i]}) must be an initializer")
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if n.op_type == "Pad" and attrs.get("mode", "constant") not in PAD_MODES:
            problems.append(f"{where}: pad mode {attrs['mode']!r}")
        if n.op_type == "Resize":
            if attrs.get("mode", "nearest") not in RESIZE_MODES:
                problems.append(f"{where}: resize mode {attrs['mode']!r}")
            if attrs.get("coordinate_transformation_mode", "half_pixel") not in RESIZE_COORDS:
                problems.append(f"{where}: coordinate_transformation_mode {attrs['coordinate_transformation_mode']!r}")
        if n.op_type == "BatchNormalization" and attrs.get("training_mode", 0):
            problems.append(f"{where}: training_mode=1 (export in eval mode)")
        if n.op_type == "Dropout":
            problems.append(f"{where}: Dropout left in an inference graph")
    for i in g.input:
        shape = i.type.tensor_type.shape.dim
        if shape and not shape[0].dim_param:
            problems.append(f"input {i.name}: batch dimension is static ({shape[0].dim_value})")
    return problems
