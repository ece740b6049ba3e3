#include "singleinsert/world/clip_training.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <map>
#include <optional>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/training/adamw.h"
#include "singleinsert/world/render.h"
#include "singleinsert/world/scene.h"

namespace singleinsert::world {
namespace {

// Captions are drawn from their own seed range, apart from the scenes'.
constexpr uint64_t kCaptionSeeds = uint64_t{11} << 50;

}  // namespace

ClipModel train_world_clip(const ClipTrainingOptions& options, const ClipTokenizer& tokenizer,
                           const ProgressCallback& progress, AutoencoderKL* vae) {
  if (options.steps < 1 || options.batch_size < 2) throw Error("train-clip: needs steps >= 1 and batch size >= 2");
  if (static_cast<uint64_t>(options.steps) * static_cast<uint64_t>(options.batch_size) >= kHeldOutIdentitySeed)
    throw Error("train-clip: that many scenes would reach the held-out identities");
  ClipEncoderConfig encoder;
  encoder.hidden_size = options.width;
  encoder.intermediate_size = 4 * options.width;
  encoder.num_hidden_layers = options.layers;
  encoder.num_attention_heads = options.heads;
  ClipTextConfig text;
  text.encoder = encoder;
  text.vocab_size = tokenizer.vocab_size();
  text.max_position_embeddings = tokenizer.max_length();
  text.eos_token_id = 2;  // pooled at the highest id: the tokenizer's EOS
  ClipVisionConfig vision;
  vision.encoder = encoder;
  vision.image_size = options.image_size;
  vision.patch_size = options.patch_size;
  vision.projection_dim = options.width;
  at::Generator generator = make_cpu_generator(options.seed);
  ClipModel model = ClipModel::create(text, vision, generator);
  model.train(true);
  AdamW optimizer(model.parameters(), {options.lr, 0.9, 0.98, 1e-6, 0.1});
  int first_step = 0;
  if (options.resume) {
    const SafetensorsFile file = SafetensorsFile::open(options.checkpoint);
    std::map<std::string, at::Tensor> weights, moments;
    for (const std::string& key : file.keys()) {
      if (key.rfind("model.", 0) == 0) weights[key.substr(6)] = file.tensor(key);
      else if (key.rfind("adamw.", 0) == 0) moments[key.substr(6)] = file.tensor(key);
    }
    model.load_weights(weights, options.checkpoint);
    optimizer.load_state(moments, options.checkpoint);
    const auto meta = file.metadata().find("step");
    if (meta == file.metadata().end()) throw Error(options.checkpoint + ": a checkpoint without its step");
    first_step = std::stoi(meta->second);
    if (first_step < 0 || first_step > options.steps)
      throw Error(fmt::format("{}: step {} is beyond --steps {}", options.checkpoint, first_step, options.steps));
    // The generator's draws of the steps already taken, so that the rest are the same.
    if (vae)
      for (int step = 0; step < first_step; ++step) at::rand({1}, generator);
  }
  const auto save_checkpoint = [&](int steps_done) {
    NamedTensors tensors;
    for (auto& [key, value] : model.weights()) tensors.emplace_back("model." + key, value);
    for (auto& [key, value] : optimizer.state()) tensors.emplace_back("adamw." + key, value);
    const std::string bytes = safetensors_bytes(tensors, {{"step", std::to_string(steps_done)}});
    write_file_atomic(options.checkpoint, bytes);
  };
  const at::Tensor targets = at::arange(options.batch_size, at::kLong);
  // The processor's normalisation, undone and redone around the VAE.
  const at::Tensor mean =
      at::tensor(std::vector<float>(model.processor().mean.begin(), model.processor().mean.end())).view({1, 3, 1, 1});
  const at::Tensor std =
      at::tensor(std::vector<float>(model.processor().std.begin(), model.processor().std.end())).view({1, 3, 1, 1});
  const auto start = std::chrono::steady_clock::now();
  for (int step = first_step; step < options.steps; ++step) {
    if (!options.checkpoint.empty() && interrupt_requested()) {
      save_checkpoint(step);
      throw Error(fmt::format("interrupted at step {}; --resume continues from {}", step, options.checkpoint));
    }
    std::vector<at::Tensor> images, ids;
    int64_t longest = 1;
    for (int i = 0; i < options.batch_size; ++i) {
      const uint64_t seed = static_cast<uint64_t>(step) * static_cast<uint64_t>(options.batch_size) +
                            static_cast<uint64_t>(i);
      const Scene scene = sample_scene(seed);
      images.push_back(model.processor()(render(scene, static_cast<int>(options.image_size)).image));
      const std::string text = caption(scene, training_caption_parts(scene, kCaptionSeeds + seed));
      const TokenizedPrompt tokens = tokenizer.tokenize(text);
      longest = std::max<int64_t>(longest, std::min<int64_t>(tokens.untruncated_length, tokenizer.max_length()));
      ids.push_back(at::tensor(tokens.ids, at::kLong));
    }
    at::Tensor pixels = at::cat(images, 0);  // [B, 3, S, S], CLIP-normalised
    if (vae && at::rand({1}, generator).item<double>() < options.vae_share) {
      // What generations look like: the renders through the world model's VAE.
      at::NoGradGuard no_grad;
      const at::Tensor unit = pixels * std + mean;  // [0, 1]
      std::optional<compat::AutocastGuard> autocast;
      if (options.bf16) autocast.emplace(c10::DeviceType::CPU, at::kBFloat16);
      const at::Tensor decoded = (*vae)->decode((*vae)->encode(unit * 2 - 1).mean).to(at::kFloat).clamp(-1, 1);
      pixels = ((decoded + 1) / 2 * 255).round() / 255;  // back through uint8, as a saved image is
      pixels = (pixels - mean) / std;
    }
    // Cosine decay to a tenth of the rate, after 5% warm-up.
    const double progress_share = static_cast<double>(step) / options.steps;
    const double warm = std::min(1.0, progress_share / 0.05);
    optimizer.set_lr(options.lr * warm * (0.1 + 0.45 * (1 + std::cos(M_PI * progress_share))));
    at::Tensor loss;
    {
      std::optional<compat::AutocastGuard> autocast;
      if (options.bf16) autocast.emplace(c10::DeviceType::CPU, at::kBFloat16);
      at::Tensor image_features = model.image_features(pixels).to(at::kFloat);
      // Only up to the batch's longest caption: with causal attention the padding after EOS never
      // reaches the EOS the features are pooled at, so the features are the same.
      at::Tensor text_features = model.text_features(at::stack(ids).slice(1, 0, longest)).to(at::kFloat);
      image_features = image_features / image_features.norm(2, -1, true);
      text_features = text_features / text_features.norm(2, -1, true);
      const at::Tensor logits = at::matmul(image_features, text_features.t()) * model.logit_scale_parameter().exp();
      loss = (at::cross_entropy_loss(logits, targets) + at::cross_entropy_loss(logits.t(), targets)) / 2;
    }
    loss.backward();
    optimizer.step();
    optimizer.zero_grad();
    {
      at::NoGradGuard no_grad;
      model.logit_scale_parameter().clamp_(0.0, std::log(100.0));  // CLIP's cap
    }
    if (!options.checkpoint.empty() && options.checkpoint_every > 0 && (step + 1) % options.checkpoint_every == 0 &&
        step + 1 < options.steps)
      save_checkpoint(step + 1);
    if (progress) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      progress({"clip", step + 1, options.steps, elapsed,
                {{"loss", loss.item<double>()}, {"scale", std::exp(model.logit_scale())}}});
    }
  }
  model.train(false);
  return model;
}

std::map<std::string, int64_t> attribute_map(const Scene& scene) {
  const std::vector<int64_t> labels = attribute_labels(scene);
  std::map<std::string, int64_t> out;
  for (size_t h = 0; h < labels.size(); ++h) out[attribute_heads()[h].name] = labels[h];
  return out;
}

bool edit_shown(const std::map<std::string, int64_t>& attributes, const std::string& edit) {
  // Two scenes that differ in everything an edit can set: a head the edit changes in either
  // is one it sets, to the value it gives the first.
  Scene plain;
  Scene busy;
  busy.sunglasses = busy.hat = busy.earrings = busy.cup = true;
  busy.expression = 1;
  busy.view = 1;
  busy.background = 3;
  busy.pattern = 1;
  busy.position = 0;
  busy.size = 2;
  Scene plain_edited = plain, busy_edited = busy;
  apply_edit(plain_edited, edit);
  apply_edit(busy_edited, edit);
  const std::vector<int64_t> a = attribute_labels(plain), a_edited = attribute_labels(plain_edited);
  const std::vector<int64_t> b = attribute_labels(busy), b_edited = attribute_labels(busy_edited);
  bool seen = true;
  for (size_t h = 0; h < a.size(); ++h)
    if (a[h] != a_edited[h] || b[h] != b_edited[h])
      seen = seen && attributes.at(attribute_heads()[h].name) == a_edited[h];
  return seen;
}

}  // namespace singleinsert::world
