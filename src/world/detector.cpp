#include "singleinsert/world/detector.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/training/adamw.h"
#include "singleinsert/world/render.h"

namespace singleinsert::world {
namespace {

constexpr int64_t kIgnore = -100;  // face attributes of a cup scene
constexpr uint64_t kValidationScenes = uint64_t{1} << 50;

int64_t total_classes() {
  int64_t total = 0;
  for (const auto& head : attribute_heads()) total += head.classes;
  return total;
}

// uint8 [B, H, W, 3] -> float [B, 3, 64, 64] in [-1, 1].
at::Tensor to_input(const at::Tensor& images) {
  at::Tensor x = images.permute({0, 3, 1, 2}).to(at::kFloat) / 127.5 - 1.0;
  const int64_t size = x.size(2), target = WorldDetectorImpl::kInputSize;
  if (size == target) return x.contiguous();
  if (size % target == 0) return at::avg_pool2d(x, size / target);
  return at::upsample_bilinear2d(x, {target, target}, false);
}

// A training batch: renders of training-range scenes, blurred and noised like generated images.
struct Batch {
  at::Tensor images, labels, identity, is_face;
};
Batch render_batch(uint64_t first, int count, bool validation, at::Generator& generator, bool augment) {
  std::vector<at::Tensor> images, labels, identities, faces;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = first + static_cast<uint64_t>(i);
    Scene scene = sample_scene(validation ? kValidationScenes + seed : seed);
    if (validation) scene.face = sample_identity(kHeldOutIdentitySeed + seed);
    images.push_back(render(scene, WorldDetectorImpl::kInputSize).image);
    labels.push_back(at::tensor(attribute_labels(scene), at::kLong));
    identities.push_back(identity_target(scene.face));
    faces.push_back(at::scalar_tensor(scene.subject == Subject::kFace ? 1.0 : 0.0));
  }
  Batch batch{to_input(at::stack(images)), at::stack(labels), at::stack(identities), at::stack(faces)};
  if (augment) {
    const double sigma = at::rand({1}, generator).item<double>() * 1.2;
    if (sigma > 0.2) {
      const at::Tensor taps = at::arange(-2, 3, at::kFloat);
      at::Tensor kernel = (-(taps * taps) / (2 * sigma * sigma)).exp();
      kernel = kernel / kernel.sum();
      const at::Tensor kernel2d = (kernel.view({5, 1}) * kernel.view({1, 5})).expand({3, 1, 5, 5}).contiguous();
      batch.images = at::conv2d(at::replication_pad2d(batch.images, {2, 2, 2, 2}), kernel2d, at::Tensor(), at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, 3);
    }
    const double noise = at::rand({1}, generator).item<double>() * 0.08;
    batch.images = batch.images + noise * at::randn(batch.images.sizes(), generator);
  }
  return batch;
}

}  // namespace

const std::vector<AttributeHead>& attribute_heads() {
  static const std::vector<AttributeHead> heads = {
      {"subject", 2},   {"sunglasses", 2},
      {"hat", 2},       {"earrings", 2},
      {"cup", 2},       {"expression", static_cast<int>(kExpressions.size())},
      {"background", static_cast<int>(kBackgroundColours.size())},
      {"pattern", static_cast<int>(kPatterns.size())},
      {"position", static_cast<int>(kPositions.size())},
      {"size", static_cast<int>(kSizes.size())}};
  return heads;
}

std::vector<int64_t> attribute_labels(const Scene& scene) {
  const bool face = scene.subject == Subject::kFace;
  auto face_only = [face](int64_t label) { return face ? label : kIgnore; };
  return {face ? 0 : 1,
          face_only(scene.sunglasses),
          face_only(scene.hat),
          face_only(scene.earrings),
          face_only(scene.cup),
          face_only(scene.expression),
          scene.background,
          scene.pattern,
          scene.position,
          scene.size};
}

at::Tensor identity_target(const FaceIdentity& face) {
  std::vector<float> values;
  for (const HiddenProportion& hidden : kHiddenProportions)
    values.push_back(static_cast<float>((face.*hidden.field - hidden.lo) / (hidden.hi - hidden.lo)));
  auto one_hot = [&values](int index, size_t classes) {
    for (size_t i = 0; i < classes; ++i) values.push_back(static_cast<size_t>(index) == i ? 1.f : 0.f);
  };
  one_hot(face.skin, kSkinTones.size());
  one_hot(face.hair_colour, kHairColours.size());
  one_hot(face.hair_style, kHairStyles.size());
  one_hot(face.eye_colour, kEyeColours.size());
  values.push_back(face.freckles ? 1.f : 0.f);
  return at::tensor(values, at::kFloat);
}

WorldDetectorImpl::WorldDetectorImpl() {
  convs.attach(*this, "convs");
  const int64_t widths[] = {3, 32, 64, 96, 128, 160};
  for (int i = 0; i < 5; ++i) convs.push_back(Conv2d(widths[i], widths[i + 1], 3, i == 0 ? 1 : 2, 1));
  hidden = register_module("hidden", Linear(160 * 4 * 4, 256));
  heads = register_module("heads", Linear(256, total_classes() + kIdentityWidth));
}

at::Tensor WorldDetectorImpl::forward(const at::Tensor& images) {
  at::Tensor x = images;
  for (auto& conv : convs) x = at::silu(conv->forward(x));
  return heads->forward(at::silu(hidden->forward(x.flatten(1))));
}

std::vector<Detection> detect(WorldDetector& detector, const at::Tensor& images) {
  at::NoGradGuard no_grad;
  const at::Tensor out = detector->forward(to_input(images));
  std::vector<Detection> detections(static_cast<size_t>(images.size(0)));
  int64_t offset = 0;
  for (const auto& head : attribute_heads()) {
    const at::Tensor predicted = out.slice(1, offset, offset + head.classes).argmax(1).cpu();  // one copy per head
    const auto classes = predicted.accessor<int64_t, 1>();
    for (size_t b = 0; b < detections.size(); ++b) detections[b].attributes[head.name] = classes[static_cast<int64_t>(b)];
    offset += head.classes;
  }
  for (size_t b = 0; b < detections.size(); ++b) detections[b].identity = out[b].slice(0, offset).clone();
  return detections;
}

double identity_distance(const Detection& a, const Detection& b) {
  return (a.identity - b.identity).norm().item<double>();
}

WorldDetector train_detector(const DetectorTrainingOptions& options, const ProgressCallback& progress) {
  at::Generator generator = make_cpu_generator(options.seed);
  WorldDetector detector;
  init_parameters(*detector, generator);
  detector->train();
  AdamW optimizer(detector->parameters(), {options.lr, 0.9, 0.999, 1e-8, 0.0});
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < options.steps; ++step) {
    const Batch batch = render_batch(static_cast<uint64_t>(step) * options.batch_size, options.batch_size, false,
                                     generator, true);
    const at::Tensor out = detector->forward(batch.images);
    at::Tensor loss = at::zeros({}, at::kFloat);
    int64_t offset = 0, column = 0;
    for (const auto& head : attribute_heads()) {
      loss = loss + at::cross_entropy_loss(out.slice(1, offset, offset + head.classes), batch.labels.select(1, column),
                                           {}, at::Reduction::Mean, kIgnore);
      offset += head.classes;
      ++column;
    }
    const at::Tensor identity_error = (out.slice(1, offset) - batch.identity).square().mean(1);
    loss = loss + 10.0 * (identity_error * batch.is_face).sum() / batch.is_face.sum().clamp_min(1.0);
    loss.backward();
    optimizer.step();
    optimizer.zero_grad();
    if (progress) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      progress({"detector", step + 1, options.steps, elapsed, {{"loss", loss.item<double>()}}});
    }
  }
  detector->eval();
  return detector;
}

DetectorValidation validate_detector(WorldDetector& detector, int samples, uint64_t seed) {
  DetectorValidation validation;
  validation.samples = samples;
  at::Generator generator = make_cpu_generator(seed);
  std::map<std::string, int> correct, counted;
  for (int first = 0; first < samples; first += 64) {
    const int count = std::min(64, samples - first);
    const Batch batch = render_batch(seed + static_cast<uint64_t>(first), count, true, generator, false);
    const at::Tensor pixels = ((batch.images + 1.0) * 127.5).round().clamp(0, 255).to(at::kByte).permute({0, 2, 3, 1});
    const std::vector<Detection> detections = detect(detector, pixels);
    for (int b = 0; b < count; ++b) {
      int column = 0;
      for (const auto& head : attribute_heads()) {
        const int64_t label = batch.labels[b][column++].item<int64_t>();
        if (label == kIgnore) continue;
        ++counted[head.name];
        correct[head.name] += detections[static_cast<size_t>(b)].attributes.at(head.name) == label;
      }
    }
  }
  for (const auto& [name, n] : counted) validation.accuracy[name] = static_cast<double>(correct[name]) / n;

  // Identity: the same held-out face in two random scenes against two different faces.
  std::vector<double> same, different;
  const int pairs = std::max(16, samples / 4);
  for (int i = 0; i < pairs; ++i) {
    const uint64_t s = seed + kValidationScenes + static_cast<uint64_t>(4 * i);
    Scene a = sample_scene(s), b = sample_scene(s + 1), c = sample_scene(s + 2);
    for (Scene* scene : {&a, &b, &c}) scene->subject = Subject::kFace;
    a.face = b.face = sample_identity(kHeldOutIdentitySeed + s);
    c.face = sample_identity(kHeldOutIdentitySeed + s + 3);
    const std::vector<Detection> d = detect(
        detector, at::stack({render(a, WorldDetectorImpl::kInputSize).image, render(b, WorldDetectorImpl::kInputSize).image,
                             render(c, WorldDetectorImpl::kInputSize).image}));
    same.push_back(identity_distance(d[0], d[1]));
    different.push_back(identity_distance(d[0], d[2]));
  }
  double wins = 0;  // Mann-Whitney: the chance a different pair is farther than a same pair
  for (double s : same)
    for (double d : different) wins += d > s ? 1.0 : d == s ? 0.5 : 0.0;
  validation.identity_auc = wins / (static_cast<double>(same.size()) * different.size());
  return validation;
}

void save_detector(const WorldDetector& detector, const std::string& path) {
  save_safetensors(path, state_dict(*detector), {{"format", "pt"}, {"singleinsert", "world_detector"}});
}

WorldDetector load_detector(const std::string& path) {
  WorldDetector detector;
  load_state_dict(*detector, SafetensorsFile::open(path));
  detector->eval();
  return detector;
}

}  // namespace singleinsert::world
