// Interoperability: the LDM single-file key tables (checked against diffusers' published
// conversion table), single files that generate exactly what their diffusers folder does, the
// golden kohya LoRA reproducing diffusers' UNet, text-encoder and pipeline outputs at scales 1
// and 0.5, embedding files, and the bad files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "golden.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/formats/embeddings.h"
#include "singleinsert/formats/ldm_checkpoint.h"
#include "singleinsert/formats/lora_layouts.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/pipeline/text_to_image.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

std::string temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / "singleinsert_tests" / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

TEST(LdmCheckpoint, KeyTablesAgreeWithDiffusersPublishedMapping) {
  // Pairs from diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py (SD v1.5 layout).
  const UNetConfig unet = UNetConfig::from_json(JsonConfig::load(testing::golden_path("configs_full/sd15/unet/config.json")));
  const std::pair<const char*, const char*> unet_pairs[] = {
      {"time_embedding.linear_1.weight", "time_embed.0.weight"},
      {"time_embedding.linear_2.bias", "time_embed.2.bias"},
      {"conv_in.weight", "input_blocks.0.0.weight"},
      {"conv_norm_out.bias", "out.0.bias"},
      {"conv_out.weight", "out.2.weight"},
      {"down_blocks.0.resnets.0.conv1.weight", "input_blocks.1.0.in_layers.2.weight"},
      {"down_blocks.0.resnets.1.norm1.bias", "input_blocks.2.0.in_layers.0.bias"},
      {"down_blocks.0.attentions.1.proj_in.weight", "input_blocks.2.1.proj_in.weight"},
      {"down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"},
      {"down_blocks.1.downsamplers.0.conv.weight", "input_blocks.6.0.op.weight"},
      {"down_blocks.3.resnets.1.time_emb_proj.bias", "input_blocks.11.0.emb_layers.1.bias"},
      {"mid_block.resnets.0.conv2.weight", "middle_block.0.out_layers.3.weight"},
      {"mid_block.resnets.1.norm2.weight", "middle_block.2.out_layers.0.weight"},
      {"mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", "middle_block.1.transformer_blocks.0.attn2.to_k.weight"},
      {"up_blocks.0.resnets.2.conv_shortcut.weight", "output_blocks.2.0.skip_connection.weight"},
      {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"},
      {"up_blocks.1.upsamplers.0.conv.bias", "output_blocks.5.2.conv.bias"},
      {"up_blocks.2.attentions.0.norm.weight", "output_blocks.6.1.norm.weight"},
      {"up_blocks.3.attentions.2.proj_out.weight", "output_blocks.11.1.proj_out.weight"},
      {"up_blocks.3.resnets.2.conv2.bias", "output_blocks.11.0.out_layers.3.bias"}};
  for (const auto& [hf, sd] : unet_pairs) EXPECT_EQ(ldm_unet_key(hf, unet), sd) << hf;
  const VaeConfig vae = VaeConfig::from_json(JsonConfig::load(testing::golden_path("configs_full/sd15/vae/config.json")));
  const std::pair<const char*, const char*> vae_pairs[] = {
      {"encoder.conv_in.weight", "encoder.conv_in.weight"},
      {"encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "encoder.down.1.block.0.nin_shortcut.weight"},
      {"encoder.down_blocks.2.downsamplers.0.conv.weight", "encoder.down.2.downsample.conv.weight"},
      {"encoder.mid_block.attentions.0.to_q.weight", "encoder.mid.attn_1.q.weight"},
      {"encoder.mid_block.attentions.0.group_norm.bias", "encoder.mid.attn_1.norm.bias"},
      {"decoder.mid_block.attentions.0.to_out.0.weight", "decoder.mid.attn_1.proj_out.weight"},
      {"decoder.mid_block.resnets.1.conv2.bias", "decoder.mid.block_2.conv2.bias"},
      {"decoder.up_blocks.0.resnets.2.norm1.weight", "decoder.up.3.block.2.norm1.weight"},
      {"decoder.up_blocks.2.upsamplers.0.conv.weight", "decoder.up.1.upsample.conv.weight"},
      {"encoder.conv_norm_out.weight", "encoder.norm_out.weight"},
      {"post_quant_conv.bias", "post_quant_conv.bias"}};
  for (const auto& [hf, sd] : vae_pairs) EXPECT_EQ(ldm_vae_key(hf, vae), sd) << hf;

  // Every tensor gets its own name: the tables are bijections over the full model.
  std::set<std::string> names;
  const UNet2DConditionModel model(unet);
  for (const auto& [key, tensor] : module_tensors(*model)) EXPECT_TRUE(names.insert(ldm_unet_key(key, unet)).second) << key;
  EXPECT_EQ(names.size(), 686u);
}

TEST(LdmCheckpoint, SingleFileGeneratesWhatTheFolderDoes) {
  const std::string dir = temp_dir("single_file");
  auto folder = load_model_bundle(testing::golden_path("sd_tiny"));
  for (const auto& [dtype, tolerance] : std::vector<std::pair<at::ScalarType, double>>{{at::kFloat, 0.0}, {at::kHalf, 1.0 / 255}}) {
    const std::string file = dir + (dtype == at::kFloat ? "/tiny32.safetensors" : "/tiny16.safetensors");
    save_safetensors(file, to_ldm_checkpoint(*folder->unet, *folder->vae, *folder->text_encoder, dtype));
    ModelSourceOptions sources;
    sources.model_config = testing::golden_path("sd_tiny");
    auto single = load_model_bundle(file, {}, sources);
    GenerateOptions options;
    options.prompts = {"a photo of an astronaut riding a horse on mars"};
    options.steps = 4;
    options.width = options.height = 32;
    const at::Tensor expected = generate(*folder, options).pixels.to(at::kFloat) / 255;
    EXPECT_TENSOR_NEAR_ABS(generate(*single, options).pixels.to(at::kFloat) / 255, expected, tolerance);
  }
}

TEST(LdmCheckpoint, RecognisesWhatItCannotRun) {
  const std::string dir = temp_dir("bad_single");
  const at::Tensor t = at::zeros({2, 4, 1, 1});
  save_safetensors(dir + "/sdxl.safetensors", {{"model.diffusion_model.input_blocks.0.0.weight", t},
                                               {"conditioner.embedders.1.model.transformer.resblocks.0.ln_1.weight", t}});
  save_safetensors(dir + "/sd2.safetensors", {{"model.diffusion_model.input_blocks.0.0.weight", t},
                                              {"cond_stage_model.model.transformer.resblocks.0.ln_1.weight", t}});
  save_safetensors(dir + "/other.safetensors", {{"encoder.layer.0.weight", t}});
  auto expect_error = [](const std::string& path, const std::string& fragment, const ModelSourceOptions& sources) {
    try {
      load_model_bundle(path, {}, sources);
      ADD_FAILURE() << path << " loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  ModelSourceOptions with_tokenizer;
  with_tokenizer.tokenizer = testing::golden_path("sd_tiny/tokenizer");
  expect_error(dir + "/sdxl.safetensors", "an SDXL checkpoint (its text encoders are under conditioner.embedders.*)", with_tokenizer);
  expect_error(dir + "/sd2.safetensors", "an SD 2.x checkpoint (OpenCLIP text encoder keys cond_stage_model.model.*)",
               with_tokenizer);
  expect_error(dir + "/other.safetensors", "not a Stable Diffusion checkpoint", with_tokenizer);
  auto folder = load_model_bundle(testing::golden_path("sd_tiny"));
  save_safetensors(dir + "/tiny.safetensors", to_ldm_checkpoint(*folder->unet, *folder->vae, *folder->text_encoder, at::kHalf));
  expect_error(dir + "/tiny.safetensors", "carries no tokenizer; pass --tokenizer DIR", {});
  // Without --model-config the built-in SD v1.5 architecture does not fit the tiny weights.
  expect_error(dir + "/tiny.safetensors", "has shape", with_tokenizer);
}

TEST(ModelFolders, Fp16VariantFilesLoad) {
  // diffusers' variant="fp16" folders name their weights *.fp16.safetensors.
  const fs::path dir = temp_dir("fp16_variant");
  const fs::path source = testing::golden_path("sd_tiny");
  fs::copy(source, dir, fs::copy_options::recursive);
  auto reference = load_model_bundle(source.string());
  for (const char* component : {"unet", "vae"}) {
    fs::permissions(dir / component, fs::perms::owner_all);
    const fs::path file = dir / component / "diffusion_pytorch_model.safetensors";
    NamedTensors half;
    const SafetensorsFile original = SafetensorsFile::open(file.string());
    for (const auto& key : original.keys()) half.emplace_back(key, original.tensor(key).to(at::kHalf));
    fs::remove(file);
    save_safetensors((dir / component / "diffusion_pytorch_model.fp16.safetensors").string(), half);
  }
  auto bundle = load_model_bundle(dir.string());
  EXPECT_EQ(bundle->unet->conv_in->weight.scalar_type(), at::kFloat);  // fp16 files load into fp32 modules
  EXPECT_TENSOR_NEAR_ABS(bundle->unet->conv_in->weight, reference->unet->conv_in->weight.to(at::kHalf).to(at::kFloat), 0.0);
}

TEST(LoraFormats, GoldenKohyaLoraReproducesDiffusers) {
  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  const SafetensorsFile io = testing::golden_file("lora/sd_tiny_lora_io.safetensors");
  const SafetensorsFile unet_io = testing::golden_file("unet_io.safetensors");
  const SafetensorsFile common = testing::golden_file("pipeline/common_io.safetensors");
  at::NoGradGuard no_grad;
  const at::Tensor ids = io.tensor("prompt_input_ids");
  EXPECT_TENSOR_NEAR_REL(bundle->text_encoder->forward(ids).last_hidden_state, io.tensor("text_encoder_out_no_lora"), 1e-5);
  EXPECT_TENSOR_NEAR_REL(bundle->unet->forward(unet_io.tensor("sample"), unet_io.tensor("timestep_scalar"),
                                               unet_io.tensor("encoder_hidden_states")),
                         io.tensor("unet_out_no_lora"), 1e-5);
  auto networks = apply_loras(*bundle, {{testing::golden_path("lora/sd_tiny_lora_kohya_r4_a4.safetensors"), 1.0}});
  ASSERT_EQ(networks.size(), 1u);
  EXPECT_EQ(networks[0]->size(), 84u);
  EXPECT_TENSOR_NEAR_REL(bundle->text_encoder->forward(ids).last_hidden_state, io.tensor("text_encoder_out_lora"), 1e-5);
  bundle->scheduler_config = JsonConfig::load(testing::golden_path("schedulers/pndm_config.json"));
  GenerateOptions options;
  options.prompts = {"a photo of an astronaut riding a horse on mars"};
  options.sampler = "pndm";
  options.steps = 4;
  options.width = options.height = 32;
  options.initial_latents = common.tensor("init_latents");
  for (const auto& [scale, name] : std::vector<std::pair<double, std::string>>{{1.0, "1_0"}, {0.5, "0_5"}}) {
    networks[0]->set_scale(scale);
    EXPECT_TENSOR_NEAR_REL(bundle->unet->forward(unet_io.tensor("sample"), unet_io.tensor("timestep_scalar"),
                                                 unet_io.tensor("encoder_hidden_states")),
                           io.tensor("unet_out_lora_scale_" + name), 1e-5);
    DenoiseTrace trace;
    const GeneratedImages images = generate(*bundle, options, nullptr, &trace);
    EXPECT_TENSOR_NEAR_ABS(images.images, io.tensor("pipeline_image_lora_scale_" + name), 1e-5);
    if (scale == 1.0) {
      const at::Tensor latents = io.tensor("pipeline_latents_per_step_lora_scale_1_0");
      for (size_t i = 0; i < trace.latents.size(); ++i) EXPECT_TENSOR_NEAR_REL(trace.latents[i], latents[i], 1e-5);
    }
  }
}

TEST(LoraFormats, LayoutsRoundTripAndBadFilesAreNamed) {
  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  const auto modules = adaptable_modules(*bundle);
  std::vector<std::string> paths;
  for (const auto& [path, layer] : modules) paths.push_back(path);
  const SafetensorsFile kohya = testing::golden_file("lora/sd_tiny_lora_kohya_r4_a4.safetensors");
  LoraLayout layout;
  const LoraWeightMap weights = read_lora_file(kohya, paths, &layout);
  EXPECT_EQ(layout, LoraLayout::kKohya);
  EXPECT_EQ(kohya_name("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0");
  EXPECT_EQ(weights.at("text_encoder.text_model.encoder.layers.1.mlp.fc2").alpha, 4.0);
  // kohya -> peft -> kohya keeps every tensor.
  std::map<std::string, at::Tensor> peft;
  for (const auto& [key, tensor] : to_peft_layout(weights)) peft[key] = tensor;
  EXPECT_EQ(detect_lora_layout(peft, "peft"), LoraLayout::kPeft);
  const LoraWeightMap back = from_peft_layout(peft, "peft");
  for (const auto& [key, tensor] : to_kohya_layout(back))
    if (key.find(".alpha") == std::string::npos) EXPECT_TRUE(at::equal(tensor, kohya.tensor(key))) << key;

  const std::string dir = temp_dir("bad_lora");
  NamedTensors bogus = {{"lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight", at::zeros({4, 32})},
                        {"lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight", at::zeros({32, 4})}};
  save_safetensors(dir + "/missing_target.safetensors", bogus);
  try {
    apply_loras(*bundle, {{dir + "/missing_target.safetensors", 1.0}});
    ADD_FAILURE() << "loaded a LoRA for modules that do not exist";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 LoRA target(s) do not exist in the model: lora_unet_down_blocks_9"),
              std::string::npos)
        << e.what();
  }
  NamedTensors mismatched = {
      {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight", at::zeros({4, 32})},
      {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight", at::zeros({32, 8})}};
  save_safetensors(dir + "/rank.safetensors", mismatched);
  try {
    apply_loras(*bundle, {{dir + "/rank.safetensors", 1.0}});
    ADD_FAILURE() << "loaded a LoRA whose ranks disagree";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has down [4, 32] and up [32, 8]"), std::string::npos) << e.what();
  }
}

TEST(Embeddings, BothLayoutsLoadAndMultiVectorTriggersExpand) {
  const std::string dir = temp_dir("embeddings");
  at::Generator generator = make_cpu_generator(1);
  const at::Tensor vectors = at::randn({3, 32}, generator) * 0.02;
  save_safetensors(dir + "/learned_embeds.safetensors", to_diffusers_embedding("<cat-toy>", vectors));
  save_safetensors(dir + "/mystyle.safetensors", to_a1111_embedding(vectors.narrow(0, 0, 1)));
  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  const auto triggers = apply_embeddings(*bundle, {{dir + "/learned_embeds.safetensors", ""}, {dir + "/mystyle.safetensors", ""}});
  EXPECT_EQ(triggers, (std::vector<std::string>{"<cat-toy>", "mystyle"}));
  EXPECT_EQ(bundle->prompt_expansions.at("<cat-toy>"), "<cat-toy> <cat-toy>_1 <cat-toy>_2");
  const auto& table = bundle->text_encoder->text_model->embeddings->token_embedding->weight;
  EXPECT_TRUE(at::equal(table[bundle->tokenizer.token_id("<cat-toy>_2")], vectors[2]));
  EXPECT_TRUE(at::equal(table[bundle->tokenizer.token_id("mystyle")], vectors[0]));
  save_safetensors(dir + "/wide.safetensors", to_a1111_embedding(at::zeros({1, 768})));
  EXPECT_THROW(apply_embeddings(*bundle, {{dir + "/wide.safetensors", ""}}), Error);
}

// What the fuzz harnesses found or made us check (fuzz/regressions/ replays the inputs): an
// alpha tensor without exactly one value, metadata that is not a number, a trigger that is not
// one word, a token another embedding already holds, and a LoRA scale that is not finite.
TEST(Adapters, MalformedValuesAreClearErrors) {
  const std::string dir = temp_dir("malformed_adapters");
  const std::string module = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
  NamedTensors lora = {{module + ".lora_down.weight", at::zeros({2, 32})}, {module + ".lora_up.weight", at::zeros({32, 2})}};
  auto bundle = load_model_bundle(testing::golden_path("sd_tiny"));
  const auto expect_error = [&](const std::string& file, const std::string& message) {
    try {
      apply_loras(*bundle, {{file, 1.0}});
      ADD_FAILURE() << file << " loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  NamedTensors empty_alpha = lora;
  empty_alpha.emplace_back(module + ".alpha", at::zeros({0}));
  save_safetensors(dir + "/empty_alpha.safetensors", empty_alpha);
  expect_error(dir + "/empty_alpha.safetensors", "holds 0 values; an alpha is one number");
  NamedTensors nan_alpha = lora;
  nan_alpha.emplace_back(module + ".alpha", at::full({}, NAN));
  save_safetensors(dir + "/nan_alpha.safetensors", nan_alpha);
  expect_error(dir + "/nan_alpha.safetensors", "an alpha is a finite number >= 0");
  std::map<std::string, at::Tensor> processor_input;
  save_safetensors(dir + "/word_alpha.safetensors",
                   {{"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight", at::zeros({2, 32})},
                    {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight", at::zeros({32, 2})}},
                   {{"lora_alpha", "four"}});
  expect_error(dir + "/word_alpha.safetensors", "its metadata lora_alpha is 'four', not a finite number >= 0");

  EXPECT_THROW(parse_lora_request("style.safetensors:nan"), Error);
  EXPECT_THROW(parse_lora_request("style.safetensors:inf"), Error);
  EXPECT_EQ(parse_lora_request("style.safetensors:0.5").scale, 0.5);
  EXPECT_EQ(parse_lora_request("C:style").path, "C:style");

  for (const std::string& bad : std::vector<std::string>{"", "two words", "tab\tbed", "\xff\xfe", "a<|endoftext|>",
                                                        std::string(101, 'x')})
    EXPECT_THROW(validate_trigger(bad, "test"), Error) << bad;
  for (const std::string& good : std::vector<std::string>{"*", "<cat-toy>", "sks", "\xe7\x8c\xab", std::string(100, 'x')})
    EXPECT_NO_THROW(validate_trigger(good, "test")) << good;
  try {
    insert_embedding(*bundle, "bad trigger", at::zeros({1, 32}), "my style.safetensors");
    ADD_FAILURE() << "a trigger with a space was added";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "my style.safetensors: the trigger 'bad trigger' must be one word (no spaces or control characters)");
  }
  insert_embedding(*bundle, "toy", at::zeros({2, 32}), "first");
  EXPECT_THROW(insert_embedding(*bundle, "toy_1", at::zeros({1, 32}), "second"), Error);  // toy's second vector
  EXPECT_EQ(expand_prompt("a toy", {{"", "x"}, {"toy", "toy toy_1"}}), "a toy toy_1");  // an empty token is no token
}

}  // namespace
}  // namespace singleinsert
