// The ViT image encoder against transformers' CLIPVisionModelWithProjection (golden/clip_vision_tiny),
// and the full ViT-B/32 key layout.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "golden.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/models/clip_vision_model.h"

namespace singleinsert {
namespace {

constexpr double kFp32Tolerance = 1e-5;
constexpr double kFp64Tolerance = 1e-12;

ClipVisionModel load_tiny() {
  ClipVisionModel model(ClipVisionConfig::from_json(JsonConfig::load(testing::golden_path("clip_vision_tiny/config.json"))));
  load_state_dict(*model, testing::golden_file("clip_vision_tiny/model.safetensors"),
                  {{"vision_model.embeddings.position_ids"}});
  return model;
}

TEST(ClipVisionModel, MatchesTransformers) {
  ClipVisionModel model = load_tiny();
  const SafetensorsFile io = testing::golden_file("clip_vision_tiny/io.safetensors");
  at::NoGradGuard no_grad;
  const ClipVisionOutput out = model->forward(io.tensor("pixel_values"), /*output_hidden_states=*/true);
  EXPECT_TENSOR_NEAR_REL(out.last_hidden_state, io.tensor("last_hidden_state"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(out.pooler_output, io.tensor("pooler_output"), kFp32Tolerance);
  EXPECT_TENSOR_NEAR_REL(out.image_embeds, io.tensor("image_embeds"), kFp32Tolerance);
  for (int i = 0; i < 3; ++i)
    EXPECT_TENSOR_NEAR_REL(out.hidden_states[i], io.tensor("hidden_states." + std::to_string(i)), kFp32Tolerance);

  model->to(at::kDouble);
  const ClipVisionOutput f64 = model->forward(io.tensor("pixel_values").to(at::kDouble));
  EXPECT_TENSOR_NEAR_REL(f64.last_hidden_state, io.tensor("last_hidden_state_f64"), kFp64Tolerance);
  EXPECT_TENSOR_NEAR_REL(f64.image_embeds, io.tensor("image_embeds_f64"), kFp64Tolerance);
}

TEST(ClipVisionModel, ViTB32WithWordProjectionHasTransformersLayout) {
  ClipVisionConfig config = ClipVisionConfig::from_json(
      JsonConfig::parse(nlohmann::json::parse(read_file(testing::golden_path("configs_full/clip_vit_base_patch32/config.json")))
                            .at("vision_config")
                            .dump(),
                        "vision_config"));
  const ClipVisionModel model(config);
  testing::expect_reference_layout(*model, "configs_full/clip_vit_base_patch32_vision_with_projection_state_dict_shapes.json");
}

TEST(ClipVisionModel, OpenAiInitialisationIsSeededAndScaled) {
  ClipVisionConfig config;
  config.encoder.hidden_size = 64;
  config.encoder.intermediate_size = 128;
  config.encoder.num_hidden_layers = 2;
  config.encoder.num_attention_heads = 4;
  config.image_size = 64;
  config.projection_dim = 64;
  ClipVisionModel a(config), b(config);
  at::Generator ga = make_cpu_generator(3), gb = make_cpu_generator(3);
  a->init_like_openai(ga);
  b->init_like_openai(gb);
  for (const auto& [name, tensor] : module_tensors(*a)) EXPECT_TRUE(at::equal(tensor, module_tensors(*b).at(name))) << name;
  const double std = a->visual_projection->weight.std().item<double>();
  EXPECT_NEAR(std, 1.0 / 8.0, 0.01);
  EXPECT_EQ(a->vision_model->encoder->layers[0]->self_attn->q_proj->bias.abs().max().item<double>(), 0.0);
}

}  // namespace
}  // namespace singleinsert
