#pragma once
// Pictures made from data: loss curves and image grids (uint8 [H, W, 3] RGB tensors).
#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <vector>

namespace singleinsert {

struct Curve {
  std::string name;
  std::vector<double> values;  // one per step
  std::array<uint8_t, 3> rgb;
};

// Curves over a shared step axis, y in log10 scale (losses span decades), with a legend and
// vertical markers at `boundaries` (e.g. where stage II starts).
at::Tensor plot_curves(const std::string& title, const std::vector<Curve>& curves, const std::vector<int>& boundaries,
                       int width = 720, int height = 400);

// Images (same size) in a grid of `columns`, each with an optional caption strip below.
at::Tensor image_grid(const std::vector<at::Tensor>& images, int columns, const std::vector<std::string>& captions = {});

}  // namespace singleinsert
