// The procedural world: deterministic renders, masks, captions, edits and the command.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli_runner.h"
#include "singleinsert/core/error.h"
#include "singleinsert/io/image_file.h"
#include "singleinsert/models/clip_tokenizer.h"
#include "singleinsert/pipeline/default_model.h"
#include "singleinsert/world/detector.h"
#include "singleinsert/world/render.h"

namespace singleinsert {
namespace {

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  for (char c : text + " ") {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      word += c;
    } else if (!word.empty()) {
      words.push_back(word);
      word.clear();
    }
  }
  return words;
}

TEST(World, RendersDeterministicallyAndFromItsAttributes) {
  for (uint64_t seed : {0, 1, 2, 3, 4, 5}) {
    const world::Scene scene = world::sample_scene(seed);
    const world::WorldSample a = world::render(scene, 128), b = world::render(scene, 128);
    EXPECT_TRUE(at::equal(a.image, b.image)) << seed;
    EXPECT_TRUE(at::equal(a.mask, b.mask)) << seed;
    // The attributes are a complete description: the scene they describe renders the same bytes.
    const nlohmann::json described = nlohmann::json::parse(a.attributes.dump());
    EXPECT_TRUE(at::equal(world::render(world::scene_from_json(described), 128).image, a.image)) << seed;
    EXPECT_EQ(a.image.sizes(), (std::vector<int64_t>{128, 128, 3}));
    EXPECT_EQ(a.mask.sizes(), (std::vector<int64_t>{128, 128, 1}));
  }
  EXPECT_FALSE(at::equal(world::render(world::sample_scene(1)).image, world::render(world::sample_scene(2)).image));
  nlohmann::json bad = world::to_json(world::sample_scene(0));
  bad["background"] = "tartan";
  EXPECT_THROW(world::scene_from_json(bad), Error);
  bad.erase("background");
  EXPECT_THROW(world::scene_from_json(bad), Error);
  EXPECT_THROW(world::render(world::sample_scene(0), 16), Error);
}

TEST(World, MaskCoversTheSubjectAndNotTheCupBesideIt) {
  world::Scene scene = world::source_scene(world::sample_identity(11), 0);
  const world::WorldSample alone = world::render(scene, 256);
  const at::Tensor on_subject = alone.mask.squeeze(-1) > 127;
  const double area = on_subject.to(at::kFloat).mean().item<double>();
  EXPECT_GT(area, 0.08);
  EXPECT_LT(area, 0.45);
  // Outside the mask the image is the plain background; inside it hardly any pixel is.
  const at::Tensor background = at::tensor({72, 112, 202}, at::kByte);
  const at::Tensor is_background = (alone.image == background).all(-1);
  EXPECT_TRUE(is_background.masked_select(alone.mask.squeeze(-1) == 0).all().item<bool>());
  EXPECT_LT(is_background.masked_select(on_subject).to(at::kFloat).mean().item<double>(), 0.01);

  world::apply_edit(scene, "cup");
  const world::WorldSample with_cup = world::render(scene, 256);
  const at::Tensor cup_pixels = (with_cup.image != background).any(-1) & (with_cup.mask.squeeze(-1) == 0);
  EXPECT_GT(cup_pixels.sum().item<int64_t>(), 500);  // the cup is drawn, outside the mask
  scene.subject = world::Subject::kCup;
  const world::WorldSample cup = world::render(scene, 256);
  EXPECT_GT((cup.mask > 127).sum().item<int64_t>(), 2000);
  EXPECT_EQ(cup.caption.find("face"), std::string::npos);
}

TEST(World, EditsChangeOnlyWhatTheyName) {
  const world::Scene source = world::source_scene(world::sample_identity(21), 4);
  const world::WorldSample plain = world::render(source, 256);
  for (const std::string edit : {"sunglasses", "hat", "earrings", "smiling", "surprised"}) {
    world::Scene edited = source;
    world::apply_edit(edited, edit);
    const world::WorldSample sample = world::render(edited, 256);
    const at::Tensor changed = (sample.image != plain.image).any(-1);
    EXPECT_GT(changed.sum().item<int64_t>(), 50) << edit;
    // The background stays where neither render has the subject.
    const at::Tensor outside = (sample.mask.squeeze(-1) == 0) & (plain.mask.squeeze(-1) == 0);
    EXPECT_EQ((changed & outside).sum().item<int64_t>(), 0) << edit;
    EXPECT_NE(sample.caption.find(edit), std::string::npos) << sample.caption;
  }
  world::Scene recoloured = source;
  world::apply_edit(recoloured, "green-background");
  const world::WorldSample green = world::render(recoloured, 256);
  EXPECT_TRUE(at::equal(green.mask, plain.mask));
  EXPECT_TRUE(at::equal(green.image.masked_select(green.mask == 255), plain.image.masked_select(plain.mask == 255)));
  EXPECT_NE(green.caption.find("on a green background"), std::string::npos);
  world::Scene scene = source;
  EXPECT_THROW(world::apply_edit(scene, "moustache"), Error);
}

TEST(World, IdentitiesDifferBeyondTheirCaptions) {
  // Two identities that captions describe with the same words still draw different faces.
  int same_words = 0;
  for (uint64_t a = 0; a < 400 && same_words < 3; ++a) {
    for (uint64_t b = a + 1; b < 400; ++b) {
      const world::Scene sa = world::source_scene(world::sample_identity(a), 0);
      const world::Scene sb = world::source_scene(world::sample_identity(b), 0);
      if (world::caption(sa) != world::caption(sb)) continue;
      EXPECT_FALSE(at::equal(world::render(sa, 128).image, world::render(sb, 128).image));
      ++same_words;
      break;
    }
  }
  EXPECT_EQ(same_words, 3);
}

TEST(World, CaptionsSpeakTheWorldVocabulary) {
  const std::string dir = testing::fresh_temp_dir("world_vocab");
  write_small_clip_tokenizer(dir, world::vocabulary_words());
  const ClipTokenizer tokenizer = ClipTokenizer::load(dir);
  const std::vector<std::string>& vocabulary = world::vocabulary_words();
  const std::set<std::string> known(vocabulary.begin(), vocabulary.end());
  std::set<std::string> seen;
  size_t longest = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    const std::string text = world::caption(world::sample_scene(seed));
    for (const std::string& word : words_of(text)) {
      EXPECT_TRUE(known.count(word)) << word << " in: " << text;
      EXPECT_EQ(tokenizer.encode(word).size(), 1u) << word;
      seen.insert(word);
    }
    longest = std::max(longest, tokenizer.encode(text).size());
  }
  EXPECT_LE(longest + 2, 77u);  // BOS + caption + EOS fit the context
  for (const char* word : {"sunglasses", "hat", "earrings", "cup", "striped", "dotted", "left", "right", "small",
                           "large", "smiling", "surprised", "freckles", "curly", "orange"})
    EXPECT_TRUE(seen.count(word)) << word << " never appears in 300 captions";
}

TEST(WorldCommand, WritesImagesMasksCaptionsAndAnIndex) {
  const std::string dir = testing::fresh_temp_dir("world_cli") + "/out";
  const auto result = testing::run_cli({"world", "--out", dir, "--count", "3", "--size", "96", "--seed", "5"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::ifstream index(dir + "/samples.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(index, line)) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    const world::WorldSample expected = world::render(world::sample_scene(5 + lines), 96);
    EXPECT_EQ(entry.at("caption"), expected.caption);
    EXPECT_TRUE(at::equal(read_image_rgb(dir + "/" + entry.at("image").get<std::string>()).pixels, expected.image));
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + entry.at("mask").get<std::string>()));
    ++lines;
  }
  EXPECT_EQ(lines, 3);
  const std::string edits = testing::fresh_temp_dir("world_cli") + "/edits";
  const auto bad = testing::run_cli({"world", "--out", edits, "--with", "moustache"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("unknown edit 'moustache'"), std::string::npos) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(edits));
}

// A model small enough to train for a few steps in seconds, in the config layout of
// configs/base/world.json.
std::string write_tiny_base_config(const std::string& dir) {
  nlohmann::json config = nlohmann::json::parse(R"({
    "resolution": 32, "seed": 3,
    "vae": {"steps": 20, "batch_size": 4, "lr": 2e-3, "kl_weight": 1e-4,
            "config": {"latent_channels": 4, "block_out_channels": [16, 32],
                       "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
                       "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
                       "layers_per_block": 1, "norm_num_groups": 8}},
    "diffusion": {"steps": 20, "batch_size": 4, "lr": 1e-3, "caption_dropout": 0.25},
    "unet": {"sample_size": 16, "block_out_channels": [32, 32],
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
             "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 32, "norm_num_groups": 8},
    "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77}
  })");
  const std::string path = dir + "/tiny_base.json";
  std::ofstream(path) << config.dump(2);
  return path;
}

TEST(TrainBase, TrainsAModelThatGenerateLoads) {
  const std::string dir = testing::fresh_temp_dir("train_base");
  const std::string config = write_tiny_base_config(dir);
  const auto trained = testing::run_cli({"train-base", "--config", config, "--out", dir + "/model"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  std::ifstream record_file(dir + "/model/train_base.json");
  const nlohmann::json record = nlohmann::json::parse(record_file);
  // Both phases learn: the loss of the last 10% of steps is below that of the first 10%.
  EXPECT_LT(record.at("vae").at("loss_last").get<double>(), 0.8 * record.at("vae").at("loss_first").get<double>());
  EXPECT_LT(record.at("diffusion").at("loss_last").get<double>(),
            0.8 * record.at("diffusion").at("loss_first").get<double>());
  EXPECT_GT(record.at("scaling_factor").get<double>(), 0.0);
  // The folder is a diffusers model: fp16 weights, the world's words as single tokens.
  const auto info = testing::run_cli({"info", dir + "/model"});
  EXPECT_NE(info.out.find("float16"), std::string::npos) << info.out;
  const auto tokens = testing::run_cli({"tokenize", "--model", dir + "/model", "--prompt", "sunglasses"});
  ASSERT_EQ(tokens.exit_code, 0) << tokens.err;
  const auto generated = testing::run_cli({"generate", "--model", dir + "/model", "--prompt",
                                           "a photo of a face wearing a hat", "--steps", "3", "--out", dir + "/images"});
  ASSERT_EQ(generated.exit_code, 0) << generated.err;
  EXPECT_EQ(read_image_rgb(dir + "/images/0000.png").pixels.size(0), 32);

  // Refusals leave nothing behind.
  const auto again = testing::run_cli({"train-base", "--config", config, "--out", dir + "/model"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  nlohmann::json odd = nlohmann::json::parse(std::ifstream(config));
  odd["resolution"] = 33;
  std::ofstream(dir + "/odd.json") << odd.dump();
  const auto bad = testing::run_cli({"train-base", "--config", dir + "/odd.json", "--out", dir + "/odd"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("not a multiple"), std::string::npos) << bad.err;
  EXPECT_TRUE(std::filesystem::is_empty(dir) || !std::filesystem::exists(dir + "/odd"));
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
}

const std::string kWorldAssets = std::string(SINGLEINSERT_ASSETS_DIR) + "/world";
// The aims the committed detector meets on its own validation (world_detector.safetensors.json:
// every attribute >= 0.99, AUC 0.997), checked again on a smaller fresh sample.
constexpr double kDetectorFloor = 0.95;
constexpr double kIdentityAucFloor = 0.95;

TEST(WorldDetector, ReadsFreshRendersAndSeparatesIdentities) {
  world::WorldDetector detector = world::load_detector(kWorldAssets + "/world_detector.safetensors");
  // Seed 7 draws other scenes than the validation recorded beside the weights.
  const world::DetectorValidation validation = world::validate_detector(detector, 256, 7);
  for (const auto& [name, accuracy] : validation.accuracy) EXPECT_GE(accuracy, kDetectorFloor) << name;
  EXPECT_EQ(validation.accuracy.size(), world::attribute_heads().size());
  EXPECT_GE(validation.identity_auc, kIdentityAucFloor);
  // A render and the same render with sunglasses: the detector sees the edit, and the identity
  // moves less than to another face.
  const world::Scene plain = world::source_scene(world::sample_identity(world::kHeldOutIdentitySeed + 5), 2);
  world::Scene edited = plain;
  world::apply_edit(edited, "sunglasses");
  const world::Scene other = world::source_scene(world::sample_identity(world::kHeldOutIdentitySeed + 6), 2);
  const auto found = world::detect(
      detector, at::stack({world::render(plain).image, world::render(edited).image, world::render(other).image}));
  EXPECT_EQ(found[0].attributes.at("sunglasses"), 0);
  EXPECT_EQ(found[1].attributes.at("sunglasses"), 1);
  EXPECT_EQ(found[0].attributes.at("background"), 2);
  EXPECT_LT(world::identity_distance(found[0], found[1]), world::identity_distance(found[0], found[2]));
}

TEST(WorldDetector, TrainsSavesAndLoadsFromTheCommandLine) {
  const std::string dir = testing::fresh_temp_dir("detector");
  const auto trained = testing::run_cli(
      {"eval", "train-detector", "--out", dir + "/d.safetensors", "--steps", "3", "--batch-size", "8", "--validate", "16"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  EXPECT_NE(trained.out.find("identity_auc\t"), std::string::npos) << trained.out;
  const nlohmann::json record = nlohmann::json::parse(std::ifstream(dir + "/d.safetensors.json"));
  EXPECT_EQ(record.at("accuracy").size(), world::attribute_heads().size());
  world::WorldDetector loaded = world::load_detector(dir + "/d.safetensors");
  const auto again = testing::run_cli({"eval", "train-detector", "--out", dir + "/d.safetensors", "--steps", "1"});
  EXPECT_NE(again.exit_code, 0);
}

TEST(WorldModel, TheCommittedModelGeneratesAndIsMeasured) {
  const std::string dir = testing::fresh_temp_dir("world_model");
  // The repository stores the weights; the tokenizer is generated from the world's words, as
  // train-base wrote it.
  const std::string model = dir + "/model";
  std::filesystem::copy(kWorldAssets + "/model", model, std::filesystem::copy_options::recursive);
  std::filesystem::remove_all(model + "/tokenizer");
  const auto tokenizer = testing::run_cli({"world", "--write-tokenizer", model + "/tokenizer"});
  ASSERT_EQ(tokenizer.exit_code, 0) << tokenizer.err;
  const auto generated = testing::run_cli({"generate", "--model", model, "--prompt",
                                           "a photo of a face with pale skin, short black hair and blue eyes, wearing "
                                           "sunglasses, on a green background",
                                           "--steps", "10", "--out", dir + "/images"});
  ASSERT_EQ(generated.exit_code, 0) << generated.err;
  EXPECT_EQ(read_image_rgb(dir + "/images/0000.png").pixels.size(0), 64);
  const auto adherence = testing::run_cli({"eval", "adherence", "--model", model, "--detector",
                                           kWorldAssets + "/world_detector.safetensors", "--count", "2", "--steps",
                                           "5", "--json", dir + "/adherence.json"});
  ASSERT_EQ(adherence.exit_code, 0) << adherence.err;
  const nlohmann::json record = nlohmann::json::parse(std::ifstream(dir + "/adherence.json"));
  for (const auto& [name, share] : record.at("attributes").items()) {
    EXPECT_GE(share.get<double>(), 0.0) << name;
    EXPECT_LE(share.get<double>(), 1.0) << name;
  }

  // A concept learned in a few steps, scored on the ten editing prompts.
  const auto subject = testing::run_cli(
      {"world", "--out", dir + "/subject", "--identity", "3", "--held-out", "--source", "--size", "64"});
  ASSERT_EQ(subject.exit_code, 0) << subject.err;
  const auto inverted = testing::run_cli({"invert", "--model", model, "--preset", "world", "--class", "face", "--image",
                                          dir + "/subject/sample_0000.png", "--mask", dir + "/subject/sample_0000_mask.png",
                                          "--steps", "2", "--batch", "2", "--out", dir + "/concept"});
  ASSERT_EQ(inverted.exit_code, 0) << inverted.err;
  const auto scored = testing::run_cli({"eval", "concept", "--model", model, "--concept", dir + "/concept", "--detector",
                                        kWorldAssets + "/world_detector.safetensors", "--source",
                                        dir + "/subject/samples.jsonl", "--seeds", "1", "--steps", "2", "--json",
                                        dir + "/concept.json"});
  ASSERT_EQ(scored.exit_code, 0) << scored.err;
  const nlohmann::json figures = nlohmann::json::parse(std::ifstream(dir + "/concept.json"));
  EXPECT_EQ(figures.at("generations"), 10);
  for (const char* share : {"esr", "background_leakage"}) {
    EXPECT_GE(figures.at(share).get<double>(), 0.0) << share;
    EXPECT_LE(figures.at(share).get<double>(), 1.0) << share;
  }
  // On renders whose truth is known, the source face with the asked edits reads as closer to the
  // source than other faces in the same scenes.
  EXPECT_LT(figures.at("identity_distance_same_face").get<double>(),
            figures.at("identity_distance_other_faces").get<double>());
  EXPECT_NE(scored.out.find("identity_distance\t"), std::string::npos) << scored.out;
}

}  // namespace
}  // namespace singleinsert
