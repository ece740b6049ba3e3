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

cv::Scalar shifted(const cv::Scalar& colour, double shade) {
  cv::Scalar out;
  for (int c = 0; c < 3; ++c) out[c] = std::clamp(colour[c] + shade, 0.0, 255.0);
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

cv::Scalar band_colour(const cv::Scalar& colour) {  // lighter on dark cups, darker on light ones
  const double luma = 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2];
  return luma > 150 ? scaled(colour, 0.5) : towards_white(colour, 0.6);
}

// A cup standing on base_y; `scale` 1 is the size of a cup beside a face.
void draw_cup(Painter& paint, const CupIdentity& cup, double cx, double base_y, double scale, double s) {
  const cv::Scalar colour = kObjectRgb[cup.colour];
  const double bottom = 0.07 * s * scale, top = bottom * cup.taper, height = 0.2 * s * scale * cup.height;
  const double rim_y = base_y - height;
  auto half_width_at = [&](double t) { return top + (bottom - top) * t; };  // t: 0 at the rim, 1 at the base
  const double handle_y = rim_y + height * cup.handle_height;
  const double handle_x = cx + half_width_at(cup.handle_height) * 0.92;
  paint.ellipse(handle_x, handle_y, 0.045 * s * scale * cup.handle_size, 0.06 * s * scale * cup.handle_size, colour, 0,
                0, 360, std::max(2, static_cast<int>(std::lround(0.024 * s * scale))));
  paint.polygon({{cx - top, rim_y}, {cx + top, rim_y}, {cx + bottom, base_y}, {cx - bottom, base_y}}, colour);
  paint.ellipse(cx, base_y, bottom, 0.018 * s * scale, colour);
  const double t0 = std::max(0.08, cup.band_position - cup.band_width / 2), t1 = std::min(0.95, cup.band_position + cup.band_width / 2);
  const double y0 = rim_y + height * t0, y1 = rim_y + height * t1;
  paint.polygon({{cx - half_width_at(t0), y0}, {cx + half_width_at(t0), y0}, {cx + half_width_at(t1), y1},
                 {cx - half_width_at(t1), y1}},
                band_colour(colour));
  paint.ellipse(cx, rim_y, top, 0.022 * s * scale, scaled(colour, 0.6));  // the opening
}

// Where a point of the frontal face lands when the head turns: a point at u (-1..1, in units of
// the half-width) sits on a vertical cylinder at angle asin(u); turning left by `yaw` moves it to
// x = sin(asin(u) - yaw), and it faces the viewer while cos(asin(u) - yaw) > 0.
struct Projected {
  double x, facing;
};
Projected project(double u, double yaw) {
  const double a = std::asin(std::clamp(u, -1.0, 1.0)) - yaw;
  return {std::sin(a), std::cos(a)};
}

constexpr double kViewYaw[] = {0.0, 0.61, -0.61, 1.4};  // frontal, turned left, turned right, profile (radians)

// `unit` is the scene's face size: features scale with it, while head_width and head_aspect
// shape the head around them (so a wide head is not a large face).
void draw_face(Painter& paint, const Scene& scene, double cx, double cy, double unit, double s) {
  const FaceIdentity& f = scene.face;
  const double w = unit * f.head_width, h = unit * f.head_aspect;
  const double yaw = kViewYaw[scene.view], turn = std::sin(yaw);
  const int line = std::max(1, static_cast<int>(std::lround(s / 110)));
  const cv::Scalar skin = shifted(kSkinRgb[f.skin], f.skin_shade);
  const cv::Scalar hair = shifted(kHairRgb[f.hair_colour], f.hair_shade);
  const double back = 0.12 * w * turn;  // the back of the head shows on the side away from the turn

  // Hair behind the head.
  if (f.hair_style == 1) {
    paint.polygon({{cx + back - 1.14 * w, cy - 0.2 * h}, {cx + back + 1.14 * w, cy - 0.2 * h},
                   {cx + back + 1.2 * w, cy + 1.05 * h}, {cx + back - 1.2 * w, cy + 1.05 * h}},
                  hair);
  } else if (f.hair_style == 2) {
    for (int i = 0; i <= 10; ++i) {
      const double a = (150.0 + 24.0 * i) * M_PI / 180.0;
      paint.circle(cx + back + 1.02 * w * std::cos(a), cy + 0.98 * h * std::sin(a) - 0.05 * h, 0.28 * w, hair);
    }
  }
  paint.ellipse(cx + back, cy, 1.08 * w, 1.06 * h, hair, 0, 180, 360);  // the hair's crown
  // Ears facing the viewer: at the outline of a frontal head they sit behind the face; on a
  // turned head the visible ear is on the cheek, in front of it. Earrings hang below them, always
  // in sight.
  std::vector<double> ears;
  for (int side : {-1, 1}) {
    const Projected ear = project(side * 1.0, yaw);
    if (ear.facing > -0.05) ears.push_back(cx + ear.x * w * 0.97);
  }
  auto draw_ears = [&](bool on_the_cheek) {
    for (double ex : ears)
      if ((std::abs(ex - cx) < 0.9 * w) == on_the_cheek) paint.ellipse(ex, cy + 0.08 * h, 0.14 * w, 0.2 * h, scaled(skin, 0.9));
  };
  draw_ears(false);
  paint.ellipse(cx, cy + 0.04 * h, w, h, skin);
  draw_ears(true);
  // Earrings: large gold drops ringed in dark, so that they stand out on blond hair and a yellow
  // background alike and stay a few latent positions wide.
  if (scene.earrings)
    for (double ex : ears) {
      paint.line(ex, cy + 0.24 * h, ex, cy + 0.36 * h, scaled(kGold, 0.55), line + 1);
      paint.circle(ex, cy + 0.48 * h, 0.2 * unit + line, scaled(kGold, 0.45));
      paint.circle(ex, cy + 0.48 * h, 0.2 * unit, kGold);
    }
  // The fringe, from the crown down to fringe_depth, slanted at the parting; it turns with the face.
  const double crown = cy - 1.06 * h, fringe_bottom = cy - 0.96 * h + 1.4 * f.fringe_depth * h;
  paint.ellipse(cx - 0.3 * w * turn, (crown + fringe_bottom) / 2, w * (1.0 - 0.25 * std::abs(turn)),
                (fringe_bottom - crown) / 2, hair, f.fringe_tilt);

  const double eye_y = cy + f.eye_drop * h;
  const double eye_w = f.eye_size * unit;
  const double eye_h = eye_w * 0.62 * (scene.expression == 2 ? 1.3 : 1.0);
  struct Eye {
    double x, width;
  };
  std::vector<Eye> eyes;
  for (int side : {-1, 1}) {
    const Projected eye = project(side * f.eye_spacing * unit / w, yaw);
    if (eye.facing > 0.25) eyes.push_back({cx + eye.x * w, eye_w * eye.facing});
  }
  for (const Eye& eye : eyes) {
    const double brow_y = eye_y - eye_h - (scene.expression == 2 ? 0.17 : 0.09) * h;  // raised in surprise
    paint.line(eye.x - eye.width, brow_y, eye.x + eye.width, brow_y, scaled(hair, 0.8), line + 1);  // eyebrow
    paint.ellipse(eye.x, eye_y, eye.width, eye_h, cv::Scalar(250, 250, 250));
    const double iris = std::min(eye_h * 0.9, eye.width * 0.62);
    paint.circle(eye.x - 0.25 * eye.width * turn, eye_y, iris, kEyeRgb[f.eye_colour]);
    paint.circle(eye.x - 0.3 * eye.width * turn, eye_y, iris * 0.45, cv::Scalar(10, 10, 10));
  }
  // The nose: a shaded line from between the eyes, pointing where the face looks; in profile a
  // bump beyond the cheek's outline.
  const cv::Scalar shade = scaled(skin, 0.72);
  const double nose_x = cx + project(0.0, yaw).x * w, nose_tip_y = eye_y + f.nose_length * h;
  const double tip_x = nose_x + (0.06 - 0.3 * turn) * unit;
  if (scene.view == 3)
    paint.polygon({{nose_x + 0.05 * w, eye_y + 0.02 * h}, {tip_x, nose_tip_y}, {nose_x + 0.05 * w, nose_tip_y + 0.04 * h}},
                  skin);
  paint.line(nose_x, eye_y + 0.05 * h, tip_x, nose_tip_y, shade, line);
  paint.line(tip_x, nose_tip_y, tip_x + 0.1 * w * (turn > 0.2 ? 1 : -1), nose_tip_y + 0.02 * h, shade, line);
  if (f.freckles) {
    Random random(f.freckle_seed);
    for (int i = 0; i < 10; ++i) {
      const double side = i % 2 == 0 ? -1.0 : 1.0;
      const Projected spot = project(side * random.uniform(0.25, 0.7) * unit / w, yaw);
      const double y = eye_y + random.uniform(0.14, 0.34) * h;
      if (spot.facing > 0.2) paint.circle(cx + spot.x * w, y, std::max(1.1, s / 55), scaled(skin, 0.6));
    }
  }
  const Projected mouth = project(0.0, yaw);
  const double mouth_x = cx + mouth.x * w * 0.92, mouth_y = nose_tip_y + 0.2 * h;
  const double mouth_w = f.mouth_width * unit * std::max(0.35, mouth.facing);
  // The three expressions differ in colour and area, not only in a line's shape: a closed mouth is
  // a thin red line, a smile an open grin (dark, a row of white teeth along its top), surprise a
  // tall dark "O". Shapes of a pixel or two alone were averaged into one red blob by the model.
  const cv::Scalar lips(150, 40, 46), inside(60, 14, 20), teeth(246, 246, 240);
  if (scene.expression == 1) {
    const double grin_w = 1.1 * mouth_w, grin_h = 0.22 * h, top = mouth_y - 0.06 * h;
    paint.ellipse(mouth_x, top, grin_w + line, grin_h + line, lips, 0, 0, 180);
    paint.ellipse(mouth_x, top, grin_w, grin_h, inside, 0, 0, 180);
    paint.polygon({{mouth_x - 0.85 * grin_w, top}, {mouth_x + 0.85 * grin_w, top},
                   {mouth_x + 0.75 * grin_w, top + 0.35 * grin_h}, {mouth_x - 0.75 * grin_w, top + 0.35 * grin_h}},
                  teeth);
  } else if (scene.expression == 2) {
    const double o_w = 0.45 * mouth_w + 0.08 * unit, o_h = 0.17 * h;
    paint.ellipse(mouth_x, mouth_y + 0.02 * h, o_w + line, o_h + line, lips);
    paint.ellipse(mouth_x, mouth_y + 0.02 * h, o_w, o_h, inside);
  } else {
    paint.line(mouth_x - mouth_w, mouth_y, mouth_x + mouth_w, mouth_y, lips, line + 1);
  }
  if (scene.sunglasses) {
    for (const Eye& eye : eyes)
      paint.ellipse(eye.x, eye_y, eye.width * 1.45 + 0.04 * unit, eye_w * 1.05 + 0.03 * unit, kDark);
    if (eyes.size() == 2)
      paint.line(eyes[0].x + eyes[0].width, eye_y - 0.02 * h, eyes[1].x - eyes[1].width, eye_y - 0.02 * h, kDark,
                 line + 1);
    for (double ex : eyes.empty() ? std::vector<double>{} : ears) {  // from the nearer lens to each visible ear
      const Eye& lens = std::abs(eyes.front().x - ex) < std::abs(eyes.back().x - ex) ? eyes.front() : eyes.back();
      const double edge = lens.x + (ex > lens.x ? 1 : -1) * lens.width * 1.4;
      paint.line(edge, eye_y - 0.02 * h, ex, eye_y - 0.06 * h, kDark, line + 1);
    }
  }
  if (scene.hat) {
    const cv::Scalar colour = kObjectRgb[scene.hat_colour];
    const double hx = cx + back * 0.5;
    paint.polygon({{hx - 0.78 * w, cy - 0.8 * h}, {hx + 0.78 * w, cy - 0.8 * h}, {hx + 0.68 * w, cy - 1.5 * h},
                   {hx - 0.68 * w, cy - 1.5 * h}},
                  colour);
    paint.polygon({{hx - 0.79 * w, cy - 0.8 * h}, {hx + 0.79 * w, cy - 0.8 * h}, {hx + 0.77 * w, cy - 0.95 * h},
                   {hx - 0.77 * w, cy - 0.95 * h}},
                  scaled(colour, 0.6));  // band
    paint.ellipse(hx, cy - 0.8 * h, 1.5 * w, 0.13 * h, colour);  // brim
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
  const double scale = scene.size == 0 ? 0.75 : scene.size == 2 ? 1.22 : 1.0;
  double face_x = scene.position == 0 ? 0.31 : scene.position == 2 ? 0.69 : 0.5;
  if (scene.subject == Subject::kCup) {
    paint.set_subject(true);
    draw_cup(paint, scene.cup_identity, face_x * s, 0.86 * s, 1.7 * scale, s);
  } else {
    if (scene.cup) {  // the cup stands on the side with more room, and is background for the mask
      if (scene.position == 1) face_x = 0.38;
      draw_cup(paint, scene.cup_identity, (face_x < 0.5 ? 0.81 : 0.19) * s, 0.9 * s, 1.25, s);
    }
    paint.set_subject(true);
    draw_face(paint, scene, face_x * s, 0.56 * s, 0.2 * s * scale, s);
  }
  WorldSample sample;
  sample.image = at::from_blob(image.data, {size, size, 3}, at::kByte).clone();
  sample.mask = at::from_blob(mask.data, {size, size, 1}, at::kByte).clone();
  sample.caption = caption(scene);
  sample.attributes = to_json(scene);
  return sample;
}

at::Tensor detail_regions(const Scene& scene, const at::Tensor& drawn) {
  const int size = static_cast<int>(drawn.size(0));
  at::Tensor regions = at::zeros({size, size}, at::kFloat);
  if (scene.subject != Subject::kFace) return regions;
  std::vector<Scene> variants;
  for (int expression = 0; expression < static_cast<int>(kExpressions.size()); ++expression)
    if (expression != scene.expression) {
      variants.push_back(scene);
      variants.back().expression = expression;
    }
  variants.push_back(scene);
  variants.back().earrings = !scene.earrings;
  for (const Scene& variant : variants)
    regions = at::maximum(regions, render(variant, size).image.ne(drawn).any(2).to(at::kFloat));
  return regions;
}

}  // namespace singleinsert::world
