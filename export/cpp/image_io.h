// 8-bit image files <-> [-1, 1] NCHW tensors. PPM (P6/P5) always; PNG when built with libpng.
#pragma once
#include <string>

#include "backend.h"

namespace gantk {

// Reads an image, crops it to a multiple of `multiple` px (top-left), returns (1, C, H, W) in [-1, 1].
Tensor read_image(const std::string& path, int multiple);
// Writes a (1, C, H, W) tensor in [-1, 1] as an 8-bit image (format from the suffix).
void write_image(const std::string& path, const Tensor& t);

}  // namespace gantk
