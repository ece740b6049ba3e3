#include "singleinsert/training/step_loop.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "singleinsert/core/interrupt.h"
#include "singleinsert/core/random.h"

namespace singleinsert {

double StepRecord::term(const std::string& name) const {
  for (const auto& [key, value] : terms)
    if (key == name) return value;
  return 0.0;
}

const std::vector<std::string>& StepSettings::keys() {
  static const std::vector<std::string> names = {"beta1",         "beta2", "adam_eps",
                                                 "weight_decay",  "max_grad_norm", "seed",
                                                 "checkpoint_every"};
  return names;
}

void StepSettings::read(const JsonConfig& json) {
  beta1 = json.get_double("beta1", beta1);
  beta2 = json.get_double("beta2", beta2);
  adam_eps = json.get_double("adam_eps", adam_eps);
  weight_decay = json.get_double("weight_decay", weight_decay);
  max_grad_norm = json.get_double("max_grad_norm", max_grad_norm);
  seed = json.get_uint64("seed", seed);
  checkpoint_every = json.get_int("checkpoint_every", checkpoint_every);
}

void StepSettings::write(nlohmann::json& json) const {
  json["beta1"] = beta1;
  json["beta2"] = beta2;
  json["adam_eps"] = adam_eps;
  json["weight_decay"] = weight_decay;
  json["max_grad_norm"] = max_grad_norm;
  json["seed"] = seed;
  json["checkpoint_every"] = checkpoint_every;
}

void StepSettings::validate() const {
  if (!(max_grad_norm >= 0)) throw Error("max_grad_norm must not be negative");
  if (checkpoint_every < 0) throw Error("--checkpoint-every must not be negative");
}

StepLoopOptions StepSettings::options(int stage, int steps, double lr, const std::string& label) const {
  StepLoopOptions options;
  options.stage = stage;
  options.steps = steps;
  options.adam = {lr, beta1, beta2, adam_eps, weight_decay};
  options.max_grad_norm = max_grad_norm;
  options.seed = seed;
  options.checkpoint_every = checkpoint_every;
  options.label = label;
  return options;
}

std::vector<StepRecord> run_steps(TrainingMethod& method, const StepLoopOptions& options,
                                  const TrainingCallbacks& callbacks, const TrainingState* resume) {
  std::vector<at::Tensor> parameters = method.parameters();
  for (auto& p : parameters) p.set_requires_grad(true);
  AdamW optimizer(parameters, options.adam);

  std::vector<StepRecord> history;
  int start_step = 0;
  if (resume) {
    if (resume->stage != options.stage)
      throw Error(fmt::format("the checkpoint is from stage {}, not {}", resume->stage, options.stage));
    method.load_state(*resume);
    optimizer.load_state(std::map<std::string, at::Tensor>(resume->optimizer.begin(), resume->optimizer.end()),
                         "checkpoint optimizer");
    start_step = resume->step;
    history = resume->history;
  }
  auto snapshot = [&](int step) {
    TrainingState state;
    state.stage = options.stage;
    state.step = step;
    method.save_state(state);
    state.optimizer = optimizer.state();
    state.history = history;
    return state;
  };

  const std::vector<std::string> shown = method.progress_terms();
  const auto start = std::chrono::steady_clock::now();
  for (int step = start_step; step < options.steps; ++step) {
    at::Generator generator = make_cpu_generator(step_seed(options.seed, options.stage, step));
    const LossTerms losses = method.loss(step, generator);
    const double loss = losses.total.item<double>();
    if (!std::isfinite(loss))
      throw TrainingDiverged(fmt::format("the loss became {} at {} step {}", std::isnan(loss) ? "NaN" : "infinite",
                                         options.label, step + 1),
                             options.stage, step + 1);
    losses.total.backward();
    StepRecord record;
    record.stage = options.stage;
    record.step = step + 1;
    record.loss = loss;
    for (const auto& [name, value] : losses.terms) record.terms.emplace_back(name, value.item<double>());
    record.grad_norm = options.max_grad_norm > 0 ? clip_grad_norm(parameters, options.max_grad_norm) : grad_norm(parameters);
    record.lr = options.adam.lr;
    optimizer.step();
    optimizer.zero_grad();
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    history.push_back(record);
    if (callbacks.on_step) callbacks.on_step(record);
    if (callbacks.progress) {
      std::map<std::string, double> values = {{"loss", record.loss}};
      for (const auto& name : shown) values[name] = record.term(name);
      callbacks.progress({options.label, record.step, options.steps, record.seconds, values});
    }
    const bool periodic = options.checkpoint_every > 0 && record.step % options.checkpoint_every == 0 &&
                          record.step < options.steps;
    if (interrupt_requested()) {
      if (callbacks.on_checkpoint) callbacks.on_checkpoint(snapshot(record.step));
      throw TrainingInterrupted(options.stage, record.step);
    }
    if (periodic && callbacks.on_checkpoint) callbacks.on_checkpoint(snapshot(record.step));
  }
  for (auto& p : parameters) p.set_requires_grad(false);
  return history;
}

}  // namespace singleinsert
