// One interface over the inference backends of gantk_infer.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace gantk {

// A float tensor in NCHW layout (images in [-1, 1]).
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // inputs: the image (1, C, H, W) and, for multimodal generators, z (1, nz).
  virtual Tensor run(const std::vector<Tensor>& inputs) = 0;
};

std::unique_ptr<Backend> make_aoti_backend(const std::string& package, const std::string& device);
#ifdef GANTK_WITH_TENSORRT
std::unique_ptr<Backend> make_trt_backend(const std::string& engine);
#endif

}  // namespace gantk
