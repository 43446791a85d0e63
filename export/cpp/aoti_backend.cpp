// AOTInductor backend: runs a .pt2 package written by `gantk export --format aoti`.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstring>

#include "backend.h"

namespace gantk {
namespace {

class AotiBackend : public Backend {
 public:
  AotiBackend(const std::string& package, const std::string& device)
      : device_(device), loader_(package) {}

  Tensor run(const std::vector<Tensor>& inputs) override {
    c10::InferenceMode guard;
    std::vector<at::Tensor> args;
    for (const auto& in : inputs) {
      auto t = torch::from_blob(const_cast<float*>(in.data.data()), in.shape, torch::kFloat32);
      args.push_back(t.to(device_).contiguous());
    }
    at::Tensor y = loader_.run(args).at(0).to(torch::kCPU, torch::kFloat32).contiguous();
    Tensor out{y.sizes().vec(), std::vector<float>(y.numel())};
    std::memcpy(out.data.data(), y.data_ptr<float>(), y.numel() * sizeof(float));
    return out;
  }

 private:
  torch::Device device_;
  torch::inductor::AOTIModelPackageLoader loader_;
};

}  // namespace

std::unique_ptr<Backend> make_aoti_backend(const std::string& package, const std::string& device) {
  return std::make_unique<AotiBackend>(package, device);
}

}  // namespace gantk
