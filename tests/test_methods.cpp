// The methods beside SingleInsert against goldens their reference code made on sd_tiny
// (tests/data/methods, generators in tests/reference): textual inversion as diffusers'
// examples/textual_inversion/textual_inversion.py trains it, and Cross Initialization as
// lyuPang/CrossInitialization's train_cross_init.py does. Each golden records every random draw,
// so the loss, the gradient on the learned rows and the rows after each AdamW step are compared
// step by step.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "golden.h"
#include "singleinsert/core/files.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/training/adamw.h"
#include "singleinsert/formats/lora_layouts.h"
#include "singleinsert/training/cross_init.h"
#include "singleinsert/training/dreambooth_lora.h"
#include "singleinsert/training/image_preprocess.h"
#include "singleinsert/training/textual_inversion.h"

namespace singleinsert {
namespace {

// Float32 through the tiny UNet and text encoder, as the SingleInsert loss golden measured:
// ~1e-6 relative on losses and gradients; AdamW's first steps move each element by about the
// learning rate whatever the gradient, so rows agree to float32 rounding of that move.
constexpr double kLossTolerance = 1e-5;
constexpr double kGradTolerance = 1e-5;
constexpr double kRowTolerance = 1e-5;
// Per LoRA module, as for SingleInsert's LoRA gradients (golden/singleinsert_losses' budget): a
// module's gradient sums over every attention call, and its smallest modules carry 1e-5 of
// rounding relative to their own scale (measured 2.1e-5).
constexpr double kLoraGradTolerance = 1e-4;

std::string methods_data(const std::string& name) {
  return std::string(SINGLEINSERT_SOURCE_DIR) + "/tests/data/methods/" + name;
}

// The reference's latents: the VAE posterior of `pixels` sampled with its recorded draw, scaled.
at::Tensor sampled_latents(ModelBundle& bundle, const at::Tensor& pixels, const at::Tensor& vae_noise) {
  at::NoGradGuard no_grad;
  const VaePosterior posterior = bundle.vae->encode(pixels);
  return (posterior.mean + posterior.std * vae_noise) * static_cast<float>(bundle.vae->config().scaling_factor);
}

struct Golden {
  SafetensorsFile tensors;
  nlohmann::json info;
  std::shared_ptr<ModelBundle> bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  int64_t first_id = 0;

  // The reference adds the placeholder `tokens` in order and grows the table to match.
  Golden(const std::string& name, const std::vector<std::string>& tokens)
      : tensors(SafetensorsFile::open(methods_data(name + ".safetensors"))),
        info(nlohmann::json::parse(read_file(methods_data(name + ".json")))) {
    const at::Tensor ids = tensors.tensor("placeholder_ids");
    EXPECT_EQ(ids.size(0), static_cast<int64_t>(tokens.size()));
    for (size_t k = 0; k < tokens.size(); ++k)
      EXPECT_EQ(bundle->tokenizer.add_token(tokens[k]), ids[static_cast<int64_t>(k)].item<int64_t>()) << tokens[k];
    first_id = ids[0].item<int64_t>();
    bundle->text_encoder->resize_token_embeddings(bundle->tokenizer.vocab_size());
  }

  // Runs the recorded steps from `start` with AdamW at the golden's learning rate; `reg_weight`
  // adds Cross Initialization's pull towards `start`.
  // `prefix` selects a second run's results recorded on the same draws.
  void expect_steps(const at::Tensor& start, double reg_weight, const std::string& prefix = "") {
    auto result = [&](const std::string& name) { return tensors.tensor(prefix + name); };
    const int64_t steps = result("loss").size(0);
    const at::Tensor vectors = start.clone().set_requires_grad(true);
    AdamWOptions adam;
    adam.lr = tensors.tensor("lr").item<double>();
    adam.weight_decay = info.at("argparse_defaults").at("adam_weight_decay").get<double>();
    AdamW optimizer({vectors}, adam);
    const NoiseSchedule schedule(NoiseScheduleConfig::from_json(bundle->scheduler_config));
    for (int64_t s = 0; s < steps; ++s) {
      // The prompts the reference's dataset drew are the templates with the placeholder tokens.
      const at::Tensor ids = tensors.tensor("input_ids")[s];
      const at::Tensor z0 = sampled_latents(*bundle, tensors.tensor("pixel_values")[s], tensors.tensor("vae_noise")[s]);
      const at::Tensor states = encode_with_vectors(*bundle->text_encoder, ids, first_id, vectors);
      const at::Tensor noise_loss = noise_prediction_loss(*bundle->unet, schedule, z0, tensors.tensor("noise")[s],
                                                          tensors.tensor("timesteps")[s], states);
      at::Tensor loss = noise_loss;
      if (reg_weight > 0) {
        const at::Tensor reg = distance_to_start(vectors, start);
        EXPECT_TENSOR_NEAR_REL(reg, result("reg_loss")[s], kLossTolerance);
        EXPECT_TENSOR_NEAR_REL(noise_loss, result("noise_loss")[s], kLossTolerance);
        loss = noise_loss + reg * reg_weight;
      }
      EXPECT_TENSOR_NEAR_REL(loss, result("loss")[s], kLossTolerance);
      loss.backward();
      if (s == 0) EXPECT_TENSOR_NEAR_REL(vectors.grad(), result("grad_step1"), kGradTolerance);
      optimizer.step();
      optimizer.zero_grad();
      EXPECT_TENSOR_NEAR_REL(vectors.detach(), result("embeddings_after")[s], kRowTolerance);
    }
  }
};

// The templates are the reference's, and the prompts it drew are among ours for its tokens.
void expect_prompts(const Golden& golden, const EmbeddingInversionConfig& config, const std::string& tokens) {
  EXPECT_EQ(inversion_templates(config.templates),
            golden.info.at("imagenet_templates_small").get<std::vector<std::string>>());
  const std::vector<std::string> ours = inversion_prompts(config, tokens);
  const auto drawn = golden.info.at("prompts").get<std::vector<std::string>>();
  const at::Tensor ids = golden.tensors.tensor("input_ids");
  ASSERT_EQ(static_cast<int64_t>(drawn.size()), ids.size(0) * ids.size(1));
  for (size_t i = 0; i < drawn.size(); ++i) {
    EXPECT_NE(std::find(ours.begin(), ours.end(), drawn[i]), ours.end()) << drawn[i];
    EXPECT_TRUE(at::equal(tokenize_prompts(golden.bundle->tokenizer, {drawn[i]})[0], ids.view({-1, ids.size(2)})[i]))
        << drawn[i];
  }
}

TEST(TextualInversion, PromptsAreTheScriptsObjectTemplates) {
  const Golden golden("textual_inversion", {"<toy>", "<toy>_1"});
  EmbeddingInversionConfig config;
  config.apply_json(method_preset_json("textual-inversion"), "preset");
  expect_prompts(golden, config, "<toy> <toy>_1");
}

TEST(TextualInversion, StepsMatchTheDiffusersScript) {
  Golden golden("textual_inversion", {"<toy>", "<toy>_1"});
  // Every placeholder row starts as the initializer word's embedding.
  const auto& table = golden.bundle->text_encoder->text_model->embeddings->token_embedding->weight;
  const std::vector<int64_t> init = golden.bundle->tokenizer.encode("toy");
  ASSERT_EQ(init, std::vector<int64_t>{golden.tensors.tensor("initializer_id").item<int64_t>()});
  const at::Tensor start = table[init[0]].detach().unsqueeze(0).repeat({2, 1});
  EXPECT_TRUE(at::equal(start, golden.tensors.tensor("embeddings_before")));
  golden.expect_steps(start, 0.0);
}

// Both datasets resize with PIL's bicubic filter; ours is bit-identical to Pillow 9.4's.
TEST(TextualInversion, ResizesAsPillowsBicubicFilter) {
  const SafetensorsFile golden = SafetensorsFile::open(methods_data("pil_bicubic.safetensors"));
  for (const std::string name : {"toy_77x77", "toy_128x128", "toy_40x40", "toy_23x31", "tiny_64x64"}) {
    const at::Tensor expected = golden.tensor(name);
    const at::Tensor input = golden.tensor(name.substr(0, name.find('_')));
    const at::Tensor resized = pil_resize(input, expected.size(0), expected.size(1), PilFilter::kBicubic);
    EXPECT_TRUE(at::equal(resized, expected)) << name << ": " << (resized.to(at::kInt) - expected.to(at::kInt)).abs().max().item<int>();
  }
}

// The official code names its tokens <toy>_v0, <toy>_v1; only their ids (49408, 49409) matter.
TEST(CrossInit, PromptsAreTheOfficialTemplatesAroundFaceOfPerson) {
  const Golden golden("cross_init", {"<toy>_v0", "<toy>_v1"});
  EmbeddingInversionConfig config;
  config.apply_json(method_preset_json("cross-init"), "preset");
  expect_prompts(golden, config, "<toy>_v0 <toy>_v1");
}

TEST(CrossInit, StartsWhereTheOfficialCodeStarts) {
  const Golden golden("cross_init", {"<toy>_v0", "<toy>_v1"});
  auto& text_encoder = *golden.bundle->text_encoder;
  const auto names = golden.info.at("names").get<std::vector<std::string>>();
  EXPECT_TENSOR_NEAR_REL(cross_init_from_names(text_encoder, golden.bundle->tokenizer, names, 2, "names"),
                         golden.tensors.tensor("init_from_names"), 1e-6);
  EXPECT_TENSOR_NEAR_REL(cross_init_from_words(text_encoder, golden.bundle->tokenizer, "face person", 2),
                         golden.tensors.tensor("init_from_words"), 1e-6);
  EXPECT_THROW(cross_init_from_words(text_encoder, golden.bundle->tokenizer, "face", 2), Error);
  EXPECT_THROW(cross_init_from_names(text_encoder, golden.bundle->tokenizer, {"Cher"}, 2, "names"), Error);
}

TEST(CrossInit, StepsMatchTheOfficialTraining) {
  Golden golden("cross_init", {"<toy>_v0", "<toy>_v1"});
  const at::Tensor start = golden.tensors.tensor("embeddings_before");
  EXPECT_TENSOR_NEAR_REL(start, golden.tensors.tensor("init_from_names"), 0.0);
  golden.expect_steps(start, golden.tensors.tensor("reg_weight").item<double>());
}

TEST(CrossInit, TheRegulariserPullsAsTheOfficialCodeDoes) {
  // The default weight 1e-5 moves nothing float32 can see; the reference ran again with weight 1.
  Golden golden("cross_init", {"<toy>_v0", "<toy>_v1"});
  golden.expect_steps(golden.tensors.tensor("embeddings_before"), 1.0, "reg1.");
}

// The LoRA weights stored under `prefix` (PEFT's names: <model>.<module>.lora_{A,B}.weight).
LoraWeightMap golden_lora(const SafetensorsFile& file, const std::string& prefix, double alpha) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& key : file.keys())
    if (key.rfind(prefix, 0) == 0) tensors[key.substr(prefix.size())] = file.tensor(key);
  LoraWeightMap weights = from_peft_layout(tensors, prefix);
  for (auto& [path, w] : weights) w.alpha = alpha;
  return weights;
}

void expect_lora_near(const LoraWeightMap& actual, const LoraWeightMap& expected, double tolerance, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double worst = 0;
  for (const auto& [path, w] : expected) {
    ASSERT_TRUE(actual.count(path)) << what << ": " << path;
    worst = std::max({worst, testing::max_relative_error(actual.at(path).down, w.down),
                      testing::max_relative_error(actual.at(path).up, w.up)});
  }
  EXPECT_LE(worst, tolerance) << what;
  testing::report_error("max rel error (worst module)", what.c_str(), worst);
}

// Three steps of diffusers' train_dreambooth_lora.py (rank 4 on the UNet and the text encoder,
// prior preservation, batch 1 + 1 class row, AdamW 1e-3, clipping at `max_grad_norm`), checked in
// two halves so that each is held to float32's precision: the losses and gradients from the
// reference's own weights at each step, and clipping and AdamW applied to the reference's own
// gradients. (Run freely, AdamW's first steps divide each gradient by its own magnitude plus 1e-8,
// so elements whose gradient is near 1e-8 turn float32 rounding into differences of a fraction of
// the learning rate; FreeRunningStepsStayWithinAPercentOfTheLearningRate bounds that.)
void expect_dreambooth_steps(const std::string& prefix, double max_grad_norm) {
  const SafetensorsFile golden = SafetensorsFile::open(methods_data("dreambooth_lora.safetensors"));
  auto result = [&](const std::string& name) { return golden.tensor(prefix + name); };
  const auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  const auto targets = dreambooth_lora_targets(*bundle->unet, bundle->text_encoder.get());
  const NoiseSchedule schedule(NoiseScheduleConfig::from_json(bundle->scheduler_config));

  // The optimizer's copy of every weight, updated from the reference's gradients.
  const LoraWeightMap init = golden_lora(golden, "lora_init.", 4.0);
  std::vector<std::pair<std::string, at::Tensor>> shadow;
  for (const auto& [path, w] : init) {
    shadow.emplace_back(path + ".down", w.down.clone().set_requires_grad(true));
    shadow.emplace_back(path + ".up", w.up.clone().set_requires_grad(true));
  }
  std::vector<at::Tensor> shadow_parameters;
  for (const auto& [name, tensor] : shadow) shadow_parameters.push_back(tensor);
  AdamWOptions adam;
  adam.lr = golden.tensor("lr")[0].item<double>();
  AdamW optimizer(shadow_parameters, adam);

  for (int64_t s = 0; s < 3; ++s) {
    const std::string step = std::to_string(s + 1);
    // Losses and gradients at the reference's weights before this step.
    const LoraWeightMap before = s == 0 ? init : golden_lora(golden, prefix + "lora_after_step" + std::to_string(s) + ".", 4.0);
    auto network = LoraNetwork::from_weights("dreambooth", before, targets,
                                             {bundle->unet.ptr(), bundle->text_encoder.ptr()}, "golden");
    EXPECT_EQ(network->size(), 56u);  // 48 UNet projections, 8 text-encoder ones
    for (auto& p : network->parameters()) p.set_requires_grad(true);
    const at::Tensor z0 = sampled_latents(*bundle, golden.tensor("pixel_values")[s], golden.tensor("vae_noise")[s]);
    const at::Tensor states = bundle->text_encoder->forward(golden.tensor("input_ids")[s]).last_hidden_state;
    const DreamBoothLosses losses = dreambooth_loss(*bundle->unet, schedule, z0, golden.tensor("noise")[s],
                                                    golden.tensor("timesteps")[s], states, 1, 1.0);
    EXPECT_TENSOR_NEAR_REL(losses.instance, result("instance_loss")[s], kLossTolerance);
    EXPECT_TENSOR_NEAR_REL(losses.prior, result("prior_loss")[s], kLossTolerance);
    EXPECT_TENSOR_NEAR_REL(losses.total, result("loss")[s], kLossTolerance);
    losses.total.backward();
    const LoraWeightMap reference_gradients = golden_lora(golden, prefix + "grad_step" + step + ".", 4.0);
    expect_lora_near(network->gradients(), reference_gradients, kLoraGradTolerance,
                     prefix + "gradients at step " + step);
    network.reset();  // detaches the adapters

    // Clipping and AdamW on the reference's gradients.
    for (auto& [name, tensor] : shadow) {
      const bool down = name.size() > 5 && name.compare(name.size() - 5, 5, ".down") == 0;
      const auto& w = reference_gradients.at(name.substr(0, name.size() - (down ? 5 : 3)));
      tensor.mutable_grad() = (down ? w.down : w.up).clone();
    }
    const double norm = clip_grad_norm(shadow_parameters, max_grad_norm);
    EXPECT_NEAR(norm, result("total_norm")[s].item<double>(), kGradTolerance * norm);
    optimizer.step();
    optimizer.zero_grad();
    LoraWeightMap updated;
    for (const auto& [name, tensor] : shadow) {
      const bool down = name.compare(name.size() - 5, 5, ".down") == 0;
      (down ? updated[name.substr(0, name.size() - 5)].down : updated[name.substr(0, name.size() - 3)].up) = tensor.detach();
    }
    expect_lora_near(updated, golden_lora(golden, prefix + "lora_after_step" + step + ".", 4.0), kRowTolerance,
                     prefix + "weights after step " + step);
  }
}

TEST(DreamBoothLora, StepsMatchTheDiffusersScript) { expect_dreambooth_steps("", 1.0); }

TEST(DreamBoothLora, FreeRunningStepsStayWithinAPercentOfTheLearningRate) {
  const SafetensorsFile golden = SafetensorsFile::open(methods_data("dreambooth_lora.safetensors"));
  const auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  const auto network = LoraNetwork::from_weights("dreambooth", golden_lora(golden, "lora_init.", 4.0),
                                                 dreambooth_lora_targets(*bundle->unet, bundle->text_encoder.get()),
                                                 {bundle->unet.ptr(), bundle->text_encoder.ptr()}, "golden");
  std::vector<at::Tensor> parameters = network->parameters();
  for (auto& p : parameters) p.set_requires_grad(true);
  AdamWOptions adam;
  adam.lr = golden.tensor("lr")[0].item<double>();
  AdamW optimizer(parameters, adam);
  const NoiseSchedule schedule(NoiseScheduleConfig::from_json(bundle->scheduler_config));
  for (int64_t s = 0; s < 3; ++s) {
    const at::Tensor z0 = sampled_latents(*bundle, golden.tensor("pixel_values")[s], golden.tensor("vae_noise")[s]);
    const at::Tensor states = bundle->text_encoder->forward(golden.tensor("input_ids")[s]).last_hidden_state;
    dreambooth_loss(*bundle->unet, schedule, z0, golden.tensor("noise")[s], golden.tensor("timesteps")[s], states, 1, 1.0)
        .total.backward();
    clip_grad_norm(parameters, 1.0);
    optimizer.step();
    optimizer.zero_grad();
    double worst = 0;
    for (const auto& [path, w] : golden_lora(golden, "lora_after_step" + std::to_string(s + 1) + ".", 4.0)) {
      worst = std::max({worst, testing::max_abs_error(network->weights().at(path).down, w.down),
                        testing::max_abs_error(network->weights().at(path).up, w.up)});
    }
    EXPECT_LE(worst, 0.01 * adam.lr) << "step " << s + 1;
    testing::report_error("max abs error / lr", "free-running weights", worst / adam.lr);
  }
}

TEST(DreamBoothLora, ClippedStepsMatchTheDiffusersScript) {
  // max_grad_norm 1 never clips here (the norm is ~0.07); the reference ran again at 0.02.
  expect_dreambooth_steps("clip.", 0.02);
}

}  // namespace
}  // namespace singleinsert
