"""Golden for DDIM inversion: tests/data/methods/ddim_inversion.{safetensors,json} (reads toy.png).

Made with (the reference environment of ../shared/refgen, set up by tests/reference/setup_env.sh):
    GOLDEN_ENV=$SCRATCH/refenv source ../shared/refgen/env.sh
    nice $PY tests/reference/gen_ddim_inversion.py
Code that runs: diffusers v0.25.1 (1909952826ffb0609f5df172ac7948c46422614d) DDIMInverseScheduler, UNet2DConditionModel,
AutoencoderKL and VaeImageProcessor, transformers 815ea8e8 (4.36.0.dev0) CLIPTextModel / CLIPTokenizer, torch 1.13
(Debian), CPU, float32, one thread, on the tiny pipeline $GOLDEN_OUT/sd_tiny. The loop is the inversion loop of
diffusers' StableDiffusionDiffEditPipeline.invert / StableDiffusionPix2PixZeroPipeline.invert without their noise
regularisation (num_reg_steps=0), with the VAE mean instead of a sample:
    inverse = DDIMInverseScheduler.from_config(<sd_tiny scheduler config>); inverse.set_timesteps(10)
    image   = VaeImageProcessor(vae_scale_factor=2).preprocess(toy.png)        # [1,3,64,64], 2*(u8/255)-1
    z0      = vae.encode(image).latent_dist.mean * vae.config.scaling_factor  # [1,4,32,32]
    ctx     = text_encoder(tokenizer("a photo of a toy", padding="max_length", max_length=77, truncation=True))[0]
    uncond  = the same for ""
    plain : for t in inverse.timesteps: eps = unet(z, t, ctx).sample; z = inverse.step(eps, t, z).prev_sample
    guided: eps_u, eps_c = unet(cat([z, z]), t, cat([uncond, ctx])).sample.chunk(2); eps = eps_u + 3 (eps_c - eps_u)
The step is also recomputed here from the formula written into the json (asserted to match).
Deterministic: a second run writes byte-identical files."""
import hashlib
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import method_recorder as mr  # noqa: E402

TAG = "tests/reference/gen_ddim_inversion.py"
PROMPT = "a photo of a toy"
STEPS = 10
GUIDANCE = 3.0
COMMAND = ("GOLDEN_ENV=$SCRATCH/refenv source ../shared/refgen/env.sh && "
           "nice $PY tests/reference/gen_ddim_inversion.py")

FORMULA = {
    "source": "diffusers v0.25.1 src/diffusers/schedulers/scheduling_ddim_inverse.py, DDIMInverseScheduler",
    "init": "betas = linspace(beta_start**0.5, beta_end**0.5, 1000, float32)**2 (scaled_linear); "
            "alphas_cumprod = cumprod(1 - betas) (float32); "
            "initial_alpha_cumprod = 1.0 if set_alpha_to_one else alphas_cumprod[0]. "
            "set_alpha_to_zero is a deprecated alias: if given (not None) it overrides set_alpha_to_one "
            "(same meaning, despite the name). The sd_tiny config (PNDMScheduler's) has set_alpha_to_one=false, "
            "so initial_alpha_cumprod = alphas_cumprod[0] = 1 - beta_0 = 1 - 0.00085.",
    "set_timesteps": "leading spacing: step_ratio = num_train_timesteps // num_inference_steps (=100); "
                     "timesteps = arange(0, num_inference_steps) * step_ratio + steps_offset, ascending "
                     "(steps_offset = 1 here: [1, 101, ..., 901]). Trailing spacing (not this config) would be "
                     "round(arange(1000, 0, -ratio)[::-1]) - 1.",
    "step(model_output, t, sample)": "prev_timestep = t (the level the sample is moved TO); "
                                     "timestep = min(t - num_train_timesteps // num_inference_steps, "
                                     "num_train_timesteps - 1) (the level the sample is AT); "
                                     "alpha_prod_t = alphas_cumprod[timestep] if timestep >= 0 else "
                                     "initial_alpha_cumprod; alpha_prod_t_prev = alphas_cumprod[prev_timestep] "
                                     "(i.e. alphas_cumprod[t], never a fallback); beta_prod_t = 1 - alpha_prod_t; "
                                     "epsilon prediction: x0 = (sample - beta_prod_t**0.5 * eps) / alpha_prod_t**0.5 "
                                     "(clamped to +-clip_sample_range only if clip_sample, false here); "
                                     "prev_sample = alpha_prod_t_prev**0.5 * x0 + (1 - alpha_prod_t_prev)**0.5 * eps. "
                                     "No noise, no eta, no thresholding.",
    "this_run": "t=1: timestep = -99 < 0 -> alpha_prod_t = initial_alpha_cumprod = alphas_cumprod[0], "
                "alpha_prod_t_prev = alphas_cumprod[1]; t=101: alphas_cumprod[1] -> alphas_cumprod[101]; ...; "
                "t=901: alphas_cumprod[801] -> alphas_cumprod[901]. The UNet is evaluated at t (the target level), "
                "on the sample that sits at level t - 100. Because steps_offset=1 the 'from' level of step k is "
                "exactly the 'to' level of step k-1; only the first step uses the initial alpha (for "
                "steps_offset=0 the first step would be t=0: timestep=-100 -> initial alpha, to alphas_cumprod[0]).",
    "arithmetic": "alpha_prod_t, alpha_prod_t_prev are float32 0-d tensors; the powers/products are float32 torch "
                  "ops in the order written above.",
}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def step_by_formula(alphas_cumprod, initial, ratio, eps, t, sample):
    """The step of FORMULA, recomputed in float64 (a check of the formula in words, not of rounding)."""
    t = int(t)
    cur = min(t - ratio, len(alphas_cumprod) - 1)
    a_t = float(alphas_cumprod[cur]) if cur >= 0 else float(initial)
    a_n = float(alphas_cumprod[t])
    s, e = sample.double(), eps.double()
    x0 = (s - (1 - a_t) ** 0.5 * e) / a_t ** 0.5
    return a_n ** 0.5 * x0 + (1 - a_n) ** 0.5 * e, a_t, a_n


@torch.no_grad()
def main():
    torch.set_num_threads(1)
    mr.patch_slow_tokenizer_without_tokenizers()
    from PIL import Image
    from diffusers import AutoencoderKL, DDIMInverseScheduler, UNet2DConditionModel, __version__ as dv
    from diffusers.image_processor import VaeImageProcessor
    from transformers import CLIPTextModel, CLIPTokenizer

    tiny = mr.SD_TINY
    img_path = os.path.join(mr.METHODS_OUT, "toy.png")
    tok = CLIPTokenizer.from_pretrained(os.path.join(tiny, "tokenizer"))
    te = CLIPTextModel.from_pretrained(os.path.join(tiny, "text_encoder"), torch_dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(tiny, "vae"), torch_dtype=torch.float32).eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(tiny, "unet"), torch_dtype=torch.float32).eval()
    sched_cfg = DDIMInverseScheduler.load_config(os.path.join(tiny, "scheduler"))  # the PNDMScheduler's config
    inverse = DDIMInverseScheduler.from_config(sched_cfg)
    inverse.set_timesteps(STEPS)
    timesteps = inverse.timesteps.clone()

    # image -> z0 (the pipelines' VaeImageProcessor; vae_scale_factor = 2 ** (len(block_out_channels) - 1))
    vsf = 2 ** (len(vae.config.block_out_channels) - 1)
    pil = Image.open(img_path).convert("RGB")
    image = VaeImageProcessor(vae_scale_factor=vsf).preprocess(pil)
    u8 = torch.from_numpy(np.array(pil)).permute(2, 0, 1).unsqueeze(0)
    assert tuple(image.shape) == (1, 3, 64, 64) and image.dtype == torch.float32
    assert torch.equal(image, 2.0 * (u8.float() / 255.0) - 1.0)  # float32: 2*(u8/255)-1
    alt_diff = float((image - (u8.float() / 127.5 - 1.0)).abs().max())
    sf = vae.config.scaling_factor
    z0 = vae.encode(image).latent_dist.mean * sf

    def encode(p):
        ids = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return ids, te(ids)[0]
    ids_c, ctx = encode(PROMPT)
    ids_u, unc = encode("")

    ratio = inverse.config.num_train_timesteps // inverse.num_inference_steps
    ac = inverse.alphas_cumprod
    checks = {}

    def run(guided):
        z = z0.clone()
        traj, eps_all, alphas, fdiff = [z.clone()], [], [], 0.0
        emb = torch.cat([unc, ctx]) if guided else ctx
        for t in timesteps:
            zin = torch.cat([z] * 2) if guided else z
            zin = inverse.scale_model_input(zin, t)
            eps = unet(zin, t, encoder_hidden_states=emb).sample
            if guided:
                eu, ec = eps.chunk(2)
                eps = eu + GUIDANCE * (ec - eu)
            ref, a_t, a_n = step_by_formula(ac, inverse.initial_alpha_cumprod, ratio, eps, t, z)
            z = inverse.step(eps, t, z).prev_sample
            fdiff = max(fdiff, float((z.double() - ref).abs().max()))
            traj.append(z.clone())
            eps_all.append(eps)
            alphas.append((a_t, a_n))
        return torch.cat(traj), eps_all, alphas, fdiff

    plain, eps_plain, alphas, fd_p = run(False)
    guided, _, alphas_g, fd_g = run(True)
    assert alphas == alphas_g
    assert fd_p < 1e-5 and fd_g < 1e-5, (fd_p, fd_g)
    checks["formula_vs_diffusers_step_max_abs_diff"] = {"plain": fd_p, "guided": fd_g}
    # the batched [uncond, cond] UNet call equals two separate calls closely (not bit-exact in general)
    e2 = unet(torch.cat([z0] * 2), timesteps[0], encoder_hidden_states=torch.cat([unc, ctx])).sample
    checks["batched_cond_half_vs_single_call_max_abs_diff"] = float((e2[1:] - eps_plain[0]).abs().max())

    tensors = {
        "z0": z0,
        "context": ctx,
        "uncond_context": unc,
        "input_ids": ids_c.to(torch.int64),
        "uncond_input_ids": ids_u.to(torch.int64),
        "timesteps": timesteps.to(torch.int64),
        "alpha_prod_from": torch.tensor([a for a, _ in alphas], dtype=torch.float32),
        "alpha_prod_to": torch.tensor([b for _, b in alphas], dtype=torch.float32),
        "eps_first": eps_plain[0],
        "plain.trajectory": plain,
        "guided.trajectory": guided,
    }
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    st_path = os.path.join(mr.METHODS_OUT, "ddim_inversion.safetensors")
    mr.save_tensors(st_path, tensors, {"notes": "see ddim_inversion.json"}, generator=TAG)

    inputs = {os.path.relpath(img_path, mr.REPO): sha256(img_path)}
    for sub in ("scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
                "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
                "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                "vae/config.json", "vae/diffusion_pytorch_model.safetensors"):
        inputs["<GOLDEN_OUT>/sd_tiny/" + sub] = sha256(os.path.join(tiny, sub))

    def unpadded(ids):
        ids = ids[0].tolist()
        return ids[: ids.index(tok.eos_token_id) + 1]

    def maxabs(x):
        return float(x.abs().max())
    summary = {
        "generator": TAG,
        "command": COMMAND,
        "versions": {"diffusers": "%s (%s)" % (dv, mr.COMMITS["diffusers"]), "torch": mr.COMMITS["torch"],
                     **{k: mr.COMMITS[k] for k in ("transformers", "huggingface_hub", "safetensors")}},
        "model": "<GOLDEN_OUT>/sd_tiny (text hidden 32, VAE /2 with 4 latent channels, UNet cross-attention 32), "
                 "float32 CPU, one thread",
        "inputs_sha256": inputs,
        "image": {"file": "toy.png", "preprocess": "VaeImageProcessor(vae_scale_factor=%d).preprocess: "
                  "float32 u8/255, then 2*x-1, HWC->CHW, [1,3,64,64] (64 is a multiple of %d: no resize)" % (vsf, vsf),
                  "max_abs_diff_vs_u8_over_127.5_minus_1": alt_diff},
        "z0": "vae.encode(image).latent_dist.mean * scaling_factor (%r)" % sf,
        "prompt": PROMPT, "uncond_prompt": "",
        "tokenizer_call": "tokenizer(p, padding='max_length', max_length=tokenizer.model_max_length (%d), "
                          "truncation=True); text_encoder(input_ids)[0] (no attention mask)" % tok.model_max_length,
        "input_ids_unpadded": unpadded(ids_c), "uncond_input_ids_unpadded": unpadded(ids_u),
        "input_ids_padding": "then 49407 (<|endoftext|>, the pad token) up to 77",
        "num_inference_steps": STEPS,
        "timesteps": [int(t) for t in timesteps],
        "source_scheduler_config": {k: v for k, v in sched_cfg.items()},
        "inverse_scheduler_config": {k: v for k, v in dict(inverse.config).items()},
        "initial_alpha_cumprod": float(inverse.initial_alpha_cumprod),
        "per_step": [{"t": int(t), "from_level": int(t) - ratio, "alpha_prod_from": a, "alpha_prod_to": b}
                     for t, (a, b) in zip(timesteps, alphas)],
        "formula": FORMULA,
        "cases": {
            "plain": "eps = unet(z, t, encoder_hidden_states=context).sample; z = inverse.step(eps, t, z).prev_sample",
            "guided": "eps_u, eps_c = unet(cat([z, z]), t, encoder_hidden_states=cat([uncond_context, context]))"
                      ".sample.chunk(2); eps = eps_u + %r * (eps_c - eps_u); z = inverse.step(eps, t, z).prev_sample"
                      % GUIDANCE,
            "guidance_scale": GUIDANCE,
            "not_done": "DiffEdit/Pix2Pix-Zero's optional noise regularisation (num_reg_steps = 0); z0 is the "
                        "latent mean, not a sample",
        },
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                    for k, v in tensors.items()},
        "trajectory_layout": "[num_inference_steps + 1, C, h, w]: index 0 = z0, index k = after k inverse steps "
                             "(the sample at noise level timesteps[k-1])",
        "max_abs": {"z0": maxabs(z0), "plain.trajectory": maxabs(plain), "guided.trajectory": maxabs(guided),
                    "plain.final": maxabs(plain[-1]), "guided.final": maxabs(guided[-1]),
                    "eps_first": maxabs(eps_plain[0])},
        "checks": checks,
    }
    mr.write_json(os.path.join(mr.METHODS_OUT, "ddim_inversion.json"), summary)
    print(json.dumps({"timesteps": summary["timesteps"], "max_abs": summary["max_abs"], "checks": checks,
                      "bytes": os.path.getsize(st_path)}, indent=1))


if __name__ == "__main__":
    main()
