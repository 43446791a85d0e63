#include "image_io.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <vector>

#if defined(GANTK_WITH_PNG) || defined(GANTK_WITH_JPEG)
#include <csetjmp>
#endif
#ifdef GANTK_WITH_PNG
#include <png.h>
#endif
#ifdef GANTK_WITH_JPEG
#include <jpeglib.h>
#endif

namespace gantk {
namespace {

const std::string kReadable = std::string(".ppm/.pgm")
#ifdef GANTK_WITH_PNG
                              + ", .png"
#endif
#ifdef GANTK_WITH_JPEG
                              + ", .jpg/.jpeg (EXIF orientation applied)"
#endif
    ;  // NOLINT

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
  if (!f || (magic != "P6" && magic != "P5") || p.w <= 0 || p.h <= 0 || maxval != 255)
    throw std::runtime_error(path + ": expected an 8-bit binary PPM/PGM (P6/P5)");
  f.get();
  p.c = magic == "P6" ? 3 : 1;
  p.data.resize(static_cast<size_t>(p.w) * p.h * p.c);
  if (!f.read(reinterpret_cast<char*>(p.data.data()), static_cast<std::streamsize>(p.data.size())))
    throw std::runtime_error(path + ": truncated image data");
  return p;
}

void write_ppm(const std::string& path, const Pixels& p) {
  std::ofstream f(path, std::ios::binary);
  f << (p.c == 3 ? "P6" : "P5") << "\n" << p.w << " " << p.h << "\n255\n";
  f.write(reinterpret_cast<const char*>(p.data.data()), static_cast<std::streamsize>(p.data.size()));
  if (!f) throw std::runtime_error(path + ": write failed");
}

#ifdef GANTK_WITH_PNG
struct PngError {
  std::jmp_buf jump;
  char message[256] = {0};
};

void png_error_fn(png_structp png, png_const_charp msg) {
  auto* err = static_cast<PngError*>(png_get_error_ptr(png));
  std::snprintf(err->message, sizeof(err->message), "%s", msg);
  std::longjmp(err->jump, 1);
}

void png_warning_fn(png_structp, png_const_charp) {}

// Reads the raw samples (8 or 16 bits, big-endian) of every row. Only plain-old-data locals live in this
// frame, so libpng's longjmp on error skips no destructor; the vectors belong to the caller.
bool png_read_raw(FILE* fp, PngError* err, std::vector<unsigned char>* raw, std::vector<png_bytep>* rows,
                  int* w, int* h, int* channels, int* depth, int* color_type) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, err, png_error_fn, png_warning_fn);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(err->jump)) {
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    return false;
  }
  png_set_user_limits(png, 1u << 16, 1u << 16);
  png_init_io(png, fp);
  png_read_info(png, info);
  *color_type = png_get_color_type(png, info);
  if (*color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);  // no gamma/sRGB handling: as Pillow
  if (png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  *w = static_cast<int>(png_get_image_width(png, info));
  *h = static_cast<int>(png_get_image_height(png, info));
  *channels = png_get_channels(png, info);
  *depth = png_get_bit_depth(png, info);
  size_t stride = png_get_rowbytes(png, info);
  raw->resize(stride * static_cast<size_t>(*h));
  rows->resize(static_cast<size_t>(*h));
  for (int y = 0; y < *h; ++y) (*rows)[y] = raw->data() + stride * y;
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

Pixels read_png(const std::string& path) {
  FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) throw std::runtime_error(path + ": cannot open");
  unsigned char sig[8] = {0};
  bool is_png = std::fread(sig, 1, 8, fp) == 8 && png_sig_cmp(sig, 0, 8) == 0;
  std::rewind(fp);
  if (!is_png) {
    std::fclose(fp);
    throw std::runtime_error(path + ": not a PNG file");
  }
  PngError err;
  std::vector<unsigned char> raw;
  std::vector<png_bytep> rows;
  int w = 0, h = 0, c = 0, depth = 0, color_type = 0;
  bool ok = png_read_raw(fp, &err, &raw, &rows, &w, &h, &c, &depth, &color_type);
  std::fclose(fp);
  if (!ok) throw std::runtime_error(path + ": cannot read PNG (" + (err.message[0] ? err.message : "out of memory") + ")");
  if (c < 1 || c > 4 || (depth != 8 && depth != 16)) throw std::runtime_error(path + ": unsupported PNG layout");
  Pixels p;
  p.w = w;
  p.h = h;
  p.c = c;
  size_t n = static_cast<size_t>(w) * h * c;
  p.data.resize(n);
  if (depth == 8) {
    std::copy(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(n), p.data.begin());
  } else if (color_type == PNG_COLOR_TYPE_GRAY) {
    // Pillow opens it as "I;16"; gantk.io.to_8bit scales by 1/257 and rounds (never a tie: 257 is odd).
    for (size_t i = 0; i < n; ++i) {
      unsigned v = (static_cast<unsigned>(raw[2 * i]) << 8) | raw[2 * i + 1];
      p.data[i] = static_cast<unsigned char>((2 * v + 257) / 514);
    }
  } else {
    for (size_t i = 0; i < n; ++i) p.data[i] = raw[2 * i];  // Pillow's "RGB;16B"/"LA;16B"...: the high byte
  }
  return p;
}

void write_png(const std::string& path, const Pixels& p) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(p.w);
  img.height = static_cast<png_uint_32>(p.h);
  img.format = p.c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  if (!png_image_write_to_file(&img, path.c_str(), 0, p.data.data(), 0, nullptr))
    throw std::runtime_error(path + ": " + img.message);
}
#endif

// Pillow's Resample.c (ImagingResample with BICUBIC), 8 bits per channel.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic_filter(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // per output pixel: first input index, count
  std::vector<int32_t> k;   // per output pixel: ksize fixed-point weights
};

Coeffs precompute_coeffs(int in_size, int out_size) {
  const double support_1 = 2.0;  // BICUBIC
  double scale = static_cast<double>(in_size) / out_size, filterscale = std::max(scale, 1.0);
  double support = support_1 * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(2 * static_cast<size_t>(out_size));
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> kk(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
    int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    for (int x = 0; x < xmax; ++x) {
      kk[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
      ww += kk[x];
    }
    for (int x = 0; x < xmax; ++x) {
      double w = ww != 0.0 ? kk[x] / ww : kk[x];
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[2 * xx] = xmin;
    c.bounds[2 * xx + 1] = xmax;
  }
  return c;
}

unsigned char clip8(int64_t v) {
  if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<unsigned char>(v >> kPrecisionBits);
}


#ifdef GANTK_WITH_JPEG
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
};

void jpeg_error_fn(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// A corrupt-data warning (e.g. a truncated file, which libjpeg would fill with grey) is an error, as in Pillow.
void jpeg_warning_fn(j_common_ptr cinfo, int level) {
  if (level < 0) jpeg_error_fn(cinfo);
}

// EXIF orientation (tag 0x0112 of IFD0) from an APP1 "Exif" marker's data; 1 (upright) when absent.
int exif_orientation(const unsigned char* d, size_t n) {
  if (n < 14 || std::memcmp(d, "Exif\0\0", 6) != 0) return 1;
  const unsigned char* t = d + 6;
  size_t len = n - 6;
  bool le = t[0] == 'I' && t[1] == 'I';
  if (!le && !(t[0] == 'M' && t[1] == 'M')) return 1;
  auto u16 = [&](size_t o) { return le ? t[o] | t[o + 1] << 8 : t[o] << 8 | t[o + 1]; };
  auto u32 = [&](size_t o) {
    return le ? uint32_t(t[o]) | uint32_t(t[o + 1]) << 8 | uint32_t(t[o + 2]) << 16 | uint32_t(t[o + 3]) << 24
              : uint32_t(t[o]) << 24 | uint32_t(t[o + 1]) << 16 | uint32_t(t[o + 2]) << 8 | uint32_t(t[o + 3]);
  };
  size_t ifd = u32(4);
  if (ifd + 2 > len) return 1;
  for (size_t i = 0, count = u16(ifd); i < count && ifd + 2 + 12 * (i + 1) <= len; ++i) {
    size_t e = ifd + 2 + 12 * i;
    if (u16(e) == 0x0112) {
      int v = u16(e + 8);
      return v >= 1 && v <= 8 ? v : 1;
    }
  }
  return 1;
}

// Decodes with libjpeg's defaults (integer IDCT, fancy upsampling), as Pillow does. Plain-old-data locals
// only in this frame (libjpeg's longjmp on error); the vector belongs to the caller.
bool jpeg_read_raw(FILE* fp, JpegError* err, std::vector<unsigned char>* data, int* w, int* h, int* c,
                   int* orientation) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = jpeg_error_fn;
  err->mgr.emit_message = jpeg_warning_fn;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, fp);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_read_header(&cinfo, TRUE);
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
    if (m->marker == JPEG_APP0 + 1) *orientation = exif_orientation(m->data, m->data_length);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(err->message, sizeof(err->message), "CMYK JPEG files are not supported (convert to RGB)");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  *w = static_cast<int>(cinfo.output_width);
  *h = static_cast<int>(cinfo.output_height);
  *c = cinfo.output_components;
  data->resize(static_cast<size_t>(*w) * *h * *c);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = data->data() + static_cast<size_t>(cinfo.output_scanline) * *w * *c;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// The upright image of EXIF `orientation` (Pillow's ImageOps.exif_transpose): 2 mirror, 3 rotate 180,
// 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
Pixels upright(const Pixels& p, int orientation) {
  if (orientation == 1) return p;
  bool swap = orientation >= 5;
  Pixels out{swap ? p.h : p.w, swap ? p.w : p.h, p.c, std::vector<unsigned char>(p.data.size())};
  for (int y = 0; y < out.h; ++y) {
    for (int x = 0; x < out.w; ++x) {
      int sx = x, sy = y;  // the source pixel of (x, y)
      switch (orientation) {
        case 2: sx = p.w - 1 - x; break;
        case 3: sx = p.w - 1 - x; sy = p.h - 1 - y; break;
        case 4: sy = p.h - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = p.h - 1 - x; break;
        case 7: sx = p.w - 1 - y; sy = p.h - 1 - x; break;
        case 8: sx = p.w - 1 - y; sy = x; break;
      }
      std::memcpy(&out.data[(static_cast<size_t>(y) * out.w + x) * p.c],
                  &p.data[(static_cast<size_t>(sy) * p.w + sx) * p.c], p.c);
    }
  }
  return out;
}

Pixels read_jpeg(const std::string& path) {
  FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) throw std::runtime_error(path + ": cannot open");
  JpegError err;
  Pixels p;
  int orientation = 1;
  bool ok = jpeg_read_raw(fp, &err, &p.data, &p.w, &p.h, &p.c, &orientation);
  std::fclose(fp);
  if (!ok) throw std::runtime_error(path + ": not a readable JPEG file (" + err.message + ")");
  return upright(p, orientation);
}
#endif
}  // namespace

Pixels read_pixels(const std::string& path) {
  if (ends_with(path, ".ppm") || ends_with(path, ".pgm") || ends_with(path, ".pnm")) return read_ppm(path);
#ifdef GANTK_WITH_PNG
  if (ends_with(path, ".png")) return read_png(path);
#endif
#ifdef GANTK_WITH_JPEG
  if (ends_with(path, ".jpg") || ends_with(path, ".jpeg")) return read_jpeg(path);
#endif
  throw std::runtime_error(path + ": unsupported image type (this build reads " + kReadable + ")");
}

Pixels convert_channels(const Pixels& p, int channels) {
  if (channels != 1 && channels != 3)
    throw std::runtime_error("the model takes " + std::to_string(channels) +
                             "-channel images; gantk_infer converts images to 1 (grey) or 3 (RGB) channels only");
  if (p.c < 1 || p.c > 4) throw std::runtime_error("unsupported image with " + std::to_string(p.c) + " channels");
  Pixels out;
  out.w = p.w;
  out.h = p.h;
  out.c = channels;
  size_t n = static_cast<size_t>(p.w) * p.h;
  out.data.resize(n * channels);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char* s = &p.data[i * p.c];
    unsigned char* d = &out.data[i * channels];
    bool color = p.c >= 3;  // 1: grey, 2: grey + alpha, 3: RGB, 4: RGBA (alpha dropped, as convert does)
    if (channels == 3) {
      d[0] = s[0];
      d[1] = color ? s[1] : s[0];
      d[2] = color ? s[2] : s[0];
    } else {
      d[0] = color ? static_cast<unsigned char>((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16)
                   : s[0];
    }
  }
  return out;
}

int nearest_multiple(int size, int base) {
  int q = size / base, r = size % base;
  if (2 * r > base || (2 * r == base && q % 2 == 1)) ++q;  // Python's round(): half to even
  return std::max(base, q * base);
}

namespace {

// One separable pass of Pillow's 8-bit resampling: along x (horizontal) or y, rows [offset, offset + out.h)
// of `in` for a horizontal pass.
Pixels resample_pass(const Pixels& in, int out_w, int out_h, bool horizontal, const Coeffs& cf, int offset) {
  const int c = in.c;
  Pixels out;
  out.w = out_w;
  out.h = out_h;
  out.c = c;
  out.data.resize(static_cast<size_t>(out_w) * out_h * c);
  for (int yy = 0; yy < out_h; ++yy)
    for (int xx = 0; xx < out_w; ++xx) {
      int i = horizontal ? xx : yy;
      int lo = cf.bounds[2 * i], n = cf.bounds[2 * i + 1];
      const int32_t* k = &cf.k[static_cast<size_t>(i) * cf.ksize];
      for (int b = 0; b < c; ++b) {
        int64_t ss = int64_t{1} << (kPrecisionBits - 1);
        for (int j = 0; j < n; ++j) {
          size_t src = horizontal ? (static_cast<size_t>(yy + offset) * in.w + lo + j)
                                  : (static_cast<size_t>(lo + j) * in.w + xx);
          ss += int64_t{in.data[src * c + b]} * k[j];
        }
        out.data[(static_cast<size_t>(yy) * out_w + xx) * c + b] = clip8(ss);
      }
    }
  return out;
}

}  // namespace

Pixels resize_bicubic(const Pixels& p, int w, int h) {
  if (w == p.w && h == p.h) return p;
  if (w == p.w) return resample_pass(p, w, h, false, precompute_coeffs(p.h, h), 0);
  if (h == p.h) return resample_pass(p, w, h, true, precompute_coeffs(p.w, w), 0);
  Coeffs ch = precompute_coeffs(p.w, w), cv = precompute_coeffs(p.h, h);
  // The pass order changes the rounding of the 8-bit intermediate image. The Pillow gantk runs with
  // (13.0) filters vertically first when the height shrinks by more than twice what the width shrinks
  // (h - H > 2 (w - W)), horizontally first otherwise; checked pixel for pixel against it in
  // tests/test_export.py (test_cpp_resize_matches_pillow).
  if (h < p.h && 2 * (p.w - w) < p.h - h) {
    Pixels tmp = resample_pass(p, p.w, h, false, cv, 0);
    return resample_pass(tmp, w, h, true, ch, 0);
  }
  // Horizontal pass over the rows the vertical pass uses only (Pillow's ybox_first..ybox_last).
  int first = cv.bounds[0], last = cv.bounds[2 * (h - 1)] + cv.bounds[2 * (h - 1) + 1];
  for (int yy = 0; yy < h; ++yy) cv.bounds[2 * yy] -= first;
  Pixels tmp = resample_pass(p, w, last - first, true, ch, first);
  return resample_pass(tmp, w, h, false, cv, 0);
}

Tensor read_image(const std::string& path, int channels, int multiple, int max_size) {
  if (multiple < 1) throw std::runtime_error("--multiple " + std::to_string(multiple) + ": must be at least 1");
  Pixels p = read_pixels(path);
  p = convert_channels(p, channels);
  int w = nearest_multiple(p.w, multiple), h = nearest_multiple(p.h, multiple);
  if (max_size > 0 && (w > max_size || h > max_size))
    throw std::runtime_error(path + ": " + std::to_string(p.w) + "x" + std::to_string(p.h) + " px (scaled to " +
                             std::to_string(w) + "x" + std::to_string(h) + ") is larger than the model's max_size " +
                             std::to_string(max_size) + " px; resize it or export with a larger --max_size");
  p = resize_bicubic(p, w, h);
  const int c = p.c;
  Tensor t{{1, c, h, w}, std::vector<float>(static_cast<size_t>(c) * h * w)};
  for (int ch = 0; ch < c; ++ch)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        t.data[(static_cast<size_t>(ch) * h + y) * w + x] =
            p.data[(static_cast<size_t>(y) * w + x) * c + ch] / 127.5f - 1.0f;
  return t;
}

void write_image(const std::string& path, const Tensor& t) {
  if (t.shape.size() != 4 || t.shape[0] != 1 || (t.shape[1] != 1 && t.shape[1] != 3) || t.shape[2] < 1 ||
      t.shape[3] < 1)
    throw std::runtime_error("the model returned a tensor that is not one 1- or 3-channel image (1, C, H, W)");
  Pixels p;
  p.c = static_cast<int>(t.shape[1]);
  p.h = static_cast<int>(t.shape[2]);
  p.w = static_cast<int>(t.shape[3]);
  p.data.resize(static_cast<size_t>(p.c) * p.h * p.w);
  if (t.data.size() != p.data.size()) throw std::runtime_error("the model's output has the wrong number of values");
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
