// CLIP text encoder against transformers' CLIPTextModel (golden/clip_text_tiny): outputs with
// and without padding mask, every hidden state, the pooled output, and the same in float64.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "golden.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/models/clip_text_model.h"

namespace singleinsert {
namespace {

// float32 vs the float32 reference: differences are summation-order rounding (~1e-7 of scale).
const double kFp32Tolerance = testing::device_tolerance(1e-5);
// float64 vs the float64 reference: the same math in double precision agrees to ~1e-15.
constexpr double kFp64Tolerance = 1e-12;

ClipTextModel load_tiny() {
  const auto config = ClipTextConfig::from_json(JsonConfig::load(testing::golden_path("clip_text_tiny/config.json")));
  EXPECT_EQ(config, ClipTextConfig::tiny());
  ClipTextModel model(config);
  load_state_dict(*model, testing::golden_file("clip_text_tiny/model.safetensors"),
                  {{"text_model.embeddings.position_ids"}});
  model->eval();
  model->to(testing::test_device());
  return model;
}

TEST(ClipTextModel, MatchesTransformers) {
  ClipTextModel model = load_tiny();
  const SafetensorsFile io = testing::golden_file("clip_text_tiny/io.safetensors");
  at::NoGradGuard no_grad;
  const auto device = testing::test_device();
  const ClipTextOutput out = model->forward(io.tensor("input_ids").to(device), c10::nullopt, /*output_hidden_states=*/true);
  EXPECT_TENSOR_NEAR_REL(out.last_hidden_state, io.tensor("last_hidden_state"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(out.pooler_output, io.tensor("pooler_output"), kFp32Tolerance);
  ASSERT_EQ(out.hidden_states.size(), 3u);
  for (int i = 0; i < 3; ++i)
    EXPECT_TENSOR_NEAR_REL(out.hidden_states[i], io.tensor("hidden_states." + std::to_string(i)), kFp32Tolerance);

  const ClipTextOutput masked = model->forward(io.tensor("input_ids").to(device), io.tensor("attention_mask").to(device));
  EXPECT_TENSOR_NEAR_REL(masked.last_hidden_state, io.tensor("last_hidden_state_with_mask"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(masked.pooler_output, io.tensor("pooler_output_with_mask"), kFp32Tolerance);
}

TEST(ClipTextModel, MatchesTransformersInFloat64) {
  ClipTextModel model = load_tiny();
  model->to(at::kDouble);
  const SafetensorsFile io = testing::golden_file("clip_text_tiny/io.safetensors");
  at::NoGradGuard no_grad;
  const ClipTextOutput out = model->forward(io.tensor("input_ids").to(testing::test_device()));
  EXPECT_TENSOR_NEAR_REL(out.last_hidden_state, io.tensor("last_hidden_state_f64"), kFp64Tolerance);
  EXPECT_TENSOR_NEAR_REL(out.pooler_output, io.tensor("pooler_output_f64"), kFp64Tolerance);
}

TEST(ClipTextModel, ReplacingAnEmbeddingChangesOnlyLaterPositions) {
  ClipTextModel model = load_tiny();
  const at::Tensor ids = testing::golden_file("clip_text_tiny/io.safetensors").tensor("input_ids").to(testing::test_device());
  at::NoGradGuard no_grad;
  const at::Tensor base = model->forward(ids).last_hidden_state;
  at::Tensor embeds = model->token_embeddings(ids);
  embeds.select(1, 1).fill_(0.5);  // the token right after BOS
  const at::Tensor edited = model->forward_embeds(embeds, ids).last_hidden_state;
  EXPECT_TRUE(at::allclose(edited.select(1, 0), base.select(1, 0)));  // causal: BOS unaffected
  EXPECT_GT((edited.select(1, 1) - base.select(1, 1)).abs().max().item<double>(), 1e-3);
}

TEST(ClipTextModel, StrictLoadingNamesTheProblem) {
  ClipTextConfig config = ClipTextConfig::tiny();
  config.encoder.intermediate_size = 36;  // fc1 is [37, 32] in the file
  ClipTextModel model(config);
  try {
    load_state_dict(*model, testing::golden_file("clip_text_tiny/model.safetensors"),
                    {{"text_model.embeddings.position_ids"}});
    FAIL() << "loaded mismatched weights";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("text_model.encoder.layers.0.mlp.fc1.bias"), std::string::npos) << message;
    EXPECT_NE(message.find("[37]"), std::string::npos) << message;
    EXPECT_NE(message.find("[36]"), std::string::npos) << message;
  }
  ClipTextConfig deeper = ClipTextConfig::tiny();
  deeper.encoder.num_hidden_layers = 3;
  ClipTextModel too_deep(deeper);
  EXPECT_THROW(load_state_dict(*too_deep, testing::golden_file("clip_text_tiny/model.safetensors"),
                               {{"text_model.embeddings.position_ids"}}),
               Error);
}

TEST(ClipTextModel, FullSd15ConfigHasTransformersKeysAndShapes) {
  const ClipTextModel model(
      ClipTextConfig::from_json(JsonConfig::load(testing::golden_path("configs_full/sd15/text_encoder/config.json"))));
  testing::expect_reference_layout(*model, "configs_full/sd15_text_encoder_state_dict_shapes.json");
}

}  // namespace
}  // namespace singleinsert
