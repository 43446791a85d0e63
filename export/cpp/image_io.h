// 8-bit image files <-> [-1, 1] NCHW tensors. PPM/PGM (P6/P5) always; PNG when built with libpng, JPEG
// (turned upright by its EXIF orientation) when built with libjpeg.
// Reading follows gantk's Python preprocessing (gantk.io.load_image + gantk.data.transforms._make_multiple)
// so that C++ and Python feed the model the same pixels.
#pragma once
#include <string>
#include <vector>

#include "backend.h"

namespace gantk {

// Interleaved 8-bit pixels, HWC; c is 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
struct Pixels {
  int w = 0, h = 0, c = 0;
  std::vector<unsigned char> data;
};

// Reads a .png/.jpg/.ppm/.pgm/.pnm file as 8-bit pixels, as Pillow opens it (JPEG upright by EXIF): 16-bit grey scaled by 1/257 and
// rounded (gantk.io.to_8bit), other 16-bit images by their high byte, palettes expanded, alpha kept.
Pixels read_pixels(const std::string& path);
// Converts to `channels` (1 or 3) as Pillow's convert("L") / convert("RGB"): alpha dropped, grey replicated,
// RGB to grey by ITU-R 601-2 luma in Pillow's fixed point ((19595 R + 38470 G + 7471 B + 2^15) >> 16).
Pixels convert_channels(const Pixels& p, int channels);
// The size Python's _make_multiple picks: each side rounded to the nearest multiple of `base`
// (ties to even, as Python's round), at least `base`.
int nearest_multiple(int size, int base);
// Pillow's Image.resize(..., Image.BICUBIC) for 8-bit images (separable cubic a = -0.5 with antialiasing,
// fixed-point coefficients, horizontal pass then vertical), bit for bit.
Pixels resize_bicubic(const Pixels& p, int w, int h);

// read_pixels + convert_channels + resize to the nearest multiple of `multiple`, as (1, C, H, W) in [-1, 1].
// Refuses a resized side over `max_size` (when > 0).
Tensor read_image(const std::string& path, int channels, int multiple, int max_size = 0);
// Writes a (1, C, H, W) tensor in [-1, 1], C = 1 or 3, as an 8-bit image (format from the suffix).
void write_image(const std::string& path, const Tensor& t);

}  // namespace gantk
