// gantk_infer --model MODEL.pt2|MODEL.plan --input IN.png --output OUT.png
//             [--device cpu|cuda] [--input_nc N] [--output_nc N] [--multiple M] [--max_size S] [--nz 0 --seed 0]
//             [--dump_input PRE.png]
// Reads an image, runs an exported gantk generator, writes the translated image. The model's channels, size
// multiple, max size, nz and device default to its sidecar MODEL.json (written by `gantk export`); options
// override them. The image is prepared as Python's Runner.translate_file does: converted to the model's
// channels, resized (Pillow's bicubic) to the nearest multiple of the size multiple.
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>

#include "backend.h"
#include "image_io.h"

namespace {

const char* kUsage =
    "usage: gantk_infer --model MODEL.pt2|MODEL.plan --input IN.png --output OUT.png\n"
    "                   [--device cpu|cuda] [--input_nc N] [--output_nc N] [--multiple M] [--max_size S]\n"
    "                   [--nz N] [--seed 0] [--dump_input PRE.png]\n"
    "  defaults for --device/--input_nc/--output_nc/--multiple/--max_size/--nz: MODEL.json (the export's sidecar)\n";

bool has_suffix(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// A tiny JSON reader: flattens every scalar into path -> text ("gantk_arch.input_nc" -> "1"). Strings keep
// their text without escapes decoded (enough for the numbers and names read here); arrays are skipped.
class JsonFlattener {
 public:
  explicit JsonFlattener(const std::string& s) : s_(s) {}
  std::map<std::string, std::string> parse() {
    value("");
    ws();
    if (i_ != s_.size()) fail();
    return out_;
  }

 private:
  void fail() { throw std::runtime_error("malformed JSON at byte " + std::to_string(i_)); }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    ws();
    if (i_ >= s_.size()) fail();
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail();
    ++i_;
  }
  std::string string() {
    expect('"');
    std::string r;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\' && i_ + 1 < s_.size()) r += s_[i_++];
      r += s_[i_++];
    }
    if (i_ >= s_.size()) fail();
    ++i_;
    return r;
  }
  void value(const std::string& path) {
    char c = peek();
    if (c == '{') {
      ++i_;
      if (peek() == '}') {
        ++i_;
        return;
      }
      for (;;) {
        std::string key = string();
        expect(':');
        value(path.empty() ? key : path + "." + key);
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        return;
      }
    } else if (c == '[') {
      ++i_;
      if (peek() == ']') {
        ++i_;
        return;
      }
      for (int n = 0;; ++n) {
        value(path + "[" + std::to_string(n) + "]");
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return;
      }
    } else if (c == '"') {
      out_[path] = string();
    } else {
      size_t start = i_;
      while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' ||
                                s_[i_] == '+' || s_[i_] == '.'))
        ++i_;
      if (i_ == start) fail();
      out_[path] = s_.substr(start, i_ - start);
    }
  }

  const std::string& s_;
  size_t i_ = 0;
  std::map<std::string, std::string> out_;
};

std::map<std::string, std::string> read_sidecar(const std::string& model) {
  std::ifstream f(model + ".json");
  if (!f) return {};
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  try {
    return JsonFlattener(text).parse();
  } catch (const std::exception& e) {
    throw std::runtime_error(model + ".json: " + e.what());
  }
}

// A whole non-negative integer from an option or the sidecar, else a one-line error naming it.
int to_int(const std::string& text, const std::string& what, int min) {
  size_t used = 0;
  long v = -1;
  try {
    v = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || v < min || v > 1 << 20)
    throw std::runtime_error(what + " " + text + ": expected a whole number >= " + std::to_string(min));
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt{{"seed", "0"}};
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
  bool dump_only = opt.count("dump_input") && !opt.count("output");
  for (const char* k : {"model", "input", "output"})
    if (!opt.count(k) && !(dump_only && std::string(k) == "output")) {
      std::cerr << "gantk_infer: error: --" << k << " is required\n" << kUsage;
      return 2;
    }
  try {
    const std::string& model = opt["model"];
    if (!std::ifstream(model).good()) throw std::runtime_error(model + ": model file not found");
    std::map<std::string, std::string> meta = read_sidecar(model);
    auto setting = [&](const std::string& name, const std::string& key, const std::string& fallback) {
      if (opt.count(name)) return std::make_pair(opt[name], "--" + name);
      if (meta.count(key)) return std::make_pair(meta[key], model + ".json " + key);
      return std::make_pair(fallback, "--" + name);
    };
    auto [in_text, in_src] = setting("input_nc", "gantk_arch.input_nc", "3");  // Python's default: RGB
    auto [out_text, out_src] = setting("output_nc", "gantk_arch.output_nc", "0");  // 0: not checked
    auto [mul_text, mul_src] = setting("multiple", "size_multiple", "4");
    auto [max_text, max_src] = setting("max_size", "max_size", "0");  // 0: no limit known
    auto [nz_text, nz_src] = setting("nz", "nz", "0");
    auto [dev_text, dev_src] = setting("device", "device", "cpu");
    const int input_nc = to_int(in_text, in_src, 1), output_nc = to_int(out_text, out_src, 0);
    const int multiple = to_int(mul_text, mul_src, 1), max_size = to_int(max_text, max_src, 0);
    const int nz = to_int(nz_text, nz_src, 0);
    if (input_nc != 1 && input_nc != 3)
      throw std::runtime_error(in_src + " " + in_text + ": the model takes " + in_text +
                               "-channel images; gantk_infer feeds 1 (grey) or 3 (RGB) channels only");
    if (output_nc != 0 && output_nc != 1 && output_nc != 3)
      throw std::runtime_error(out_src + " " + out_text + ": gantk_infer writes 1- or 3-channel images only");

    gantk::Tensor x = gantk::read_image(opt["input"], input_nc, multiple, max_size);
    if (opt.count("dump_input")) gantk::write_image(opt["dump_input"], x);
    if (dump_only) {
      std::cout << "wrote " << opt["dump_input"] << "\n";
      return 0;
    }

    std::unique_ptr<gantk::Backend> backend;
    if (has_suffix(model, ".pt2")) {
      backend = gantk::make_aoti_backend(model, dev_text);
    } else if (has_suffix(model, ".plan") || has_suffix(model, ".engine")) {
#ifdef GANTK_WITH_TENSORRT
      backend = gantk::make_trt_backend(model);
#else
      throw std::runtime_error(model + ": this gantk_infer was built without TensorRT");
#endif
    } else {
      throw std::runtime_error(model + ": expected a .pt2 (AOTInductor) or .plan/.engine (TensorRT) file");
    }
    std::vector<gantk::Tensor> inputs{x};
    if (nz > 0) {
      std::mt19937 rng(static_cast<unsigned>(std::stoul(opt["seed"])));
      std::normal_distribution<float> normal;
      gantk::Tensor z{{1, nz}, std::vector<float>(nz)};
      for (float& v : z.data) v = normal(rng);
      inputs.push_back(z);
    }
    gantk::Tensor y = backend->run(inputs);
    const auto& s = y.shape;
    if (s.size() != 4 || s[0] != 1 || (output_nc && s[1] != output_nc) || s[2] < 1 || s[3] < 1) {
      std::string got;
      for (auto d : s) got += (got.empty() ? "" : "x") + std::to_string(d);
      throw std::runtime_error(model + ": the model returned a " + got + " tensor, expected 1x" +
                               (output_nc ? std::to_string(output_nc) : std::string("C")) + "xHxW");
    }
    gantk::write_image(opt["output"], y);
    std::cout << "wrote " << opt["output"] << "\n";
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::cerr << "gantk_infer: error: " << msg.substr(0, msg.find('\n')) << "\n";
    return 1;
  }
  return 0;
}
