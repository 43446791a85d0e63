// TensorRT 10.x / 11.x backend: runs a serialized engine (.plan/.engine) built by `gantk export --format trt*`
// or by the trtexec script written next to the ONNX file. Inputs "input" (and "z"), output "output".
// Device buffers are allocated once per tensor and reused; they grow only when a larger shape arrives.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>

#include "backend.h"

static_assert(NV_TENSORRT_MAJOR >= 10, "gantk_infer's TensorRT backend needs TensorRT 10.x or 11.x");

namespace gantk {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

class Logger : public nvinfer1::ILogger {
  void log(Severity s, const char* msg) noexcept override {
    if (s <= Severity::kWARNING) std::cerr << "TensorRT: " << msg << "\n";
  }
};

class TrtBackend : public Backend {
 public:
  explicit TrtBackend(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error(path + ": cannot open engine");
    std::vector<char> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_)
      throw std::runtime_error(path + ": not an engine for TensorRT " + std::to_string(NV_TENSORRT_MAJOR) + "." +
                               std::to_string(NV_TENSORRT_MINOR) + " on this GPU (an engine loads only in the "
                               "TensorRT version and on the GPU model it was built with); rebuild it");
    context_.reset(engine_->createExecutionContext());
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }
  ~TrtBackend() override {
    for (auto& b : buffers_) cudaFree(b.second.ptr);
    cudaStreamDestroy(stream_);
  }

  Tensor run(const std::vector<Tensor>& inputs) override {
    const char* names[] = {"input", "z"};
    for (size_t i = 0; i < inputs.size(); ++i) {
      nvinfer1::Dims d;
      d.nbDims = static_cast<int32_t>(inputs[i].shape.size());
      for (int k = 0; k < d.nbDims; ++k) d.d[k] = inputs[i].shape[k];
      if (!context_->setInputShape(names[i], d))
        throw std::runtime_error(std::string("TensorRT: input '") + names[i] + "' of shape " + shape_text(d) +
                                 " is outside the engine's optimisation profile (rebuild with a wider size range)");
      void* buf = buffer(names[i], inputs[i].data.size());
      check(cudaMemcpyAsync(buf, inputs[i].data.data(), inputs[i].data.size() * sizeof(float),
                            cudaMemcpyHostToDevice, stream_), "copy in");
    }
    nvinfer1::Dims od = context_->getTensorShape("output");
    Tensor out;
    size_t n = 1;
    for (int k = 0; k < od.nbDims; ++k) {
      if (od.d[k] < 0) throw std::runtime_error("TensorRT: output shape " + shape_text(od) + " is not determined");
      out.shape.push_back(od.d[k]);
      n *= od.d[k];
    }
    void* obuf = buffer("output", n);
    if (!context_->enqueueV3(stream_)) throw std::runtime_error("TensorRT enqueueV3 failed");
    out.data.resize(n);
    check(cudaMemcpyAsync(out.data.data(), obuf, n * sizeof(float), cudaMemcpyDeviceToHost, stream_), "copy out");
    check(cudaStreamSynchronize(stream_), "sync");
    return out;
  }

 private:
  struct DeviceBuffer {
    void* ptr = nullptr;
    size_t floats = 0;
  };

  static std::string shape_text(const nvinfer1::Dims& d) {
    std::string s;
    for (int k = 0; k < d.nbDims; ++k) s += (k ? "x" : "") + std::to_string(d.d[k]);
    return s;
  }

  // The device buffer bound to tensor `name`, holding at least `floats` floats: reused across calls,
  // reallocated (and rebound) only when a larger shape arrives.
  void* buffer(const char* name, size_t floats) {
    DeviceBuffer& b = buffers_[name];
    if (b.floats < floats) {
      check(cudaStreamSynchronize(stream_), "sync");
      if (b.ptr) check(cudaFree(b.ptr), "cudaFree");
      b.ptr = nullptr;
      check(cudaMalloc(&b.ptr, floats * sizeof(float)), "cudaMalloc");
      b.floats = floats;
      if (!context_->setTensorAddress(name, b.ptr))
        throw std::runtime_error(std::string("TensorRT: cannot bind tensor '") + name + "'");
    }
    return b.ptr;
  }

  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_{};
  std::map<std::string, DeviceBuffer> buffers_;
};

}  // namespace

std::unique_ptr<Backend> make_trt_backend(const std::string& engine) { return std::make_unique<TrtBackend>(engine); }

}  // namespace gantk
