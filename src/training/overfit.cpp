#include "singleinsert/training/overfit.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/random.h"
#include "singleinsert/training/adamw.h"

namespace singleinsert {

OverfitResult overfit_unet(BaseModel base, const at::Tensor& pixels, const at::Tensor& caption_ids,
                           const at::Tensor& empty_ids, const OverfitOptions& options,
                           const ProgressCallback& progress) {
  if (options.unconditional_share < 0 || options.unconditional_share > 1)
    throw Error("overfit: the unconditional share must be within [0, 1]");
  const auto start = std::chrono::steady_clock::now();
  const at::Device device = base.device;
  at::Tensor latents, context;
  {
    at::NoGradGuard no_grad;
    const VaePosterior posterior = base.vae->encode(pixels.to(device));
    // The posterior's mean, not a sample of it each step: a ceiling asks the UNet to redraw the
    // one latent that decodes to the source, not the spread of latents around it.
    latents = (posterior.mean.to(at::kFloat) * base.vae->config().scaling_factor)
                  .expand({options.batch, -1, -1, -1})
                  .contiguous();
    // Rows [0, conditioned) see the caption, the rest the empty prompt.
    const auto conditioned = static_cast<int64_t>(std::lround(options.batch * (1.0 - options.unconditional_share)));
    auto encode = [&](const at::Tensor& ids, int64_t rows) {
      return base.text_encoder->forward(ids.to(device)).last_hidden_state.to(at::kFloat).expand({rows, -1, -1});
    };
    context = at::cat({encode(caption_ids, conditioned), encode(empty_ids, options.batch - conditioned)}).contiguous();
  }
  const NoiseSchedule schedule(base.schedule);
  const at::Tensor alphas_cumprod = schedule.alphas_cumprod.to(device);
  std::vector<at::Tensor> parameters = base.unet->parameters();
  for (auto& p : parameters) p.set_requires_grad(true);
  base.unet->train();
  AdamW optimizer(parameters, {options.lr, 0.9, 0.999, 1e-8, 0.0});
  const std::vector<int64_t> shape = latents.sizes().vec();
  std::vector<double> losses;
  for (int step = 0; step < options.steps; ++step) {
    at::Generator generator = make_cpu_generator(step_seed(options.seed, 3, step));
    const at::Tensor noise = randn_like_torch(shape, generator, device);
    const at::Tensor timesteps =
        at::randint(0, schedule.num_train_timesteps(), {options.batch}, generator, at::kLong).to(device);
    const at::Tensor a = alphas_cumprod.index_select(0, timesteps).view({options.batch, 1, 1, 1});
    const at::Tensor noisy = a.sqrt() * latents + (1.0 - a).sqrt() * noise;
    const at::Tensor loss = (base.unet->forward(noisy, timesteps, context) - noise).square().mean();
    losses.push_back(loss.item<double>());
    loss.backward();
    clip_grad_norm(parameters, 1.0);
    optimizer.step();
    optimizer.zero_grad();
    if (progress)
      progress({"overfit", step + 1, options.steps,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                {{"loss", losses.back()}}});
  }
  base.unet->eval();
  for (auto& p : parameters) p.set_requires_grad(false);
  OverfitResult result;
  const size_t tenth = std::max<size_t>(1, losses.size() / 10);
  for (size_t i = 0; i < tenth && i < losses.size(); ++i) {
    result.loss_first += losses[i] / static_cast<double>(tenth);
    result.loss_last += losses[losses.size() - 1 - i] / static_cast<double>(tenth);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace singleinsert
