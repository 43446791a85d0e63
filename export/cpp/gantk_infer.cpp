// gantk_infer --model MODEL.pt2|MODEL.plan --input IN.png --output OUT.png
//             [--device cpu|cuda] [--multiple 4] [--nz 0 --seed 0]
// Reads an image, runs an exported gantk generator, writes the translated image.
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include "backend.h"
#include "image_io.h"

namespace {

const char* kUsage =
    "usage: gantk_infer --model MODEL.pt2|MODEL.plan --input IN.png --output OUT.png\n"
    "                   [--device cpu|cuda] [--multiple 4] [--nz 0] [--seed 0]\n";

bool has_suffix(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt{{"device", "cpu"}, {"multiple", "4"}, {"nz", "0"}, {"seed", "0"}};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    }
    if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::cerr << "gantk_infer: error: bad argument " << a << "\n" << kUsage;
      return 2;
    }
    opt[a.substr(2)] = argv[++i];
  }
  for (const char* k : {"model", "input", "output"})
    if (!opt.count(k)) {
      std::cerr << "gantk_infer: error: --" << k << " is required\n" << kUsage;
      return 2;
    }
  try {
    const std::string& model = opt["model"];
    if (!std::ifstream(model).good()) throw std::runtime_error(model + ": model file not found");
    std::unique_ptr<gantk::Backend> backend;
    if (has_suffix(model, ".pt2")) {
      backend = gantk::make_aoti_backend(model, opt["device"]);
    } else if (has_suffix(model, ".plan") || has_suffix(model, ".engine")) {
#ifdef GANTK_WITH_TENSORRT
      backend = gantk::make_trt_backend(model);
#else
      throw std::runtime_error(model + ": this gantk_infer was built without TensorRT");
#endif
    } else {
      throw std::runtime_error(model + ": expected a .pt2 (AOTInductor) or .plan/.engine (TensorRT) file");
    }
    std::vector<gantk::Tensor> inputs{gantk::read_image(opt["input"], std::stoi(opt["multiple"]))};
    int nz = std::stoi(opt["nz"]);
    if (nz > 0) {
      std::mt19937 rng(std::stoul(opt["seed"]));
      std::normal_distribution<float> normal;
      gantk::Tensor z{{1, nz}, std::vector<float>(nz)};
      for (float& v : z.data) v = normal(rng);
      inputs.push_back(z);
    }
    gantk::write_image(opt["output"], backend->run(inputs));
    std::cout << "wrote " << opt["output"] << "\n";
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::cerr << "gantk_infer: error: " << msg.substr(0, msg.find('\n')) << "\n";
    return 1;
  }
  return 0;
}
