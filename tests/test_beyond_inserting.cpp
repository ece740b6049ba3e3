// Beyond Inserting's two parts on the committed toy-world model: the attention hook's stages, the
// face-wise attention loss read against maps computed by hand from the layer's queries and keys,
// per-stage tokens that reproduce the single-token model exactly when every pair is equal, and
// gradients that reach only the identity's parameters.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <map>

#include "cli_runner.h"
#include "golden.h"
#include "singleinsert/core/random.h"
#include "singleinsert/models/cross_attention.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/default_model.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/training/attention_loss.h"
#include "singleinsert/training/beyond_inserting.h"
#include "singleinsert/training/image_preprocess.h"
#include "singleinsert/training/kv_tokens.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/world/render.h"
#include "singleinsert/world/scene.h"

namespace singleinsert {
namespace {

const std::string kSource = SINGLEINSERT_SOURCE_DIR;

// The committed world model with its generated tokenizer, loaded fresh for each test (tokens are added).
std::shared_ptr<ModelBundle> world_bundle() { return load_model_bundle(testing::world_model_with_tokenizer()); }

TEST(CrossAttention, SdV15HasFiveStagesMirroredAroundItsBottom) {
  UNetConfig config;  // SD v1.5's blocks, at a width small enough to build
  config.block_out_channels = {32, 32, 32, 32};
  config.num_attention_heads = {1, 1, 1, 1};
  config.cross_attention_dim = 32;
  EXPECT_EQ(cross_attention_stage_count(config), 5);
  EXPECT_EQ(bottom_stage(config), 2);
  UNet2DConditionModelImpl unet(config);
  std::map<std::string, int> stages;
  std::vector<std::string> order;
  for (const auto& layer : cross_attention_layers(unet)) {
    stages[layer.path.substr(0, layer.path.find(".attentions"))] = layer.stage;
    order.push_back(layer.path);
  }
  const std::map<std::string, int> expected = {{"down_blocks.0", 0}, {"down_blocks.1", 1}, {"down_blocks.2", 2},
                                               {"mid_block", 2},     {"up_blocks.1", 2},   {"up_blocks.2", 3},
                                               {"up_blocks.3", 4}};
  EXPECT_EQ(stages, expected);
  ASSERT_EQ(order.size(), 16u);  // 2 per down block, 1 in the middle, 3 per up block
  EXPECT_EQ(order.front(), "down_blocks.0.attentions.0.transformer_blocks.0.attn2");
  EXPECT_EQ(order.back(), "up_blocks.3.attentions.2.transformer_blocks.0.attn2");
}

TEST(CrossAttention, TheWorldModelHasThreeStagesAndAGuardThatRestores) {
  auto bundle = world_bundle();
  EXPECT_EQ(cross_attention_stage_count(bundle->unet->config()), 3);
  std::vector<int> stages;
  for (const auto& layer : cross_attention_layers(*bundle->unet)) stages.push_back(layer.stage);
  EXPECT_EQ(stages, (std::vector<int>{0, 1, 1, 1, 1, 2, 2}));  // down 16, down 8, mid 4, up 8 (x2), up 16 (x2)
  AttentionHook hook;
  {
    AttentionHookGuard guard(*bundle->unet, hook);
    for (const auto& layer : cross_attention_layers(*bundle->unet)) EXPECT_EQ(layer.layer->hook, &hook);
    EXPECT_THROW(AttentionHookGuard(*bundle->unet, hook), Error);  // no silent replacement
  }
  for (const auto& layer : cross_attention_layers(*bundle->unet)) EXPECT_EQ(layer.layer->hook, nullptr);
}

// Keeps every observed layer's queries and keys besides computing the loss.
class RecordingLossHook : public AttentionLossHook {
 public:
  using AttentionLossHook::AttentionLossHook;
  void observe(const std::string& path, AttentionImpl& layer, const at::Tensor& query, const at::Tensor& key) override {
    seen[path] = {query.detach().clone(), key.detach().clone()};
    layers[path] = &layer;
    AttentionLossHook::observe(path, layer, query, key);
  }
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> seen;
  std::map<std::string, AttentionImpl*> layers;
};

// mean over heads of softmax(q k^T / sqrt(d))[..., position], in double with explicit sums.
at::Tensor map_by_hand(const at::Tensor& q, const at::Tensor& k, int64_t position) {
  const at::Tensor scores = at::einsum("bhqd,bhkd->bhqk", {q.to(at::kDouble), k.to(at::kDouble)}) / std::sqrt(double(q.size(3)));
  const at::Tensor shifted = (scores - std::get<0>(scores.max(-1, true))).exp();
  const at::Tensor probs = shifted / shifted.sum(-1, true);
  return probs.select(-1, position).mean(1);  // [B, Lq]
}

TEST(AttentionLoss, ReadsTheSoftmaxOfTheLayersQueriesAndKeys) {
  auto bundle = world_bundle();
  at::NoGradGuard no_grad;
  const at::Tensor ids = tokenize_prompts(bundle->tokenizer, {"a photo of a red face", "a photo of a blue face"});
  const at::Tensor reference_ids = tokenize_prompts(bundle->tokenizer, {"a photo of a face", "a photo of a face"});
  const at::Tensor context = bundle->text_encoder->forward(ids).last_hidden_state;
  const at::Tensor reference = bundle->text_encoder->forward(reference_ids).last_hidden_state;
  // The colour word (5) against the class word (5 in "a photo of a face": BOS a photo of a face).
  const at::Tensor identity_positions = at::tensor({5, 5}, at::kLong), class_positions = at::tensor({5, 5}, at::kLong);
  const auto bottom = attention_loss_layers(*bundle->unet, "bottom");
  EXPECT_EQ(bottom.size(), 4u);  // down 8, mid 4, up 8 (x2)
  RecordingLossHook hook(bottom, reference, identity_positions, class_positions);
  at::Generator generator = make_cpu_generator(3);
  const at::Tensor x = randn_like_torch({2, 4, 16, 16}, generator);
  {
    AttentionHookGuard guard(*bundle->unet, hook);
    bundle->unet->forward(x, at::tensor({500, 300}, at::kLong), context);
  }
  EXPECT_EQ(hook.seen.size(), 7u);  // every cross-attention layer is observed
  ASSERT_EQ(hook.maps().size(), bottom.size());  // the loss reads only the chosen ones
  double total = 0;
  for (const auto& [path, maps] : hook.maps()) {
    ASSERT_TRUE(bottom.count(path)) << path;
    const auto& [q, k] = hook.seen.at(path);
    const at::Tensor trained = map_by_hand(q, k, 5);
    // The reference keys by hand: the reference states through the layer's to_k.
    AttentionImpl& layer = *hook.layers.at(path);
    const at::Tensor reference_keys = at::matmul(reference.to(at::kDouble), layer.to_k->weight.to(at::kDouble).t())
                                          .view({2, reference.size(1), q.size(1), q.size(3)})
                                          .transpose(1, 2);
    const at::Tensor expected_reference = map_by_hand(q, reference_keys, 5);
    EXPECT_TENSOR_NEAR_ABS(maps.first.to(at::kDouble), trained, 1e-6);
    EXPECT_TENSOR_NEAR_ABS(maps.second.to(at::kDouble), expected_reference, 1e-6);
    EXPECT_GT(trained.sum().item<double>(), 0);
    total += (trained - expected_reference).pow(2).sum(1).mean().item<double>();
  }
  const double expected = total / static_cast<double>(bottom.size());
  EXPECT_GT(expected, 0);  // different words: the maps differ
  EXPECT_NEAR(hook.loss().item<double>(), expected, 1e-6 * expected);
}

// The UNet's output with every stage reading (keys[s], values[s]).
at::Tensor hooked_output(ModelBundle& bundle, const at::Tensor& x, const at::Tensor& context,
                         std::vector<at::Tensor> keys, std::vector<at::Tensor> values) {
  PerStageKeyValues hook(*bundle.unet, std::move(keys), std::move(values));
  AttentionHookGuard guard(*bundle.unet, hook);
  return bundle.unet->forward(x, at::tensor({400}, at::kLong), context);
}

TEST(KvTokens, EqualPairsReproduceTheSingleTokenModelExactly) {
  auto bundle = world_bundle();
  at::NoGradGuard no_grad;
  const int64_t first_id = bundle->tokenizer.add_token("<id>");
  bundle->text_encoder->resize_token_embeddings(bundle->tokenizer.vocab_size());
  const at::Tensor ids = tokenize_prompts(bundle->tokenizer, {"a photo of a <id> face"});
  at::Generator generator = make_cpu_generator(5);
  const at::Tensor identity = randn_like_torch({1, 128}, generator) * 0.3;
  const at::Tensor x = randn_like_torch({1, 4, 16, 16}, generator);
  const at::Tensor single = encode_with_vectors(*bundle->text_encoder, ids, first_id, identity);
  const at::Tensor plain = bundle->unet->forward(x, at::tensor({400}, at::kLong), single);

  // A fresh mapper: every token is the identity itself, so every pair is equal and K = V.
  const KvTokenMapper mapper(3, 128, generator);
  const at::Tensor tokens = mapper.forward(identity);
  ASSERT_EQ(tokens.sizes(), (std::vector<int64_t>{6, 128}));
  EXPECT_TRUE(at::equal(tokens, identity.expand({6, 128})));
  std::vector<at::Tensor> keys, values;
  for (int64_t s = 0; s < 3; ++s) {
    keys.push_back(encode_with_vectors(*bundle->text_encoder, ids, first_id, tokens.narrow(0, s, 1)));
    values.push_back(encode_with_vectors(*bundle->text_encoder, ids, first_id, tokens.narrow(0, 3 + s, 1)));
  }
  EXPECT_TRUE(at::equal(hooked_output(*bundle, x, single, keys, values), plain));

  // The hook is live: another key at one stage, or another value, changes the output.
  const at::Tensor other = encode_with_vectors(*bundle->text_encoder, ids, first_id, identity * -1);
  auto changed_keys = keys, changed_values = values;
  changed_keys[1] = other;
  changed_values[2] = other;
  EXPECT_FALSE(at::allclose(hooked_output(*bundle, x, single, changed_keys, values), plain));
  EXPECT_FALSE(at::allclose(hooked_output(*bundle, x, single, keys, changed_values), plain));
}

TEST(BeyondInserting, GradientsReachOnlyTheIdentitysParameters) {
  auto bundle = world_bundle();
  const int64_t first_id = bundle->tokenizer.add_token("<id>");
  bundle->text_encoder->resize_token_embeddings(bundle->tokenizer.vocab_size());
  EmbeddingInversionConfig config;
  config.method = "beyond-inserting";
  config.resolution = 64;
  config.batch = 2;
  config.templates = "world";
  config.subject = "{} <class>";
  config.attn_reference = "";
  config.attn_weight = 0.5;  // large enough that its gradient is not lost beside the noise loss's
  config.validate();
  const at::Tensor template_ids = tokenize_prompts(bundle->tokenizer, inversion_prompts(config, "<id>", "face"));
  AttentionLossPrompts prompts;
  prompts.reference_ids = tokenize_prompts(bundle->tokenizer, inversion_prompts(config, "", "face"));
  const int64_t face = bundle->tokenizer.encode("face").front();
  std::vector<int64_t> identity, classes;
  for (int64_t t = 0; t < template_ids.size(0); ++t) {
    identity.push_back((template_ids[t] == first_id).nonzero()[0][0].item<int64_t>());
    classes.push_back((prompts.reference_ids[t] == face).nonzero()[0][0].item<int64_t>());
  }
  prompts.identity_positions = at::tensor(identity, at::kLong);
  prompts.class_positions = at::tensor(classes, at::kLong);
  const world::Scene scene = world::source_scene(world::sample_identity(world::kHeldOutIdentitySeed + 7), 0);
  const at::Tensor pixels = to_signed_unit_tensor(world::render(scene, 64).image);
  const at::Tensor start = bundle->text_encoder->text_model->embeddings->token_embedding->weight[face].detach().unsqueeze(0);
  BeyondInserting method(base_model(*bundle), config, pixels, template_ids, first_id, start, prompts);
  for (auto& p : method.parameters()) p.set_requires_grad(true);  // as the step loop does
  at::Generator generator = make_cpu_generator(11);
  const LossTerms loss = method.loss(0, generator);
  ASSERT_EQ(loss.terms.size(), 2u);
  EXPECT_EQ(loss.terms[1].first, "attn");
  EXPECT_GT(loss.terms[1].second.item<double>(), 0);
  // The attention term alone reaches the identity and the token module: the identity, the
  // per-stage offsets and the mapper's output projection (W_q, W_k and W_v start behind a zero
  // output projection, so theirs are zero at the first step).
  const auto parameters = method.parameters();
  ASSERT_EQ(parameters.size(), 8u);  // the identity and the mapper's 7 tensors
  loss.terms[1].second.backward({}, /*retain_graph=*/true);
  EXPECT_GT(parameters[0].grad().abs().sum().item<double>(), 0);
  double mapper_gradient = 0;
  for (size_t i = 1; i < parameters.size(); ++i) {
    ASSERT_TRUE(parameters[i].grad().defined());
    mapper_gradient += parameters[i].grad().abs().sum().item<double>();
  }
  EXPECT_GT(mapper_gradient, 0);
  // The whole loss reaches nothing else: no weight of the UNet, text encoder or VAE is a leaf the
  // graph differentiates (none requires a gradient), and none holds one afterwards.
  loss.total.backward();
  int64_t frozen = 0;
  for (auto* module : {static_cast<torch::nn::Module*>(bundle->unet.get()), static_cast<torch::nn::Module*>(bundle->text_encoder.get()),
                       static_cast<torch::nn::Module*>(bundle->vae.get())})
    for (const auto& p : module->parameters()) {
      EXPECT_FALSE(p.requires_grad());
      EXPECT_FALSE(p.grad().defined());
      ++frozen;
    }
  EXPECT_GT(frozen, 100);
}

// generate with a concept's per-stage tokens on the world model's three stages: equal tokens draw
// exactly what the single embedding draws, distinct ones draw something else, and the token
// table holds the concept's own row again afterwards.
TEST(KvTokens, GenerateAppliesEachStagesTokens) {
  auto bundle = world_bundle();
  at::Generator generator = make_cpu_generator(17);
  const at::Tensor identity = randn_like_torch({1, 128}, generator) * 0.3;
  insert_embedding(*bundle, "<id>", identity, "test");
  const int64_t id = bundle->tokenizer.token_id("<id>");
  GenerateOptions options;
  options.prompts = {"a photo of a <id> face wearing a hat"};
  options.steps = 3;
  options.width = options.height = 64;
  const at::Tensor single = generate(*bundle, options).latents;
  bundle->stage_tokens.push_back({id, identity.expand({3, 128}), identity.expand({3, 128})});
  EXPECT_TRUE(at::equal(generate(*bundle, options).latents, single));
  bundle->stage_tokens.back().keys = randn_like_torch({3, 128}, generator) * 0.3;
  bundle->stage_tokens.back().values = randn_like_torch({3, 128}, generator) * 0.3;
  EXPECT_FALSE(at::allclose(generate(*bundle, options).latents, single));
  const auto& table = bundle->text_encoder->text_model->embeddings->token_embedding->weight;
  EXPECT_TRUE(at::equal(table[id], identity[0].to(table.scalar_type())));
}

}  // namespace
}  // namespace singleinsert
