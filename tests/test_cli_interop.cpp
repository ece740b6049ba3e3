// The interoperability commands as users run them: convert (folder <-> single file) generating
// the same images, export in every layout loading back to the concept's images with keys laid
// out as each ecosystem documents them, info, and the bad files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "golden.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/io/png.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

using testing::CliResult;
using testing::run_cli;

std::vector<std::string> generate_args(const std::string& model, const std::string& prompt, const std::string& out,
                                       std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"generate", "--model", model, "--prompt", prompt, "--steps", "3", "--out", out};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

at::Tensor pixels_of(const std::string& dir) { return read_image_rgb(dir + "/0000.png").pixels; }

TEST(CliInterop, ConvertedSingleFilesGenerateTheFolderImages) {
  const std::string dir = testing::fresh_temp_dir("convert");
  const std::string tiny = testing::golden_path("sd_tiny");
  ASSERT_EQ(run_cli({"convert", "--model", tiny, "--out", dir + "/tiny.safetensors", "--dtype", "fp32"}).exit_code, 0);
  ASSERT_EQ(run_cli({"convert", "--model", tiny, "--out", dir + "/tiny16.safetensors"}).exit_code, 0);
  const CliResult folder = run_cli(generate_args(tiny, "a red cat", dir + "/folder"));
  ASSERT_EQ(folder.exit_code, 0) << folder.err;
  const CliResult single = run_cli(generate_args(dir + "/tiny.safetensors", "a red cat", dir + "/single",
                                                 {"--model-config", tiny}));
  ASSERT_EQ(single.exit_code, 0) << single.err;
  EXPECT_TRUE(at::equal(pixels_of(dir + "/folder"), pixels_of(dir + "/single")));
  const CliResult half = run_cli(generate_args(dir + "/tiny16.safetensors", "a red cat", dir + "/half",
                                               {"--model-config", tiny}));
  ASSERT_EQ(half.exit_code, 0) << half.err;
  EXPECT_TENSOR_NEAR_ABS(pixels_of(dir + "/half").to(at::kFloat) / 255, pixels_of(dir + "/folder").to(at::kFloat) / 255,
                         1.0 / 255);
  // Back to a folder, and the same images again.
  ASSERT_EQ(run_cli({"convert", "--model", dir + "/tiny.safetensors", "--model-config", tiny, "--out", dir + "/back",
                     "--dtype", "fp32"}).exit_code, 0);
  const CliResult back = run_cli(generate_args(dir + "/back", "a red cat", dir + "/back_images"));
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_TRUE(at::equal(pixels_of(dir + "/folder"), pixels_of(dir + "/back_images")));
  const CliResult info = run_cli({"info", dir + "/tiny.safetensors"});
  EXPECT_NE(info.out.find("single-file checkpoint (LDM layout)"), std::string::npos) << info.out;
  const CliResult missing_tokenizer = run_cli(generate_args(dir + "/tiny.safetensors", "a cat", dir + "/x"));
  EXPECT_NE(missing_tokenizer.exit_code, 0);
  EXPECT_NE(missing_tokenizer.err.find("pass --tokenizer DIR"), std::string::npos) << missing_tokenizer.err;
  // The PNG records the model hash the way AUTOMATIC1111 does.
  EXPECT_NE(read_png_text(dir + "/folder/0000.png").at("parameters").find("Model hash: 9cecb01614"), std::string::npos);
}

TEST(CliInterop, ExportedConceptsLoadBackToTheSameImages) {
  const std::string dir = testing::fresh_temp_dir("export");
  const std::string tiny = testing::golden_path("sd_tiny");
  const std::string preset = testing::write_tiny_training_preset(dir);
  ASSERT_EQ(run_cli({"invert", "--model", tiny, "--image", testing::golden_path("singleinsert_losses/instance_image.png"),
                     "--mask", testing::golden_path("singleinsert_losses/mask.png"), "--class", "teddy bear", "--preset",
                     preset, "--out", dir + "/s1"}).exit_code, 0);
  ASSERT_EQ(run_cli({"finetune", "--model", tiny, "--concept", dir + "/s1", "--out", dir + "/bear"}).exit_code, 0);
  const std::string prompt = "a photo of bear teddy bear on the beach";
  const CliResult reference = run_cli(generate_args(tiny, prompt, dir + "/reference", {"--concept", dir + "/bear:bear"}));
  ASSERT_EQ(reference.exit_code, 0) << reference.err;

  // AUTOMATIC1111: an embedding named after its file, and a kohya LoRA with alpha.
  const CliResult a1111 = run_cli({"export", "--concept", dir + "/bear", "--format", "a1111", "--out", dir + "/a1111"});
  ASSERT_EQ(a1111.exit_code, 0) << a1111.err;
  const SafetensorsFile embedding = SafetensorsFile::open(dir + "/a1111/bear.safetensors");
  EXPECT_EQ(embedding.keys(), std::vector<std::string>{"emb_params"});
  EXPECT_EQ(embedding.entry("emb_params").shape, (std::vector<int64_t>{1, 32}));
  const SafetensorsFile lora = SafetensorsFile::open(dir + "/a1111/bear_lora.safetensors");
  EXPECT_EQ(lora.size(), 56u * 3);
  const std::string module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  EXPECT_EQ(lora.entry(module + ".lora_down.weight").shape, (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(lora.entry(module + ".lora_up.weight").shape, (std::vector<int64_t>{32, 4}));
  EXPECT_TRUE(lora.entry(module + ".alpha").shape.empty());
  EXPECT_TRUE(lora.contains("lora_te_text_model_encoder_layers_0_self_attn_out_proj.lora_down.weight"));
  EXPECT_EQ(lora.metadata().at("ss_network_dim"), "4");
  const CliResult from_a1111 = run_cli(generate_args(tiny, prompt, dir + "/from_a1111",
                                                     {"--embedding", dir + "/a1111/bear.safetensors", "--lora",
                                                      dir + "/a1111/bear_lora.safetensors"}));
  ASSERT_EQ(from_a1111.exit_code, 0) << from_a1111.err;
  EXPECT_TRUE(at::equal(pixels_of(dir + "/from_a1111"), pixels_of(dir + "/reference")));

  // diffusers: learned_embeds.safetensors and a PEFT LoRA.
  ASSERT_EQ(run_cli({"export", "--concept", dir + "/bear", "--format", "diffusers", "--out", dir + "/diffusers"}).exit_code, 0);
  EXPECT_EQ(SafetensorsFile::open(dir + "/diffusers/learned_embeds.safetensors").keys(), std::vector<std::string>{"bear"});
  const SafetensorsFile peft = SafetensorsFile::open(dir + "/diffusers/pytorch_lora_weights.safetensors");
  EXPECT_EQ(peft.entry("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight").shape,
            (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(peft.entry("text_encoder.text_model.encoder.layers.1.self_attn.v_proj.lora_B.weight").shape,
            (std::vector<int64_t>{32, 4}));
  const CliResult from_diffusers = run_cli(generate_args(tiny, prompt, dir + "/from_diffusers",
                                                         {"--embedding", dir + "/diffusers/learned_embeds.safetensors",
                                                          "--lora", dir + "/diffusers/pytorch_lora_weights.safetensors"}));
  ASSERT_EQ(from_diffusers.exit_code, 0) << from_diffusers.err;
  EXPECT_TRUE(at::equal(pixels_of(dir + "/from_diffusers"), pixels_of(dir + "/reference")));

  // diffusers before its PEFT backend: the attention-processor layout.
  ASSERT_EQ(run_cli({"export", "--concept", dir + "/bear", "--format", "diffusers-legacy", "--out", dir + "/legacy"}).exit_code,
            0);
  const SafetensorsFile legacy = SafetensorsFile::open(dir + "/legacy/pytorch_lora_weights.safetensors");
  EXPECT_EQ(legacy.entry("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight").shape,
            (std::vector<int64_t>{4, 32}));
  EXPECT_TRUE(legacy.contains("text_encoder.text_model.encoder.layers.1.self_attn.v_proj.lora_linear_layer.up.weight"));
  const CliResult from_legacy = run_cli(generate_args(tiny, prompt, dir + "/from_legacy",
                                                      {"--embedding", dir + "/legacy/learned_embeds.safetensors", "--lora",
                                                       dir + "/legacy/pytorch_lora_weights.safetensors"}));
  ASSERT_EQ(from_legacy.exit_code, 0) << from_legacy.err;
  EXPECT_TRUE(at::equal(pixels_of(dir + "/from_legacy"), pixels_of(dir + "/reference")));

  // kohya: the LoRA alone (the file diffusers' format check accepts) and the embedding beside it.
  ASSERT_EQ(run_cli({"export", "--concept", dir + "/bear", "--format", "kohya", "--out", dir + "/kohya"}).exit_code, 0);
  const SafetensorsFile kohya = SafetensorsFile::open(dir + "/kohya/bear.safetensors");
  for (const auto& key : kohya.keys()) EXPECT_EQ(key.rfind("bundle_emb", 0), std::string::npos) << key;
  const CliResult from_kohya =
      run_cli(generate_args(tiny, prompt, dir + "/from_kohya",
                            {"--lora", dir + "/kohya/bear.safetensors", "--embedding",
                             dir + "/kohya/embeddings/bear.safetensors"}));
  ASSERT_EQ(from_kohya.exit_code, 0) << from_kohya.err;
  EXPECT_TRUE(at::equal(pixels_of(dir + "/from_kohya"), pixels_of(dir + "/reference")));
  // ... or bundled (bundle_emb.<name>.string_to_param.*) when asked.
  ASSERT_EQ(run_cli({"export", "--concept", dir + "/bear", "--format", "kohya", "--bundle-embedding", "--out",
                     dir + "/bundled"}).exit_code,
            0);
  const SafetensorsFile bundled = SafetensorsFile::open(dir + "/bundled/bear.safetensors");
  EXPECT_EQ(bundled.entry("bundle_emb.bear.string_to_param.*").shape, (std::vector<int64_t>{1, 32}));
  EXPECT_FALSE(std::filesystem::exists(dir + "/bundled/embeddings"));
  const CliResult from_bundled =
      run_cli(generate_args(tiny, prompt, dir + "/from_bundled", {"--lora", dir + "/bundled/bear.safetensors"}));
  ASSERT_EQ(from_bundled.exit_code, 0) << from_bundled.err;
  EXPECT_TRUE(at::equal(pixels_of(dir + "/from_bundled"), pixels_of(dir + "/reference")));
  const CliResult misplaced = run_cli({"export", "--concept", dir + "/bear", "--format", "a1111", "--bundle-embedding",
                                       "--out", dir + "/misplaced"});
  EXPECT_NE(misplaced.exit_code, 0);
  EXPECT_NE(misplaced.err.find("--bundle-embedding is for --format kohya"), std::string::npos) << misplaced.err;

  // A stage I concept has no LoRA to export in kohya's (LoRA) layout.
  const CliResult stage1 = run_cli({"export", "--concept", dir + "/s1", "--format", "kohya", "--out", dir + "/k1"});
  EXPECT_NE(stage1.exit_code, 0);
  EXPECT_NE(stage1.err.find("a stage I concept has no LoRA"), std::string::npos) << stage1.err;
  // A trigger that is also a word warns, and still works.
  const CliResult collision = run_cli(generate_args(tiny, "a photo of cat", dir + "/collision",
                                                    {"--embedding", dir + "/a1111/bear.safetensors:cat"}));
  EXPECT_EQ(collision.exit_code, 0) << collision.err;
  EXPECT_NE(collision.err.find("the trigger 'cat' is also a word of the vocabulary"), std::string::npos) << collision.err;
  const CliResult info = run_cli({"info", dir + "/a1111/bear_lora.safetensors"});
  EXPECT_NE(info.out.find("kohya"), std::string::npos) << info.out;
}

}  // namespace
}  // namespace singleinsert
