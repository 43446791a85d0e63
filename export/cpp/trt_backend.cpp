// TensorRT 10 backend: runs a serialized engine (.plan/.engine) built by `gantk export --format trt*`
// or by the trtexec command written next to the ONNX file. Inputs "input" (and "z"), output "output".
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>

#include "backend.h"

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
    if (!engine_) throw std::runtime_error(path + ": not an engine for this TensorRT version/GPU");
    context_.reset(engine_->createExecutionContext());
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }
  ~TrtBackend() override {
    for (void* p : buffers_) cudaFree(p);
    cudaStreamDestroy(stream_);
  }

  Tensor run(const std::vector<Tensor>& inputs) override {
    const char* names[] = {"input", "z"};
    for (size_t i = 0; i < inputs.size(); ++i) {
      nvinfer1::Dims d;
      d.nbDims = static_cast<int32_t>(inputs[i].shape.size());
      for (int k = 0; k < d.nbDims; ++k) d.d[k] = inputs[i].shape[k];
      context_->setInputShape(names[i], d);
      void* buf = device_copy(inputs[i].data);
      context_->setTensorAddress(names[i], buf);
    }
    nvinfer1::Dims od = context_->getTensorShape("output");
    Tensor out;
    size_t n = 1;
    for (int k = 0; k < od.nbDims; ++k) {
      out.shape.push_back(od.d[k]);
      n *= od.d[k];
    }
    void* obuf = nullptr;
    check(cudaMalloc(&obuf, n * sizeof(float)), "cudaMalloc");
    buffers_.push_back(obuf);
    context_->setTensorAddress("output", obuf);
    if (!context_->enqueueV3(stream_)) throw std::runtime_error("TensorRT enqueueV3 failed");
    out.data.resize(n);
    check(cudaMemcpyAsync(out.data.data(), obuf, n * sizeof(float), cudaMemcpyDeviceToHost, stream_), "copy out");
    check(cudaStreamSynchronize(stream_), "sync");
    return out;
  }

 private:
  void* device_copy(const std::vector<float>& host) {
    void* p = nullptr;
    check(cudaMalloc(&p, host.size() * sizeof(float)), "cudaMalloc");
    buffers_.push_back(p);
    check(cudaMemcpyAsync(p, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, stream_), "copy in");
    return p;
  }

  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_{};
  std::vector<void*> buffers_;
};

}  // namespace

std::unique_ptr<Backend> make_trt_backend(const std::string& engine) { return std::make_unique<TrtBackend>(engine); }

}  // namespace gantk
