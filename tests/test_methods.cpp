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
#include "singleinsert/training/cross_init.h"
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

std::string methods_data(const std::string& name) {
  return std::string(SINGLEINSERT_SOURCE_DIR) + "/tests/data/methods/" + name;
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
    const float scaling = static_cast<float>(bundle->vae->config().scaling_factor);
    for (int64_t s = 0; s < steps; ++s) {
      // The prompts the reference's dataset drew are the templates with the placeholder tokens.
      const at::Tensor ids = tensors.tensor("input_ids")[s];
      const VaePosterior posterior = [&] {
        at::NoGradGuard no_grad;
        return bundle->vae->encode(tensors.tensor("pixel_values")[s]);
      }();
      const at::Tensor z0 = (posterior.mean + posterior.std * tensors.tensor("vae_noise")[s]) * scaling;
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

}  // namespace
}  // namespace singleinsert
