#include "singleinsert/io/world.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <opencv2/imgproc.hpp>
#include <random>

namespace singleinsert {
namespace {

struct Named {
  const char* name;
  cv::Scalar rgb;
};

const Named kBackgrounds[] = {{"blue", {70, 110, 200}},  {"green", {80, 160, 90}},  {"yellow", {230, 200, 80}},
                              {"pink", {230, 150, 180}}, {"gray", {150, 150, 150}}, {"purple", {130, 90, 170}}};
const Named kSkins[] = {{"pale", {250, 220, 200}}, {"tan", {220, 170, 130}}, {"brown", {160, 110, 80}},
                        {"dark", {100, 70, 50}}};
const Named kHair[] = {{"black", {30, 30, 30}}, {"brown", {110, 70, 40}}, {"blond", {230, 200, 120}},
                       {"red", {190, 70, 40}},  {"white", {235, 235, 235}}};
const Named kEyes[] = {{"blue", {60, 120, 220}}, {"green", {60, 150, 80}}, {"brown", {100, 60, 30}}};

}  // namespace

WorldSample render_face(uint64_t seed, int size) {
  std::mt19937_64 random(seed);
  auto pick = [&](int n) { return static_cast<int>(random() % static_cast<uint64_t>(n)); };
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(random); };
  const Named& background = kBackgrounds[pick(6)];
  const Named& skin = kSkins[pick(4)];
  const Named& hair = kHair[pick(5)];
  const Named& eyes = kEyes[pick(3)];
  const double s = size;
  const cv::Point center(static_cast<int>(s * uniform(0.45, 0.55)), static_cast<int>(s * uniform(0.5, 0.58)));
  const cv::Size head(static_cast<int>(s * uniform(0.2, 0.27)), static_cast<int>(s * uniform(0.26, 0.33)));

  cv::Mat image(size, size, CV_8UC3, background.rgb);  // drawn in RGB order
  cv::Mat mask(size, size, CV_8UC1, cv::Scalar(0));
  const bool long_hair = pick(2) == 0;
  const cv::Size hair_size(head.width + static_cast<int>(s * 0.03), head.height + static_cast<int>(s * 0.03));
  if (long_hair) {
    const cv::Rect back(center.x - hair_size.width, center.y - hair_size.height / 2, 2 * hair_size.width,
                        static_cast<int>(hair_size.height * 1.4));
    cv::rectangle(image, back, hair.rgb, cv::FILLED);
    cv::rectangle(mask, back, 255, cv::FILLED);
  }
  cv::ellipse(image, center, hair_size, 0, 180, 360, hair.rgb, cv::FILLED, cv::LINE_AA);
  cv::ellipse(mask, center, hair_size, 0, 180, 360, 255, cv::FILLED, cv::LINE_AA);
  cv::ellipse(image, {center.x, center.y + head.height / 8}, head, 0, 0, 360, skin.rgb, cv::FILLED, cv::LINE_AA);
  cv::ellipse(mask, {center.x, center.y + head.height / 8}, head, 0, 0, 360, 255, cv::FILLED, cv::LINE_AA);
  // Fringe over the forehead.
  cv::ellipse(image, {center.x, center.y - head.height / 3}, {head.width, head.height / 3}, 0, 180, 360, hair.rgb,
              cv::FILLED, cv::LINE_AA);

  const int eye_dx = static_cast<int>(head.width * uniform(0.35, 0.5)), eye_y = center.y + head.height / 8;
  const cv::Size eye(static_cast<int>(s * uniform(0.025, 0.04)), static_cast<int>(s * uniform(0.015, 0.035)));
  for (int side : {-1, 1}) {
    cv::ellipse(image, {center.x + side * eye_dx, eye_y}, eye, 0, 0, 360, cv::Scalar(255, 255, 255), cv::FILLED,
                cv::LINE_AA);
    cv::circle(image, {center.x + side * eye_dx, eye_y}, std::max(2, eye.height * 2 / 3), eyes.rgb, cv::FILLED,
               cv::LINE_AA);
  }
  const bool freckles = pick(2) == 0;
  if (freckles)
    for (int i = 0; i < 10; ++i)
      cv::circle(image,
                 {center.x + static_cast<int>(uniform(-0.6, 0.6) * head.width),
                  eye_y + static_cast<int>(uniform(0.15, 0.35) * head.height)},
                 std::max(1, size / 128), cv::Scalar(150, 90, 60), cv::FILLED, cv::LINE_AA);
  const bool smiling = pick(2) == 0;
  const cv::Point mouth(center.x, center.y + static_cast<int>(head.height * 0.65));
  cv::ellipse(image, mouth, {head.width / 3, head.height / 8}, 0, smiling ? 20 : 200, smiling ? 160 : 340,
              cv::Scalar(120, 40, 40), std::max(2, size / 100), cv::LINE_AA);

  WorldSample sample;
  sample.image = at::from_blob(image.data, {size, size, 3}, at::kByte).clone();
  sample.mask = at::from_blob(mask.data, {size, size, 1}, at::kByte).clone();
  sample.caption = fmt::format("a photo of a {}{} face with {} {} hair and {} eyes{} on a {} background",
                               smiling ? "smiling " : "", skin.name, long_hair ? "long" : "short", hair.name,
                               eyes.name, freckles ? " and freckles" : "", background.name);
  return sample;
}

}  // namespace singleinsert
