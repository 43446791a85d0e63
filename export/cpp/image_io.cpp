#include "image_io.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <vector>

#ifdef GANTK_WITH_PNG
#include <png.h>
#endif

namespace gantk {
namespace {

struct Pixels {  // interleaved 8-bit HWC
  int w = 0, h = 0, c = 0;
  std::vector<unsigned char> data;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  std::string tail = s.substr(s.size() - suffix.size());
  std::transform(tail.begin(), tail.end(), tail.begin(), ::tolower);
  return tail == suffix;
}

Pixels read_ppm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::string magic;
  Pixels p;
  int maxval = 0;
  f >> magic >> p.w >> p.h >> maxval;
  if ((magic != "P6" && magic != "P5") || p.w <= 0 || p.h <= 0 || maxval != 255)
    throw std::runtime_error(path + ": expected an 8-bit binary PPM/PGM (P6/P5)");
  f.get();
  p.c = magic == "P6" ? 3 : 1;
  p.data.resize(static_cast<size_t>(p.w) * p.h * p.c);
  if (!f.read(reinterpret_cast<char*>(p.data.data()), p.data.size()))
    throw std::runtime_error(path + ": truncated image data");
  return p;
}

void write_ppm(const std::string& path, const Pixels& p) {
  std::ofstream f(path, std::ios::binary);
  f << (p.c == 3 ? "P6" : "P5") << "\n" << p.w << " " << p.h << "\n255\n";
  f.write(reinterpret_cast<const char*>(p.data.data()), p.data.size());
  if (!f) throw std::runtime_error(path + ": write failed");
}

#ifdef GANTK_WITH_PNG
Pixels read_png(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str()))
    throw std::runtime_error(path + ": " + img.message);
  bool gray = !(img.format & PNG_FORMAT_FLAG_COLOR);
  img.format = gray ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  Pixels p;
  p.w = img.width;
  p.h = img.height;
  p.c = gray ? 1 : 3;
  p.data.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, p.data.data(), 0, nullptr))
    throw std::runtime_error(path + ": " + img.message);
  return p;
}

void write_png(const std::string& path, const Pixels& p) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = p.w;
  img.height = p.h;
  img.format = p.c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  if (!png_image_write_to_file(&img, path.c_str(), 0, p.data.data(), 0, nullptr))
    throw std::runtime_error(path + ": " + img.message);
}
#endif

Pixels read_pixels(const std::string& path) {
  if (ends_with(path, ".ppm") || ends_with(path, ".pgm") || ends_with(path, ".pnm")) return read_ppm(path);
#ifdef GANTK_WITH_PNG
  if (ends_with(path, ".png")) return read_png(path);
  throw std::runtime_error(path + ": unsupported image type (use .png or .ppm)");
#else
  throw std::runtime_error(path + ": unsupported image type (this build reads .ppm; rebuild with libpng for .png)");
#endif
}

}  // namespace

Tensor read_image(const std::string& path, int multiple) {
  Pixels p = read_pixels(path);
  int h = p.h / multiple * multiple, w = p.w / multiple * multiple;
  if (h == 0 || w == 0)
    throw std::runtime_error(path + ": image smaller than " + std::to_string(multiple) + " px");
  Tensor t{{1, p.c, h, w}, std::vector<float>(static_cast<size_t>(p.c) * h * w)};
  for (int ch = 0; ch < p.c; ++ch)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        t.data[(static_cast<size_t>(ch) * h + y) * w + x] =
            p.data[(static_cast<size_t>(y) * p.w + x) * p.c + ch] / 127.5f - 1.0f;
  return t;
}

void write_image(const std::string& path, const Tensor& t) {
  Pixels p;
  p.c = static_cast<int>(t.shape[1]);
  p.h = static_cast<int>(t.shape[2]);
  p.w = static_cast<int>(t.shape[3]);
  p.data.resize(static_cast<size_t>(p.c) * p.h * p.w);
  for (int ch = 0; ch < p.c; ++ch)
    for (int y = 0; y < p.h; ++y)
      for (int x = 0; x < p.w; ++x) {
        float v = t.data[(static_cast<size_t>(ch) * p.h + y) * p.w + x];
        v = std::round((std::clamp(v, -1.0f, 1.0f) + 1.0f) * 127.5f);
        p.data[(static_cast<size_t>(y) * p.w + x) * p.c + ch] = static_cast<unsigned char>(v);
      }
  if (ends_with(path, ".ppm") || ends_with(path, ".pgm") || ends_with(path, ".pnm")) return write_ppm(path, p);
#ifdef GANTK_WITH_PNG
  if (ends_with(path, ".png")) return write_png(path, p);
#endif
  throw std::runtime_error(path + ": unsupported output type (use .png or .ppm)");
}

}  // namespace gantk
