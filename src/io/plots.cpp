#include "singleinsert/io/plots.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "singleinsert/core/error.h"

namespace singleinsert {
namespace {

at::Tensor to_tensor(const cv::Mat& rgb) {
  return at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte).clone();
}

}  // namespace

at::Tensor plot_curves(const std::string& title, const std::vector<Curve>& curves, const std::vector<int>& boundaries,
                       int width, int height) {
  cv::Mat canvas(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  const int left = 70, right = 20, top = 40, bottom = 40;
  const int plot_w = width - left - right, plot_h = height - top - bottom;
  double lo = INFINITY, hi = -INFINITY;
  size_t steps = 0;
  for (const auto& curve : curves) {
    steps = std::max(steps, curve.values.size());
    for (double v : curve.values)
      if (v > 0 && std::isfinite(v)) lo = std::min(lo, std::log10(v)), hi = std::max(hi, std::log10(v));
  }
  if (!(hi >= lo)) lo = -1, hi = 1;
  lo = std::floor(lo), hi = std::ceil(hi);
  if (hi == lo) hi = lo + 1;
  auto x_of = [&](size_t i) { return left + (steps > 1 ? static_cast<int>(i * plot_w / (steps - 1)) : plot_w / 2); };
  auto y_of = [&](double v) { return top + static_cast<int>((hi - std::log10(v)) / (hi - lo) * plot_h); };

  cv::rectangle(canvas, {left, top}, {left + plot_w, top + plot_h}, cv::Scalar(160, 160, 160));
  for (double decade = lo; decade <= hi; decade += 1) {
    const int y = y_of(std::pow(10.0, decade));
    cv::line(canvas, {left, y}, {left + plot_w, y}, cv::Scalar(225, 225, 225));
    cv::putText(canvas, fmt::format("1e{}", static_cast<int>(decade)), {8, y + 4}, cv::FONT_HERSHEY_SIMPLEX, 0.4,
                cv::Scalar(90, 90, 90));
  }
  for (int boundary : boundaries)
    if (boundary > 0 && static_cast<size_t>(boundary) < steps)
      cv::line(canvas, {x_of(boundary), top}, {x_of(boundary), top + plot_h}, cv::Scalar(140, 140, 220), 1, cv::LINE_AA);
  cv::putText(canvas, title, {left, 25}, cv::FONT_HERSHEY_SIMPLEX, 0.55, cv::Scalar(30, 30, 30), 1, cv::LINE_AA);
  cv::putText(canvas, fmt::format("step (1..{})", steps), {left + plot_w / 2 - 40, height - 12},
              cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(90, 90, 90));
  int legend_x = left + 10;
  for (const auto& curve : curves) {
    const cv::Scalar color(curve.rgb[0], curve.rgb[1], curve.rgb[2]);  // drawn in RGB order
    std::vector<cv::Point> points;
    for (size_t i = 0; i < curve.values.size(); ++i)
      if (curve.values[i] > 0 && std::isfinite(curve.values[i])) points.emplace_back(x_of(i), y_of(curve.values[i]));
    if (points.size() > 1) cv::polylines(canvas, points, false, color, 1, cv::LINE_AA);
    cv::line(canvas, {legend_x, top + 12}, {legend_x + 18, top + 12}, color, 2);
    cv::putText(canvas, curve.name, {legend_x + 22, top + 16}, cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(30, 30, 30));
    legend_x += 30 + 9 * static_cast<int>(curve.name.size());
  }
  return to_tensor(canvas);
}

at::Tensor image_grid(const std::vector<at::Tensor>& images, int columns, const std::vector<std::string>& captions) {
  if (images.empty()) throw Error("no images for the grid");
  const int h = static_cast<int>(images[0].size(0)), w = static_cast<int>(images[0].size(1));
  const int caption_h = captions.empty() ? 0 : 18;
  const int rows = (static_cast<int>(images.size()) + columns - 1) / columns;
  cv::Mat canvas(rows * (h + caption_h), columns * w, CV_8UC3, cv::Scalar(255, 255, 255));
  for (size_t i = 0; i < images.size(); ++i) {
    const at::Tensor image = images[i].contiguous();
    if (image.size(0) != h || image.size(1) != w) throw Error("grid images must all have the same size");
    const cv::Mat tile(h, w, CV_8UC3, image.data_ptr<uint8_t>());
    const int x = static_cast<int>(i % columns) * w, y = static_cast<int>(i / columns) * (h + caption_h);
    tile.copyTo(canvas(cv::Rect(x, y, w, h)));
    if (i < captions.size())
      cv::putText(canvas, captions[i].substr(0, static_cast<size_t>(std::max(4, w / 7))), {x + 3, y + h + 13},
                  cv::FONT_HERSHEY_SIMPLEX, 0.35, cv::Scalar(30, 30, 30), 1, cv::LINE_AA);
  }
  return to_tensor(canvas);
}

}  // namespace singleinsert
