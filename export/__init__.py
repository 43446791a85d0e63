"""gantk.export: ONNX (+fp16), ONNX Runtime, TensorRT, AOTInductor, Triton repositories, with parity proof."""
from gantk.export.parity import THRESHOLDS, check_parity
from gantk.export.runners import Runner, load_runner
from gantk.export.spec import ExportSpec, spec_for_generator


def __getattr__(name):  # heavy or optional back ends load on first use
    lazy = {"export_onnx": "onnx", "convert_precision": "onnx", "lint_tensorrt": "onnx", "OrtRunner": "ort",
            "export_aoti": "aoti", "AotiRunner": "aoti", "TrtRunner": "tensorrt", "build_engine": "tensorrt",
            "write_model_repository": "triton_server", "run_export": "pipeline"}
    if name in lazy:
        import importlib
        return getattr(importlib.import_module(f"gantk.export.{lazy[name]}"), name)
    raise AttributeError(name)


__all__ = ["THRESHOLDS", "AotiRunner", "ExportSpec", "OrtRunner", "Runner", "TrtRunner",
           "build_engine", "check_parity", "convert_precision", "export_aoti", "export_onnx", "lint_tensorrt",
           "load_runner", "run_export", "spec_for_generator", "write_model_repository"]
