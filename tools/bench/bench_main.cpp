// singleinsert-bench: per-stage timings of the Stable Diffusion pieces singleinsert runs, on
// random weights of the full SD v1.5 architecture (no files needed) or on a model folder.
//
//   singleinsert-bench [--scenario NAME ...] [--arch sd15|default] [--model DIR] [--device cpu|cuda]
//                      [--dtype fp32|bf16|fp16] [--resolution PX] [--batch N] [--steps N]
//                      [--warmup N] [--repeats N] [--sampler NAME] [--guidance G]
//                      [--profile TRACE.json] [--json]
//
// Each scenario reports the median and spread over --repeats timed runs (after --warmup runs),
// iterations per second, the process's peak memory, and achieved TFLOP/s from the FLOPs its
// matrix products, convolutions and attention perform (counted from their shapes).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/version.h>
#ifdef SINGLEINSERT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "singleinsert/core/error.h"
#include "singleinsert/core/flop_counter.h"
#include "singleinsert/core/logging.h"
#include "singleinsert/core/random.h"
#include "singleinsert/core/runtime.h"
#include "singleinsert/core/torch_compat.h"
#include "singleinsert/core/state_dict.h"
#include "singleinsert/pipeline/default_model.h"
#include "singleinsert/pipeline/memory_estimate.h"
#include "singleinsert/pipeline/model_bundle.h"
#include "singleinsert/pipeline/prompt_encoding.h"
#include "singleinsert/pipeline/concepts.h"
#include "singleinsert/pipeline/text_to_image.h"
#include "singleinsert/training/trainer.h"

namespace fs = std::filesystem;
using namespace singleinsert;

namespace {

struct BenchOptions {
  std::vector<std::string> scenarios;
  std::string arch = "sd15";
  std::string model;
  std::string device = "cpu";
  std::string dtype = "fp32";
  int resolution = 512;
  int batch = 0;  // 0: the scenario's default
  int steps = 50;
  int warmup = 1;
  int repeats = 5;
  std::string sampler = "ddim";
  double guidance = 7.5;
  std::string profile;  // a Chrome trace of the timed runs' operators
  bool json = false;
  bool tf32 = true;
};

struct Scenario {
  std::string description;
  int default_batch;
  // Prepares inputs once and returns the timed body.
  std::function<std::function<void()>(ModelBundle&, const BenchOptions&, int batch)> prepare;
  int resolution = 0;  // fixed size in pixels; 0: --resolution
};

void synchronize(const c10::Device& device) {
  // A tiny copy back to the host waits for every queued kernel on that device.
  if (!device.is_cpu()) at::zeros({1}, at::TensorOptions().device(device)).cpu();
}

// On Linux, writing 5 to clear_refs resets the peak RSS (VmHWM), so each scenario reports its own.
void reset_peak_memory(const c10::Device& device) {
#ifdef SINGLEINSERT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
  if (device.is_cpu()) std::ofstream("/proc/self/clear_refs") << "5";
}

double status_field_mb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == field + ":") {
      double kib = 0;
      status >> kib;
      return kib / 1024.0;
    }
    status.ignore(1 << 20, '\n');
  }
  return -1;
}

double peak_memory_mb(const c10::Device& device) {
#ifdef SINGLEINSERT_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);  // aggregate over pools
  }
#else
  (void)device;
#endif
  const double peak = status_field_mb("VmHWM");
  if (peak >= 0) return peak;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Training scenarios time individual optimisation steps of a real run (warm-up steps excluded).
struct TrainingScenario {
  std::string description;
  int stage;  // 1 or 2; 0 = the whole schedule (stage I then stage II)
  int default_batch;
};

std::map<std::string, TrainingScenario> training_scenarios() {
  return {{"stage1_step", {"one stage I step (encoder + frozen UNet, forward and backward)", 1, 16}},
          {"stage2_step", {"one stage II step (encoder + LoRA)", 2, 4}},
          {"train", {"stage I (50 steps, batch 16) then stage II (100 steps, batch 4)", 0, 0}}};
}

// Runs the trainer on a synthetic source image and reports per-step milliseconds.
std::vector<double> time_training(ModelBundle& bundle, const BenchOptions& o, int stage, int batch, int steps,
                                  double* total_ms) {
  TrainingConfig config;
  config.resolution = o.resolution;
  config.checkpoint_every = 0;
  if (stage == 0) {
    if (o.batch > 0) config.stage1.batch = config.stage2.batch = o.batch;
  } else {
    StageConfig& s = stage == 1 ? config.stage1 : config.stage2;
    s.steps = steps;
    s.batch = batch;
  }
  const int64_t latent = o.resolution / bundle.vae_scale_factor();
  at::Generator generator = make_cpu_generator(0);
  PreparedSource source;
  source.pixels = at::rand({1, 3, o.resolution, o.resolution}, generator) * 2 - 1;
  source.cond_pixels = at::rand({1, 3, config.encoder.image_size, config.encoder.image_size}, generator) * 2 - 1;
  source.mask_latent = at::zeros({1, 1, latent, latent});
  source.mask_latent.narrow(2, latent / 4, latent / 2).narrow(3, latent / 4, latent / 2).fill_(1.0);
  ClipVisionConfig encoder_config = config.encoder;
  encoder_config.projection_dim = bundle.text_encoder->config().encoder.hidden_size;
  ClipVisionModel encoder(encoder_config);
  encoder->to(bundle.execution.device);
  at::Generator device_generator = make_device_generator(bundle.execution.device, 0);
  encoder->init_like_openai(device_generator);
  bundle.tokenizer.add_token("*");
  bundle.text_encoder->resize_token_embeddings(bundle.tokenizer.vocab_size());
  SingleInsertTrainer trainer(base_model(bundle), encoder, config, source,
                              tokenize_prompts(bundle.tokenizer, {"* face"}), tokenize_prompts(bundle.tokenizer, {"face"}));
  std::vector<double> step_ms;
  auto last = std::chrono::steady_clock::now();
  TrainingCallbacks callbacks;
  callbacks.on_step = [&](const StepRecord&) {
    synchronize(bundle.execution.device);
    const auto now = std::chrono::steady_clock::now();
    step_ms.push_back(std::chrono::duration<double, std::milli>(now - last).count());
    last = now;
  };
  const auto start = std::chrono::steady_clock::now();
  if (stage == 0) {
    trainer.run_stage(1, callbacks);
    trainer.run_stage(2, callbacks);
  } else {
    trainer.run_stage(stage, callbacks);
  }
  *total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return step_ms;
}

at::TensorOptions model_options(const ModelBundle& bundle) {
  return at::TensorOptions().device(bundle.execution.device).dtype(bundle.execution.dtype);
}

std::map<std::string, Scenario> scenarios() {
  std::map<std::string, Scenario> all;
  all["text_encode"] = {"CLIP text encoder on 77 tokens", 2, [](ModelBundle& bundle, const BenchOptions&, int batch) {
    const at::Tensor ids = tokenize_prompts(bundle.tokenizer, std::vector<std::string>(batch, "a photo of a face"))
                               .to(bundle.execution.device);
    return std::function<void()>([&bundle, ids] { bundle.text_encoder->forward(ids); });
  }};
  all["unet_forward"] = {"one UNet call (batch 2 = one guided step)", 2,
                         [](ModelBundle& bundle, const BenchOptions& o, int batch) {
    const int64_t side = o.resolution / bundle.vae_scale_factor();
    const auto options = model_options(bundle);
    const at::Tensor sample = at::randn({batch, bundle.unet->config().in_channels, side, side}, options);
    const at::Tensor context = at::randn({batch, 77, bundle.unet->config().cross_attention_dim}, options);
    const at::Tensor t = at::full({batch}, 500, at::TensorOptions().dtype(at::kLong).device(bundle.execution.device));
    return std::function<void()>([&bundle, sample, context, t] { bundle.unet->forward(sample, t, context); });
  }};
  all["vae_encode"] = {"VAE encoder (image to latent posterior)", 1,
                       [](ModelBundle& bundle, const BenchOptions& o, int batch) {
    const auto options = at::TensorOptions().device(bundle.execution.device)
                             .dtype(bundle.vae->encoder->conv_in->weight.scalar_type());
    const at::Tensor image = at::rand({batch, 3, o.resolution, o.resolution}, options) * 2 - 1;
    return std::function<void()>([&bundle, image] { bundle.vae->encode(image); });
  }};
  all["vae_decode"] = {"VAE decoder (latent to image)", 1, [](ModelBundle& bundle, const BenchOptions& o, int batch) {
    const int64_t side = o.resolution / bundle.vae_scale_factor();
    const auto options = at::TensorOptions().device(bundle.execution.device)
                             .dtype(bundle.vae->decoder->conv_in->weight.scalar_type());
    const at::Tensor latents = at::randn({batch, bundle.vae->config().latent_channels, side, side}, options);
    return std::function<void()>([&bundle, latents] { bundle.vae->decode(latents); });
  }};
  const auto sample = [](ModelBundle& bundle, const BenchOptions& o, int batch) {
    GenerateOptions options;
    options.prompts = std::vector<std::string>(batch, "a photo of a face wearing sunglasses");
    options.steps = o.steps;
    options.sampler = o.sampler;
    options.guidance_scale = o.guidance;
    options.width = options.height = o.resolution;
    return std::function<void()>([&bundle, options] { generate(bundle, options); });
  };
  all["sample"] = {"text to decoded image: --sampler (DDIM), --steps steps, --guidance (7.5)", 1, sample};
  // The large sizes where attention's score matrix, not the weights, sets the peak.
  all["sample_768"] = {"sample at 768x768", 1, sample, 768};
  all["sample_1024"] = {"sample at 1024x1024", 1, sample, 1024};
  return all;
}

int64_t resident_weight_bytes(const ModelBundle& bundle) {
  int64_t bytes = 0;
  for (const torch::nn::Module* module : std::initializer_list<const torch::nn::Module*>{
           bundle.text_encoder.get(), bundle.unet.get(), bundle.vae.get()})
    for (const auto& [name, tensor] : module_tensors(*module)) bytes += tensor.numel() * tensor.element_size();
  return bytes;
}

// The generation estimate for what a scenario runs (the weights are already resident, so the
// check adds them back to what is available).
MemoryEstimate estimate_scenario_memory(const ModelBundle& bundle, const std::string& name, int batch, int resolution) {
  GenerationShape shape;
  shape.width = shape.height = resolution;
  shape.dtype = bundle.execution.dtype;
  shape.images = name == "unet_forward" ? std::max(1, batch / 2) : batch;
  shape.guided = name == "unet_forward" ? batch > 1 : true;
  MemoryEstimate estimate = estimate_generation_memory(bundle.unet->config(), bundle.vae->config(), shape,
                                                       resident_weight_bytes(bundle));
  if (name == "unet_forward") estimate.vae_decode = 0;
  if (name == "vae_decode" || name == "vae_encode" || name == "text_encode") estimate.unet = 0;
  if (name == "text_encode") estimate.vae_decode = 0;
  return estimate;
}

BenchOptions parse(int argc, char** argv) {
  BenchOptions o;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw Error(fmt::format("{} needs a value", argv[i]));
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--scenario") o.scenarios.push_back(value(i));
    else if (arg == "--arch") o.arch = value(i);
    else if (arg == "--model") o.model = value(i);
    else if (arg == "--device") o.device = value(i);
    else if (arg == "--dtype") o.dtype = value(i);
    else if (arg == "--resolution") o.resolution = std::stoi(value(i));
    else if (arg == "--batch") o.batch = std::stoi(value(i));
    else if (arg == "--steps") o.steps = std::stoi(value(i));
    else if (arg == "--warmup") o.warmup = std::stoi(value(i));
    else if (arg == "--repeats") o.repeats = std::stoi(value(i));
    else if (arg == "--sampler") o.sampler = value(i);
    else if (arg == "--guidance") o.guidance = std::stod(value(i));
    else if (arg == "--profile") o.profile = value(i);
    else if (arg == "--json") o.json = true;
    else if (arg == "--no-tf32") o.tf32 = false;
    else if (arg == "--help" || arg == "-h") {
      std::printf("usage: singleinsert-bench [--scenario NAME ...] [--arch sd15|default] [--model DIR]\n"
                  "  [--device cpu|cuda] [--dtype fp32|bf16|fp16] [--resolution PX] [--batch N] [--steps N]\n"
                  "  [--warmup N] [--repeats N] [--sampler NAME] [--guidance G] [--profile TRACE.json]\n"
                  "  [--json] [--no-tf32]\nscenarios:");
      for (const auto& [name, scenario] : scenarios()) std::printf(" %s", name.c_str());
      for (const auto& [name, scenario] : training_scenarios()) std::printf(" %s", name.c_str());
      std::printf("\n");
      std::exit(0);
    } else throw Error(fmt::format("unknown argument '{}' (see --help)", arg));
  }
  if (o.scenarios.empty()) o.scenarios = {"text_encode", "unet_forward", "vae_encode", "vae_decode"};
  if (o.repeats < 1 || o.warmup < 0) throw Error("--repeats must be at least 1 and --warmup at least 0");
  return o;
}

int run(int argc, char** argv) {
  init_logging(LogLevel::kWarn);
  const RuntimeInfo runtime = configure_runtime();
  const BenchOptions options = parse(argc, argv);
  const ExecutionOptions execution = make_execution_options(options.device, options.dtype);
  compat::allow_tf32(options.tf32);
  const auto all = scenarios();
  const auto training = training_scenarios();
  for (const auto& name : options.scenarios)
    if (!all.count(name) && !training.count(name)) throw Error(fmt::format("unknown scenario '{}' (see --help)", name));

  const auto load_start = std::chrono::steady_clock::now();
  std::shared_ptr<ModelBundle> bundle;
  const fs::path scratch = fs::temp_directory_path() / fmt::format("singleinsert-bench-{}", ::getpid());
  if (!options.model.empty()) {
    bundle = load_model_bundle(options.model, execution);
  } else {
    if (options.arch != "sd15" && options.arch != "default") throw Error("--arch must be sd15 or default");
    bundle = random_model_bundle(options.arch == "sd15" ? Architecture::kSd15 : Architecture::kDefault, execution,
                                 scratch.string());
  }
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  nlohmann::json report = {{"model", options.model.empty() ? "random:" + options.arch : options.model},
                           {"device", execution.device.str()}, {"dtype", dtype_name(execution.dtype)},
                           {"resolution", options.resolution}, {"threads", runtime.threads},
                           {"allocator", runtime.allocator}, {"torch", TORCH_VERSION},
                           {"load_seconds", load_seconds}, {"resident_after_load_mb", status_field_mb("VmRSS")},
                           {"scenarios", nlohmann::json::array()}};
  if (!options.json)
    std::printf("model %s on %s (%s), %d px, %d threads, %s allocator, LibTorch %s, %.0f MB resident after load\n",
                report["model"].get<std::string>().c_str(), execution.device.str().c_str(),
                dtype_name(execution.dtype).c_str(), options.resolution, runtime.threads, runtime.allocator.c_str(),
                TORCH_VERSION, report["resident_after_load_mb"].get<double>());

  for (const auto& name : options.scenarios) {
    reset_peak_memory(execution.device);
    if (training.count(name)) {
      const TrainingScenario& scenario = training.at(name);
      const int batch = options.batch > 0 ? options.batch : scenario.default_batch;
      double total_ms = 0;
      flops::start();
      std::vector<double> ms = time_training(*bundle, options, scenario.stage, batch, options.warmup + options.repeats,
                                             &total_ms);
      const int64_t flop_count = flops::stop();
      const double per_step_flops = static_cast<double>(flop_count) / static_cast<double>(ms.size());
      if (scenario.stage != 0) ms.erase(ms.begin(), ms.begin() + std::min<size_t>(options.warmup, ms.size()));
      std::vector<double> sorted = ms;
      std::sort(sorted.begin(), sorted.end());
      const double median = scenario.stage == 0 ? total_ms : sorted[sorted.size() / 2];
      const nlohmann::json row = {{"scenario", name},
                                  {"batch", batch},
                                  {"median_ms", median},
                                  {"min_ms", scenario.stage == 0 ? total_ms : sorted.front()},
                                  {"max_ms", scenario.stage == 0 ? total_ms : sorted.back()},
                                  {"repeats", scenario.stage == 0 ? 1 : static_cast<int>(ms.size())},
                                  {"it_per_s", 1000.0 / (scenario.stage == 0 ? total_ms / static_cast<double>(ms.size()) : median)},
                                  {"peak_memory_mb", peak_memory_mb(execution.device)},
                                  {"memory_kind", execution.device.is_cpu() ? "cpu peak RSS" : "cuda peak allocated"},
                                  {"gflop", scenario.stage == 0 ? static_cast<double>(flop_count) / 1e9 : per_step_flops / 1e9},
                                  {"tflop_per_s", scenario.stage == 0 ? static_cast<double>(flop_count) / (total_ms / 1000.0) / 1e12
                                                                      : per_step_flops / (median / 1000.0) / 1e12},
                                  {"note", "forward FLOPs only (backward is about twice more)"}};
      report["scenarios"].push_back(row);
      if (!options.json)
        std::printf("%-13s batch %d  median %9.1f ms  [%.1f .. %.1f]  %7.3f it/s  %7.0f MB peak  %8.1f GFLOP fwd  %.3f TFLOP/s fwd\n",
                    name.c_str(), batch, median, row["min_ms"].get<double>(), row["max_ms"].get<double>(),
                    row["it_per_s"].get<double>(), row["peak_memory_mb"].get<double>(), row["gflop"].get<double>(),
                    row["tflop_per_s"].get<double>());
      continue;
    }
    at::NoGradGuard no_grad;
    const Scenario& scenario = all.at(name);
    const int batch = options.batch > 0 ? options.batch : scenario.default_batch;
    BenchOptions sized = options;
    if (scenario.resolution > 0) sized.resolution = scenario.resolution;
    const MemoryEstimate estimate = estimate_scenario_memory(*bundle, name, batch, sized.resolution);
    if (execution.device.is_cpu())
      require_memory(estimate, available_memory_bytes() + resident_weight_bytes(*bundle),
                     fmt::format("scenario {} at {} px, batch {}", name, sized.resolution, batch),
                     "use a smaller --resolution or --batch");
    const auto body = scenario.prepare(*bundle, sized, batch);
    flops::start();
    body();  // the first run doubles as warm-up and FLOP count
    synchronize(execution.device);
    const int64_t flop_count = flops::stop();
    for (int i = 1; i < options.warmup; ++i) body();
    std::vector<double> ms;
    std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
    if (!options.profile.empty()) profile = std::make_unique<torch::autograd::profiler::RecordProfile>(options.profile);
    for (int i = 0; i < options.repeats; ++i) {
      synchronize(execution.device);
      const auto start = std::chrono::steady_clock::now();
      body();
      synchronize(execution.device);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    profile.reset();
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    const nlohmann::json row = {{"scenario", name},
                                {"batch", batch},
                                {"resolution", sized.resolution},
                                {"median_ms", median},
                                {"min_ms", ms.front()},
                                {"max_ms", ms.back()},
                                {"repeats", options.repeats},
                                {"it_per_s", 1000.0 / median},
                                {"peak_memory_mb", peak_memory_mb(execution.device)},
                                {"memory_kind", execution.device.is_cpu() ? "cpu peak RSS" : "cuda peak allocated"},
                                {"estimated_peak_mb", static_cast<double>(estimate.peak()) / (1024.0 * 1024.0)},
                                {"gflop", static_cast<double>(flop_count) / 1e9},
                                {"tflop_per_s", static_cast<double>(flop_count) / (median / 1000.0) / 1e12}};
    report["scenarios"].push_back(row);
    if (!options.json)
      std::printf("%-13s batch %d  median %9.1f ms  [%.1f .. %.1f]  %7.3f it/s  %7.0f MB peak (%.0f estimated)  %8.1f GFLOP  %.3f TFLOP/s\n",
                  name.c_str(), batch, median, ms.front(), ms.back(), 1000.0 / median,
                  row["peak_memory_mb"].get<double>(), row["estimated_peak_mb"].get<double>(), row["gflop"].get<double>(),
                  row["tflop_per_s"].get<double>());
  }
  if (options.json) std::printf("%s\n", report.dump(2).c_str());
  std::error_code ignored;
  fs::remove_all(scratch, ignored);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::string message = e.what();
    message = message.substr(0, message.find('\n'));
    std::fprintf(stderr, "error: %s\n", message.c_str());
    return 1;
  }
}
