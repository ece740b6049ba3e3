#include "singleinsert/world/detector.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "singleinsert/core/error.h"
#include "singleinsert/core/torch_compat.h"
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
  at::Tensor images, labels, identity, has_face, cup_identity, has_cup;
};
Batch render_batch(uint64_t first, int count, bool validation) {
  std::vector<at::Tensor> images, labels, identities, faces, cups, has_cups;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = first + static_cast<uint64_t>(i);
    Scene scene = sample_scene(validation ? kValidationScenes + seed : seed);
    if (validation) {
      scene.face = sample_identity(kHeldOutIdentitySeed + seed);
      scene.person = -1;
      const int colour = scene.cup_identity.colour;
      scene.cup_identity = sample_cup_identity(kHeldOutIdentitySeed + seed);
      scene.cup_identity.colour = colour;  // sample_scene kept it apart from the background's
    }
    images.push_back(render(scene, WorldDetectorImpl::kInputSize).image);
    labels.push_back(at::tensor(attribute_labels(scene), at::kLong));
    identities.push_back(identity_target(scene.face));
    faces.push_back(at::scalar_tensor(scene.subject == Subject::kFace ? 1.0 : 0.0));
    cups.push_back(cup_identity_target(scene.cup_identity));
    has_cups.push_back(at::scalar_tensor(scene.subject == Subject::kCup || scene.cup ? 1.0 : 0.0));
  }
  return {to_input(at::stack(images)), at::stack(labels), at::stack(identities), at::stack(faces), at::stack(cups),
          at::stack(has_cups)};
}

// Blur (Gaussian, sigma up to 1.2 px) and noise (up to 0.08), as generated images have.
at::Tensor augment(at::Tensor images, at::Generator& generator) {
  const double sigma = at::rand({1}, generator).item<double>() * 1.2;
  if (sigma > 0.2) {
    const at::Tensor taps = at::arange(-2, 3, at::kFloat);
    at::Tensor kernel = (-(taps * taps) / (2 * sigma * sigma)).exp();
    kernel = kernel / kernel.sum();
    const at::Tensor kernel2d = (kernel.view({5, 1}) * kernel.view({1, 5})).expand({3, 1, 5, 5}).contiguous();
    images = at::conv2d(at::replication_pad2d(images, {2, 2, 2, 2}), kernel2d, at::Tensor(), at::IntArrayRef{1},
                        at::IntArrayRef{0}, at::IntArrayRef{1}, 3);
  }
  const double noise = at::rand({1}, generator).item<double>() * 0.08;
  return images + noise * at::randn(images.sizes(), generator);
}

// The images as `vae` encodes and decodes them (the posterior mean; the VAE is convolutional,
// so it reads the detector's 64 px directly).
at::Tensor through_vae(AutoencoderKL& vae, const at::Tensor& images) {
  at::NoGradGuard no_grad;
  return vae->decode(vae->encode(images).mean).clamp(-1.0, 1.0);
}

}  // namespace

const std::vector<AttributeHead>& attribute_heads() {
  static const std::vector<AttributeHead> heads = {
      {"subject", 2},   {"sunglasses", 2},
      {"hat", 2},       {"earrings", 2},
      {"cup", 2},       {"expression", static_cast<int>(kExpressions.size())},
      {"view", static_cast<int>(kViews.size())},
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
          face_only(scene.view),
          scene.background,
          scene.pattern,
          scene.position,
          scene.size};
}

namespace {
template <typename Identity>
void push_hidden(std::vector<float>& values, const Identity& identity,
                 const std::vector<HiddenParameter<Identity>>& parameters) {
  for (const auto& hidden : parameters)
    values.push_back(static_cast<float>((identity.*hidden.field - hidden.lo) / (hidden.hi - hidden.lo)));
}
void push_one_hot(std::vector<float>& values, int index, size_t classes) {
  for (size_t i = 0; i < classes; ++i) values.push_back(static_cast<size_t>(index) == i ? 1.f : 0.f);
}
}  // namespace

at::Tensor identity_target(const FaceIdentity& face) {
  std::vector<float> values;
  push_hidden(values, face, kFaceHidden);
  push_one_hot(values, face.skin, kSkinTones.size());
  push_one_hot(values, face.hair_colour, kHairColours.size());
  push_one_hot(values, face.hair_style, kHairStyles.size());
  push_one_hot(values, face.eye_colour, kEyeColours.size());
  values.push_back(face.freckles ? 1.f : 0.f);
  return at::tensor(values, at::kFloat);
}

at::Tensor cup_identity_target(const CupIdentity& cup) {
  std::vector<float> values;
  push_hidden(values, cup, kCupHidden);
  push_one_hot(values, cup.colour, kObjectColours.size());
  return at::tensor(values, at::kFloat);
}

WorldDetectorImpl::WorldDetectorImpl() {
  convs.attach(*this, "convs");
  const int64_t widths[] = {3, 32, 64, 128, 192, 256};
  for (int i = 0; i < 5; ++i) convs.push_back(Conv2d(widths[i], widths[i + 1], 3, i == 0 ? 1 : 2, 1));
  hidden = register_module("hidden", Linear(256 * 4 * 4, 384));
  heads = register_module("heads", Linear(384, total_classes() + kFaceIdentityWidth + kCupIdentityWidth));
}

at::Tensor WorldDetectorImpl::forward(const at::Tensor& images) {
  at::Tensor x = images;
  for (auto& conv : convs) x = at::silu(conv->forward(x));
  return heads->forward(at::silu(hidden->forward(x.flatten(1))));
}

std::vector<Detection> detect(WorldDetector& detector, const at::Tensor& images) {
  at::NoGradGuard no_grad;
  const at::Tensor out = detector->forward(to_input(images)).cpu();
  std::vector<Detection> detections(static_cast<size_t>(images.size(0)));
  int64_t offset = 0;
  for (const auto& head : attribute_heads()) {
    const at::Tensor predicted = out.slice(1, offset, offset + head.classes).argmax(1);
    const auto classes = predicted.accessor<int64_t, 1>();
    for (size_t b = 0; b < detections.size(); ++b) detections[b].attributes[head.name] = classes[static_cast<int64_t>(b)];
    offset += head.classes;
  }
  for (size_t b = 0; b < detections.size(); ++b) {
    detections[b].identity = out[static_cast<int64_t>(b)].slice(0, offset, offset + kFaceIdentityWidth).clone();
    detections[b].cup_identity = out[static_cast<int64_t>(b)].slice(0, offset + kFaceIdentityWidth).clone();
  }
  return detections;
}

double identity_distance(const Detection& a, const Detection& b, IdentityPart part) {
  const at::Tensor difference = a.identity - b.identity;
  switch (part) {
    case IdentityPart::kNamed: return difference.slice(0, kFaceHiddenWidth).norm().item<double>();
    case IdentityPart::kHidden: return difference.slice(0, 0, kFaceHiddenWidth).norm().item<double>();
    default: return difference.norm().item<double>();
  }
}

FaceIdentity named_attributes(const at::Tensor& identity) {
  const at::Tensor named = identity.to(at::kFloat).slice(0, kFaceHiddenWidth);
  int64_t offset = 0;
  auto group = [&](size_t width) {
    const auto size = static_cast<int64_t>(width);
    const int index = static_cast<int>(named.slice(0, offset, offset + size).argmax().item<int64_t>());
    offset += size;
    return index;
  };
  FaceIdentity face;
  face.skin = group(kSkinTones.size());
  face.hair_colour = group(kHairColours.size());
  face.hair_style = group(kHairStyles.size());
  face.eye_colour = group(kEyeColours.size());
  face.freckles = named[offset].item<float>() > 0.5f;
  return face;
}

double cup_identity_distance(const Detection& a, const Detection& b) {
  return (a.cup_identity - b.cup_identity).norm().item<double>();
}

WorldDetector train_detector(const DetectorTrainingOptions& options, const ProgressCallback& progress,
                             AutoencoderKL* vae) {
  at::Generator generator = make_cpu_generator(options.seed);
  WorldDetector detector;
  init_parameters(*detector, generator);
  if (!options.init.empty()) detector = load_detector(options.init);
  detector->train();
  AdamW optimizer(detector->parameters(), {options.lr, 0.9, 0.999, 1e-8, 0.0});
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < options.steps; ++step) {
    Batch batch = render_batch(options.first_scene + static_cast<uint64_t>(step) * options.batch_size,
                               options.batch_size, false);
    if (vae && at::rand({1}, generator).item<double>() < options.vae_share) {
      std::optional<compat::AutocastGuard> autocast;
      if (options.bf16) autocast.emplace(c10::DeviceType::CPU, at::kBFloat16);
      batch.images = through_vae(*vae, batch.images).to(at::kFloat);
    }
    batch.images = augment(batch.images, generator);
    // Cosine decay to a tenth of the rate over the run.
    optimizer.set_lr(options.lr * (0.1 + 0.45 * (1 + std::cos(M_PI * step / std::max(1, options.steps)))));
    at::Tensor out;
    {
      std::optional<compat::AutocastGuard> autocast;  // bf16 convolutions: about twice as fast on the CPU
      if (options.bf16) autocast.emplace(c10::DeviceType::CPU, at::kBFloat16);
      out = detector->forward(batch.images).to(at::kFloat);
    }
    at::Tensor loss = at::zeros({}, at::kFloat);
    int64_t offset = 0, column = 0;
    for (const auto& head : attribute_heads()) {
      loss = loss + at::cross_entropy_loss(out.slice(1, offset, offset + head.classes), batch.labels.select(1, column),
                                           {}, at::Reduction::Mean, kIgnore);
      offset += head.classes;
      ++column;
    }
    auto masked_mean = [](const at::Tensor& error, const at::Tensor& mask) {
      return (error * mask).sum() / mask.sum().clamp_min(1.0);
    };
    const at::Tensor face_error = (out.slice(1, offset, offset + kFaceIdentityWidth) - batch.identity).square().mean(1);
    const at::Tensor cup_error = (out.slice(1, offset + kFaceIdentityWidth) - batch.cup_identity).square().mean(1);
    loss = loss + 10.0 * masked_mean(face_error, batch.has_face) + 10.0 * masked_mean(cup_error, batch.has_cup);
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
  std::map<std::string, int> correct, counted;
  for (int first = 0; first < samples; first += 64) {
    const int count = std::min(64, samples - first);
    const Batch batch = render_batch(seed + static_cast<uint64_t>(first), count, true);
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

  // The same held-out face (or cup) in two random scenes, against two different ones; faces
  // in every view, cups as the subject or beside a face.
  auto auc = [](const std::vector<double>& same, const std::vector<double>& different) {
    double wins = 0;  // Mann-Whitney: the chance a different pair is farther than a same pair
    for (double s : same)
      for (double d : different) wins += d > s ? 1.0 : d == s ? 0.5 : 0.0;
    return wins / (static_cast<double>(same.size()) * different.size());
  };
  std::vector<double> same, different, same_cup, different_cup;
  const int pairs = std::max(16, samples / 4);
  for (int i = 0; i < pairs; ++i) {
    const uint64_t s = seed + kValidationScenes + static_cast<uint64_t>(4 * i);
    Scene a = sample_scene(s), b = sample_scene(s + 1), c = sample_scene(s + 2);
    for (Scene* scene : {&a, &b, &c}) scene->subject = Subject::kFace, scene->person = -1;
    a.face = b.face = sample_identity(kHeldOutIdentitySeed + s);
    c.face = sample_identity(kHeldOutIdentitySeed + s + 3);
    // The cups: a as the subject, b and c beside a face.
    a.subject = i % 2 == 0 ? Subject::kFace : Subject::kCup;
    b.cup = c.cup = true;
    a.cup_identity = b.cup_identity = sample_cup_identity(kHeldOutIdentitySeed + s);
    c.cup_identity = sample_cup_identity(kHeldOutIdentitySeed + s + 3);
    for (Scene* scene : {&a, &b, &c})
      if (kObjectColours[scene->cup_identity.colour] == kBackgroundColours[scene->background])
        scene->background = (scene->background + 1) % static_cast<int>(kBackgroundColours.size());
    const std::vector<Detection> d = detect(
        detector, at::stack({render(a, WorldDetectorImpl::kInputSize).image, render(b, WorldDetectorImpl::kInputSize).image,
                             render(c, WorldDetectorImpl::kInputSize).image}));
    if (a.subject == Subject::kFace) {
      same.push_back(identity_distance(d[0], d[1]));
      different.push_back(identity_distance(d[0], d[2]));
    } else {
      same_cup.push_back(cup_identity_distance(d[0], d[1]));
      different_cup.push_back(cup_identity_distance(d[0], d[2]));
    }
  }
  validation.identity_auc = auc(same, different);
  validation.cup_identity_auc = auc(same_cup, different_cup);
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
