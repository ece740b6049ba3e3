#include "singleinsert/world/render.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "singleinsert/core/error.h"

namespace singleinsert::world {
namespace {

constexpr int kShift = 4;  // sub-pixel bits: shapes are placed at fractional coordinates
constexpr double kOne = 1 << kShift;

const cv::Scalar kSkinRgb[] = {{250, 222, 200}, {222, 172, 130}, {160, 110, 78}, {98, 68, 50}};
const cv::Scalar kHairRgb[] = {{32, 30, 30}, {112, 70, 40}, {232, 200, 120}, {192, 72, 40}, {236, 236, 236}};
const cv::Scalar kEyeRgb[] = {{60, 120, 222}, {56, 150, 80}, {100, 62, 30}};
const cv::Scalar kBackgroundRgb[] = {{72, 112, 202}, {82, 160, 92},   {230, 202, 82}, {230, 152, 182},
                                     {150, 150, 150}, {132, 92, 172}, {236, 140, 50}};
const cv::Scalar kObjectRgb[] = {{210, 40, 40}, {40, 70, 210}, {40, 160, 60}, {240, 210, 40}, {245, 245, 245}, {20, 20, 20}};
const cv::Scalar kDark(24, 24, 34);
const cv::Scalar kGold(236, 190, 50);

cv::Scalar shifted(const cv::Scalar& colour, const int (&shift)[3]) {
  cv::Scalar out;
  for (int c = 0; c < 3; ++c) out[c] = std::clamp(colour[c] + shift[c], 0.0, 255.0);
  return out;
}
cv::Scalar scaled(const cv::Scalar& colour, double factor) {
  return {std::min(255.0, colour[0] * factor), std::min(255.0, colour[1] * factor), std::min(255.0, colour[2] * factor)};
}
cv::Scalar towards_white(const cv::Scalar& colour, double t) {
  return {colour[0] + (255 - colour[0]) * t, colour[1] + (255 - colour[1]) * t, colour[2] + (255 - colour[2]) * t};
}

// Draws shapes on the image and, for the subject, the same shapes on the mask.
class Painter {
 public:
  Painter(cv::Mat& image, cv::Mat& mask) : image_(image), mask_(mask) {}
  void set_subject(bool on_mask) { on_mask_ = on_mask; }

  void ellipse(double x, double y, double ax, double ay, const cv::Scalar& colour, double angle = 0,
               double start = 0, double end = 360, int thickness = cv::FILLED) {
    auto draw = [&](cv::Mat& target, const cv::Scalar& c) {
      cv::ellipse(target, point(x, y), cv::Size(fixed(std::max(ax, 0.5)), fixed(std::max(ay, 0.5))), angle, start, end,
                  c, thickness, cv::LINE_AA, kShift);
    };
    draw(image_, colour);
    if (on_mask_) draw(mask_, cv::Scalar(255));
  }
  void circle(double x, double y, double r, const cv::Scalar& colour) { ellipse(x, y, r, r, colour); }
  void line(double x0, double y0, double x1, double y1, const cv::Scalar& colour, int thickness) {
    cv::line(image_, point(x0, y0), point(x1, y1), colour, thickness, cv::LINE_AA, kShift);
    if (on_mask_) cv::line(mask_, point(x0, y0), point(x1, y1), cv::Scalar(255), thickness, cv::LINE_AA, kShift);
  }
  void polygon(const std::vector<std::pair<double, double>>& corners, const cv::Scalar& colour) {
    std::vector<cv::Point> points;
    for (const auto& [x, y] : corners) points.push_back(point(x, y));
    cv::fillConvexPoly(image_, points, colour, cv::LINE_AA, kShift);
    if (on_mask_) cv::fillConvexPoly(mask_, points, cv::Scalar(255), cv::LINE_AA, kShift);
  }

 private:
  static int fixed(double v) { return static_cast<int>(std::lround(v * kOne)); }
  static cv::Point point(double x, double y) { return {fixed(x), fixed(y)}; }
  cv::Mat& image_;
  cv::Mat& mask_;
  bool on_mask_ = false;
};

class Random {  // SplitMix64, for the freckle pattern
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  double uniform(double lo, double hi) {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return lo + (hi - lo) * static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
  }

 private:
  uint64_t state_;
};

void draw_background(cv::Mat& image, const Scene& scene, double s) {
  const cv::Scalar colour = kBackgroundRgb[scene.background];
  image.setTo(colour);
  const int t = std::max(1, static_cast<int>(s / 24));
  if (scene.pattern == 1) {  // diagonal stripes
    for (double x = -s; x < 2 * s; x += s / 6)
      cv::line(image, {static_cast<int>(x), 0}, {static_cast<int>(x + s), static_cast<int>(s)}, scaled(colour, 0.72), t,
               cv::LINE_AA);
  } else if (scene.pattern == 2) {  // a grid of dots
    for (double y = s / 16; y < s; y += s / 8)
      for (double x = s / 16; x < s; x += s / 8)
        cv::circle(image, {static_cast<int>(x), static_cast<int>(y)}, std::max(1, static_cast<int>(s / 40)),
                   towards_white(colour, 0.55), cv::FILLED, cv::LINE_AA);
  }
}

void draw_cup(Painter& paint, double cx, double base_y, double scale, const cv::Scalar& colour, double s) {
  const double top = 0.085 * s * scale, bottom = 0.068 * s * scale, height = 0.2 * s * scale;
  const double rim_y = base_y - height;
  paint.ellipse(cx + top * 0.95, rim_y + height * 0.45, 0.05 * s * scale, 0.065 * s * scale, colour, 0, 0, 360,
                std::max(2, static_cast<int>(0.022 * s * scale)));  // handle
  paint.polygon({{cx - top, rim_y}, {cx + top, rim_y}, {cx + bottom, base_y}, {cx - bottom, base_y}}, colour);
  paint.ellipse(cx, base_y, bottom, 0.018 * s * scale, colour);
  paint.ellipse(cx, rim_y, top, 0.022 * s * scale, scaled(colour, 0.6));  // the opening
}

void draw_face(Painter& paint, const Scene& scene, double cx, double cy, double w, double s) {
  const FaceIdentity& f = scene.face;
  const double h = w * f.head_aspect;
  const int line = std::max(1, static_cast<int>(std::lround(s / 110)));
  const cv::Scalar skin = shifted(kSkinRgb[f.skin], f.skin_shift);
  const cv::Scalar hair = shifted(kHairRgb[f.hair_colour], f.hair_shift);

  // Hair behind the head.
  if (f.hair_style == 1) {
    paint.polygon({{cx - 1.14 * w, cy - 0.2 * h}, {cx + 1.14 * w, cy - 0.2 * h}, {cx + 1.2 * w, cy + 1.05 * h},
                   {cx - 1.2 * w, cy + 1.05 * h}},
                  hair);
  } else if (f.hair_style == 2) {
    for (int i = 0; i <= 10; ++i) {
      const double a = (150.0 + 24.0 * i) * M_PI / 180.0;
      paint.circle(cx + 1.02 * w * std::cos(a), cy + 0.98 * h * std::sin(a) - 0.05 * h, 0.26 * w, hair);
    }
  }
  paint.ellipse(cx, cy, 1.08 * w, 1.06 * h, hair, 0, 180, 360);  // the hair's crown
  // Ears, then earrings hanging below them.
  for (int side : {-1, 1}) paint.ellipse(cx + side * 0.97 * w, cy + 0.08 * h, 0.13 * w, 0.2 * h, scaled(skin, 0.93));
  if (scene.earrings)
    for (int side : {-1, 1}) {
      paint.line(cx + side * 0.99 * w, cy + 0.26 * h, cx + side * 0.99 * w, cy + 0.36 * h, kGold, line);
      paint.circle(cx + side * 0.99 * w, cy + 0.42 * h, 0.085 * w, kGold);
    }
  paint.ellipse(cx, cy + 0.04 * h, w, h, skin);
  // The fringe, from the crown down to fringe_depth, slanted at the parting.
  const double crown = cy - 1.06 * h, fringe_bottom = cy - 0.96 * h + 1.4 * f.fringe_depth * h;
  paint.ellipse(cx, (crown + fringe_bottom) / 2, 1.0 * w, (fringe_bottom - crown) / 2, hair, f.fringe_tilt);

  const double eye_y = cy + f.eye_drop * h;
  const double eye_w = f.eye_size * w;
  const double eye_h = eye_w * f.eye_openness * (scene.expression == 2 ? 1.3 : 1.0);
  for (int side : {-1, 1}) {
    const double ex = cx + side * f.eye_spacing * w;
    paint.line(ex - eye_w, eye_y - eye_h - 0.09 * h, ex + eye_w, eye_y - eye_h - 0.09 * h - side * 0.02 * h,
               scaled(hair, 0.8), line + 1);  // eyebrow
    paint.ellipse(ex, eye_y, eye_w, eye_h, cv::Scalar(250, 250, 250));
    const double iris = std::min(eye_h * 0.9, eye_w * 0.6);
    paint.circle(ex, eye_y, iris, kEyeRgb[f.eye_colour]);
    paint.circle(ex, eye_y, iris * 0.45, cv::Scalar(10, 10, 10));
  }
  const cv::Scalar shade = scaled(skin, 0.72);
  paint.line(cx, eye_y + 0.05 * h, cx + 0.06 * w, eye_y + f.nose_length * h, shade, line);
  paint.line(cx + 0.06 * w, eye_y + f.nose_length * h, cx - 0.04 * w, eye_y + f.nose_length * h + 0.02 * h, shade, line);
  if (f.freckles) {
    Random random(f.freckle_seed);
    for (int i = 0; i < 14; ++i) {
      const double side = i % 2 == 0 ? -1.0 : 1.0;
      paint.circle(cx + side * random.uniform(0.22, 0.7) * w, eye_y + random.uniform(0.12, 0.34) * h,
                   std::max(0.8, s / 180), scaled(skin, 0.66));
    }
  }
  const double mouth_y = eye_y + f.nose_length * h + 0.2 * h, mouth_w = f.mouth_width * w;
  const cv::Scalar lips(150, 40, 46);
  if (scene.expression == 1) {
    paint.ellipse(cx, mouth_y - 0.06 * h, mouth_w, 0.14 * h, lips, 0, 15, 165, line + 1);
  } else if (scene.expression == 2) {
    paint.ellipse(cx, mouth_y, 0.32 * mouth_w, 0.1 * h, lips);
  } else {
    paint.line(cx - mouth_w, mouth_y, cx + mouth_w, mouth_y, lips, line + 1);
  }
  if (scene.sunglasses) {
    for (int side : {-1, 1})
      paint.ellipse(cx + side * f.eye_spacing * w, eye_y, eye_w * 1.45 + 0.04 * w, eye_w * 1.05 + 0.03 * w, kDark);
    paint.line(cx - f.eye_spacing * w + eye_w, eye_y - 0.02 * h, cx + f.eye_spacing * w - eye_w, eye_y - 0.02 * h, kDark,
               line + 1);
    for (int side : {-1, 1})
      paint.line(cx + side * (f.eye_spacing * w + eye_w * 1.4), eye_y - 0.02 * h, cx + side * 0.99 * w, eye_y - 0.06 * h,
                 kDark, line + 1);
  }
  if (scene.hat) {
    const cv::Scalar colour = kObjectRgb[scene.hat_colour];
    paint.polygon({{cx - 0.78 * w, cy - 0.8 * h}, {cx + 0.78 * w, cy - 0.8 * h}, {cx + 0.68 * w, cy - 1.5 * h},
                   {cx - 0.68 * w, cy - 1.5 * h}},
                  colour);
    paint.polygon({{cx - 0.79 * w, cy - 0.8 * h}, {cx + 0.79 * w, cy - 0.8 * h}, {cx + 0.77 * w, cy - 0.95 * h},
                   {cx - 0.77 * w, cy - 0.95 * h}},
                  scaled(colour, 0.6));  // band
    paint.ellipse(cx, cy - 0.8 * h, 1.5 * w, 0.13 * h, colour);  // brim
  }
}

}  // namespace

WorldSample render(const Scene& scene, int size) {
  if (size < 32) throw Error(fmt::format("world: image size {} is too small (at least 32)", size));
  const double s = size;
  cv::Mat image(size, size, CV_8UC3);  // drawn in RGB order
  cv::Mat mask(size, size, CV_8UC1, cv::Scalar(0));
  draw_background(image, scene, s);
  Painter paint(image, mask);
  const double scale = scene.size == 0 ? 0.75 : scene.size == 2 ? 1.2 : 1.0;
  double face_x = scene.position == 0 ? 0.32 : scene.position == 2 ? 0.68 : 0.5;
  if (scene.subject == Subject::kCup) {
    paint.set_subject(true);
    draw_cup(paint, face_x * s, 0.84 * s, 1.7 * scale, kObjectRgb[scene.cup_colour], s);
  } else {
    if (scene.cup) {  // the cup stands on the side with more room, and is background for the mask
      if (scene.position == 1) face_x = 0.4;
      draw_cup(paint, (face_x < 0.5 ? 0.8 : 0.2) * s, 0.88 * s, 1.0, kObjectRgb[scene.cup_colour], s);
    }
    paint.set_subject(true);
    draw_face(paint, scene, face_x * s, 0.53 * s, 0.17 * s * scale, s);
  }
  WorldSample sample;
  sample.image = at::from_blob(image.data, {size, size, 3}, at::kByte).clone();
  sample.mask = at::from_blob(mask.data, {size, size, 1}, at::kByte).clone();
  sample.caption = caption(scene);
  sample.attributes = to_json(scene);
  return sample;
}

}  // namespace singleinsert::world
