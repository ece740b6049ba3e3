"""Golden for DreamBooth-LoRA training with prior preservation: tests/data/methods/dreambooth_lora.{safetensors,json}
(+ class_0.png, class_1.png; the instance image is the existing toy.png).

Made with (the reference environment of ../shared/refgen, set up by tests/reference/setup_env.sh, which since this
generator also extracts peft v0.7.0 and diffusers v0.25.1 examples/dreambooth):
    GOLDEN_ENV=$SCRATCH/refenv source ../shared/refgen/env.sh
    $PY tests/reference/gen_dreambooth_lora.py
Code that runs: the official diffusers v0.25.1 (1909952826ffb0609f5df172ac7948c46422614d)
examples/dreambooth/train_dreambooth_lora.py, imported from $GOLDEN_SRC/diffusers_examples and its main() run on the
tiny pipeline $GOLDEN_OUT/sd_tiny with argv
    --instance_prompt "a photo of sks toy" --resolution 64 --train_batch_size 1 --max_train_steps 3
    --learning_rate 1e-3 --rank 4 --train_text_encoder --seed 20240603
    --with_prior_preservation --class_prompt "a photo of toy" --num_class_images 2 --prior_loss_weight 1.0
    (+ --instance_data_dir / --class_data_dir / --output_dir in a fixed scratch folder; everything else: the
    script's defaults),
and a second time with the same argv + --max_grad_norm 0.02 (clipping active; its results are the clip.* tensors),
with peft v0.7.0 (2665f80a1738b315dce42da8f1a9c7fe793aa9ca, the version examples/dreambooth/requirements.txt pins),
diffusers 0.25.1 (its PEFT backend), transformers 815ea8e8 (4.36.0.dev0), accelerate v0.25.0 (d08c23c2),
huggingface_hub v0.20.3, torch 1.13 (Debian), CPU, float32, one thread.

What was changed: nothing in the script. The recorder below wraps (never replaces) the functions that draw random
numbers or see the batch, the LoRA weights, the loss, the gradients and the clipping, and copies what went through.
One thing is put in a fixed order: DreamBoothDataset lists its folders with Path.iterdir() (file-system order);
the generator's wrapper of DreamBoothDataset.__init__ sorts the two lists by name after the original __init__ (the
json records whether that changed anything on the machine that made the files). The class folder already holds
--num_class_images images (class_0.png, class_1.png, written by this generator), so the script does not sample
class images with the pipeline. Independent checks (asserted, written to the json): a float64 AdamW with the
script's clipping on the recorded gradients reproduces the weights after every step; the random draws replay
bitwise from the seed (LoRA init included); loss == instance + prior_loss_weight * prior bitwise; the file the
script saved equals the final weights.
Deterministic: a second run writes byte-identical files."""
import hashlib
import json
import math
import os
import random as _random
import shutil
import sys
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import method_recorder as mr  # noqa: E402

SCRIPT = os.path.join(mr.SRC, "diffusers_examples", "examples", "dreambooth", "train_dreambooth_lora.py")
S, B, RES, RANK = 3, 1, 64, 4
SEED = 20240603
LR_ARG = 1e-3
INSTANCE_PROMPT, CLASS_PROMPT = "a photo of sks toy", "a photo of toy"
NUM_CLASS, PRIOR_W = 2, 1.0
TAG = "tests/reference/gen_dreambooth_lora.py"
PEFT_COMMIT = "v0.7.0 = 2665f80a1738b315dce42da8f1a9c7fe793aa9ca"


def class_image(path, k):
    """Deterministic 64x64 RGB class image k (no RNG): two different smooth patterns with a sharp shape."""
    n = 64
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1.0)
    if k == 0:
        r = 0.3 + 0.6 * yy
        g = 0.45 + 0.35 * np.cos(6.0 * xx)
        b = 0.2 + 0.5 * xx * yy
        sq = (np.abs(xx - 0.35) < 0.15) & (np.abs(yy - 0.6) < 0.2)
        r[sq], g[sq], b[sq] = 0.85, 0.15, 0.3
    else:
        r = 0.5 + 0.4 * np.sin(4.0 * yy + 2.0 * xx)
        g = 0.2 + 0.3 * (xx + yy)
        b = 0.8 - 0.6 * xx
        ring = np.abs(np.hypot(xx - 0.55, yy - 0.45) - 0.25) < 0.05
        r[ring], g[ring], b[ring] = 0.1, 0.9, 0.6
    img = np.clip(np.round(np.stack([r, g, b], -1) * 255), 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(path, optimize=False)
    return path


def sd_name(name):
    """PEFT parameter name -> get_peft_model_state_dict name (the adapter name 'default' dropped)."""
    return name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def lora_params(model, prefix):
    out = OrderedDict()
    for n, p in model.named_parameters():
        if "lora_" in n:
            out[prefix + sd_name(n)] = p
    return out


class DreamBoothLoraRecorder:
    def __init__(self, script_file, db):
        self.script_file = os.path.abspath(script_file)
        self.db = db
        self.r = {k: [] for k in ("pixel_values", "vae_noise", "latents", "noise", "timesteps", "input_ids",
                                  "encoder_hidden_states", "noisy_latents", "unet_timesteps", "model_pred",
                                  "mse", "loss", "grad", "total_norm", "clip_args", "lr", "weights_at_step_start",
                                  "index")}
        self.lora_init = OrderedDict()
        self.lora_modules = []        # (prefix, module path, in, out) in creation order
        self.rng = {}
        self.models = {}
        self.training = False
        self.weights_final = None
        self.paths_resorted = {}
        self.dataset_paths = {}
        self._undo = []

    def _from_script(self, depth=2):
        return os.path.abspath(sys._getframe(depth).f_code.co_filename) == self.script_file

    def _patch(self, obj, name, new):
        old = getattr(obj, name)
        setattr(obj, name, new)
        self._undo.append((obj, name, old))
        return old

    def all_lora(self):
        d = OrderedDict()
        d.update(lora_params(self.models["unet"], "unet."))
        d.update(lora_params(self.models["text_encoder"], "text_encoder."))
        return d

    def snapshot(self):
        return OrderedDict((k, v.detach().clone()) for k, v in self.all_lora().items())

    def install(self):
        import accelerate
        import diffusers.models.autoencoders.vae as vae_mod
        import torch.nn.functional as F
        import transformers
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.models.modeling_utils import ModelMixin
        from peft.tuners.lora import LoraLayer

        rec, r, db = self, self.r, self.db

        # add_adapter (diffusers ModelMixin for the UNet, transformers PreTrainedModel for the text encoder): the RNG
        # state around it and the LoRA weights as PEFT initialised them
        def wrap_add_adapter(cls, kind):
            old = getattr(cls, "add_adapter")

            def add_adapter(this, config, *a, **kw):
                if kind in rec.models:   # (only the script's two calls)
                    return old(this, config, *a, **kw)
                rec.rng["before_" + kind] = torch.get_rng_state()
                out = old(this, config, *a, **kw)
                rec.rng["after_" + kind] = torch.get_rng_state()
                rec.models[kind] = this
                rec.configs = getattr(rec, "configs", {})
                rec.configs[kind] = config
                prefix = kind + "."
                for mname, m in this.named_modules():
                    if isinstance(m, LoraLayer):
                        rec.lora_modules.append((prefix, mname, m.in_features, m.out_features, type(m).__name__,
                                                 type(m.base_layer).__name__, float(m.scaling["default"])))
                for k, v in lora_params(this, prefix).items():
                    rec.lora_init[k] = v.detach().clone()
                return out
            self._patch(cls, "add_adapter", add_adapter)
        wrap_add_adapter(ModelMixin, "unet")
        wrap_add_adapter(transformers.PreTrainedModel, "text_encoder")

        # the dataset: its file lists (put in name order) and the index of every item fetched
        Dset = db.DreamBoothDataset
        old_init, old_getitem = Dset.__init__, Dset.__getitem__

        def ds_init(this, *a, **kw):
            old_init(this, *a, **kw)
            for attr in ("instance_images_path", "class_images_path"):
                if hasattr(this, attr):
                    lst = getattr(this, attr)
                    srt = sorted(lst, key=lambda p: p.name)
                    rec.paths_resorted[attr] = [p.name for p in lst] != [p.name for p in srt]
                    setattr(this, attr, srt)
                    rec.dataset_paths[attr] = [p.name for p in srt]
            rec.dataset_len = len(this)

        def ds_getitem(this, index):
            r["index"].append(int(index))
            return old_getitem(this, index)
        self._patch(Dset, "__init__", ds_init)
        self._patch(Dset, "__getitem__", ds_getitem)

        # accelerator.prepare(unet, text_encoder, optimizer, train_dataloader, lr_scheduler)
        old_prepare = accelerate.Accelerator.prepare

        def prepare(this, *args, **kw):
            if len(args) != 5:
                return old_prepare(this, *args, **kw)
            rec.rng["at_prepare"] = torch.get_rng_state()
            rec.python_rng_at_prepare = _random.getstate()
            out = old_prepare(this, *args, **kw)
            unet, te, opt, dl, sch = out
            rec.optimizer, rec.lr_scheduler, rec.dataloader = opt, sch, dl
            assert this.unwrap_model(unet) is rec.models["unet"] and this.unwrap_model(te) is rec.models["text_encoder"]
            rec.training = True

            def te_pre(_m, inp):
                if rec.training:
                    r["input_ids"].append(inp[0].detach().clone())

            def te_post(_m, _inp, out):
                if rec.training:
                    r["encoder_hidden_states"].append(out[0].detach().clone())

            def unet_pre(_m, inp):
                if rec.training:
                    r["noisy_latents"].append(inp[0].detach().clone())
                    r["unet_timesteps"].append(inp[1].detach().clone())

            def unet_post(_m, _inp, out):
                if rec.training:
                    r["model_pred"].append(out.sample.detach().clone())
            te.register_forward_pre_hook(te_pre)
            te.register_forward_hook(te_post)
            unet.register_forward_pre_hook(unet_pre)
            unet.register_forward_hook(unet_post)
            # the optimizer's parameters, by name
            names = {id(p): k for k, p in rec.all_lora().items()}
            rec.param_groups = [{"params": [names[id(p)] for p in g["params"]],
                                 **{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}}
                                for g in opt.optimizer.param_groups]
            return out
        self._patch(accelerate.Accelerator, "prepare", prepare)

        old_encode = AutoencoderKL.encode

        def encode(this, x, *a, **kw):
            if rec.training:
                r["pixel_values"].append(x.detach().clone())
                r["weights_at_step_start"].append(rec.snapshot())
                r["lr"].append(float(rec.optimizer.param_groups[0]["lr"]))
            return old_encode(this, x, *a, **kw)
        self._patch(AutoencoderKL, "encode", encode)

        old_randn_tensor = vae_mod.randn_tensor

        def randn_tensor(*a, **kw):
            out = old_randn_tensor(*a, **kw)
            if rec.training:
                r["vae_noise"].append(out.detach().clone())
            return out
        self._patch(vae_mod, "randn_tensor", randn_tensor)

        old_sample = vae_mod.DiagonalGaussianDistribution.sample

        def sample(this, *a, **kw):
            out = old_sample(this, *a, **kw)
            if rec.training:
                r["latents"].append(out.detach().clone())   # unscaled; scaled in main()
            return out
        self._patch(vae_mod.DiagonalGaussianDistribution, "sample", sample)

        old_randn_like, old_randint = torch.randn_like, torch.randint

        def randn_like(*a, **kw):
            out = old_randn_like(*a, **kw)
            if rec._from_script():
                r["noise"].append(out.detach().clone())
            return out

        def randint(*a, **kw):
            out = old_randint(*a, **kw)
            if rec._from_script():
                r["timesteps"].append(out.detach().clone())
            return out
        self._patch(torch, "randn_like", randn_like)
        self._patch(torch, "randint", randint)

        old_mse = F.mse_loss

        def mse_loss(*a, **kw):
            out = old_mse(*a, **kw)
            if rec._from_script():
                r["mse"].append((a[0].detach().clone(), a[1].detach().clone(), out.detach().clone(),
                                 kw.get("reduction")))
            return out
        self._patch(F, "mse_loss", mse_loss)

        old_backward = accelerate.Accelerator.backward

        def backward(this, loss, **kw):
            r["loss"].append(loss.detach().clone())
            out = old_backward(this, loss, **kw)
            r["grad"].append(OrderedDict((k, p.grad.detach().clone()) for k, p in rec.all_lora().items()))
            return out
        self._patch(accelerate.Accelerator, "backward", backward)

        old_clip = accelerate.Accelerator.clip_grad_norm_

        def clip_grad_norm_(this, parameters, max_norm, *a, **kw):
            parameters = list(parameters)
            names = {id(p): k for k, p in rec.all_lora().items()}
            r["clip_args"].append(([names[id(p)] for p in parameters], max_norm, a, kw))
            out = old_clip(this, parameters, max_norm, *a, **kw)
            r["total_norm"].append(out.detach().clone())
            return out
        self._patch(accelerate.Accelerator, "clip_grad_norm_", clip_grad_norm_)

        old_wait = accelerate.Accelerator.wait_for_everyone

        def wait_for_everyone(this):
            if rec.training:
                rec.weights_final = rec.snapshot()
                rec.training = False
            return old_wait(this)
        self._patch(accelerate.Accelerator, "wait_for_everyone", wait_for_everyone)

    def uninstall(self):
        for obj, name, old in reversed(self._undo):
            setattr(obj, name, old)
        self._undo = []


def replay_draws(rec, seed, steps_per_epoch):
    """Replays with plain torch calls the order in which the run consumed torch's global generator (and the
    sampler's private one), and checks it bitwise against what was recorded."""
    r = rec.r
    ok = {}
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        ok["nothing_between_set_seed_and_unet_add_adapter"] = torch.equal(torch.get_rng_state(),
                                                                           rec.rng["before_unet"])
        # PEFT LoRA Linear init, module by module in named_modules() order, UNet first then the text encoder:
        # nn.Linear(in, r, bias=False) (kaiming_uniform_ a=sqrt(5): uniform_(-1/sqrt(in), 1/sqrt(in))),
        # nn.Linear(r, out, bias=False) (uniform_(-1/sqrt(r), 1/sqrt(r))), then normal_(A, std=1/r); B = 0
        init_ok = True
        for prefix, mname, fin, fout, _t, _b, _s in rec.lora_modules:
            if prefix == "text_encoder." and "nothing_between_unet_and_text_encoder_add_adapter" not in ok:
                ok["nothing_between_unet_and_text_encoder_add_adapter"] = torch.equal(torch.get_rng_state(), rec.rng["before_text_encoder"])
            a = torch.empty(RANK, fin)
            a.uniform_(-1.0 / math.sqrt(fin), 1.0 / math.sqrt(fin))
            b = torch.empty(fout, RANK)
            b.uniform_(-1.0 / math.sqrt(RANK), 1.0 / math.sqrt(RANK))
            a.normal_(0.0, 1.0 / RANK)
            init_ok &= torch.equal(a, rec.lora_init[prefix + mname + ".lora_A.weight"])
            init_ok &= bool((rec.lora_init[prefix + mname + ".lora_B.weight"] == 0).all())
        ok["lora_init"] = bool(init_ok)
        ok["nothing_between_text_encoder_add_adapter_and_prepare"] = torch.equal(torch.get_rng_state(),
                                                                                 rec.rng["at_prepare"])
        # training loop
        lat_shape = tuple(r["vae_noise"][0].shape)
        vae, noise, ts, order = [], [], [], []
        for s in range(S):
            if s % steps_per_epoch == 0:
                torch.empty((), dtype=torch.int64).random_()      # DataLoader iterator base seed (each epoch)
                e = s // steps_per_epoch
                g = torch.Generator()
                g.manual_seed(seed + e)                           # accelerate SeedableRandomSampler: seed + epoch
                order += torch.randperm(rec.dataset_len, generator=g).tolist()
            vae.append(torch.randn(lat_shape))
            noise.append(torch.empty(lat_shape, memory_format=torch.channels_last).normal_())
            ts.append(torch.randint(0, 1000, (lat_shape[0],)))
        ok["vae_noise"] = all(torch.equal(a, b) for a, b in zip(vae, r["vae_noise"]))
        ok["noise"] = all(torch.equal(a, b) for a, b in zip(noise, r["noise"]))
        ok["timesteps"] = all(torch.equal(a, b) for a, b in zip(ts, r["timesteps"]))
        ok["sampler_order"] = order[: len(r["index"])] == r["index"][: len(order)]
    finally:
        torch.set_rng_state(state)
    assert all(ok.values()), ok
    return ok, order


def adamw_check(init, grads, coefs, lr, betas, eps, wd, afters):
    """float64 AdamW (torch 1.13, amsgrad False) on every LoRA tensor, with the gradients scaled by the clip
    coefficient exactly as clip_grad_norm_ did (float32 multiply)."""
    err = 0.0
    for k in init:
        p = init[k].double()
        m = torch.zeros_like(p)
        v = torch.zeros_like(p)
        for step, (g_all, c) in enumerate(zip(grads, coefs), start=1):
            g = (g_all[k] * c).double()
            p = p * (1 - lr * wd)
            m = betas[0] * m + (1 - betas[0]) * g
            v = betas[1] * v + (1 - betas[1]) * g * g
            bc1, bc2 = 1 - betas[0] ** step, 1 - betas[1] ** step
            p = p - (lr / bc1) * m / ((v.sqrt() / math.sqrt(bc2)) + eps)
            err = max(err, float((p - afters[step - 1][k].double()).abs().max()))
    return err


def run(extra_argv):
    """One run of the script's main() (argv + extra_argv); returns (tensors, summary) of that run."""
    toy = os.path.join(mr.METHODS_OUT, "toy.png")
    assert os.path.exists(toy), "tests/data/methods/toy.png (written by gen_textual_inversion.py)"
    class_pngs = [class_image(os.path.join(mr.METHODS_OUT, f"class_{k}.png"), k) for k in range(NUM_CLASS)]
    data_dir, out_dir = mr.prepare_scratch("dreambooth_lora", toy)
    class_dir = os.path.join(os.path.dirname(data_dir), "class")
    os.makedirs(class_dir)
    for p in class_pngs:
        shutil.copy(p, os.path.join(class_dir, os.path.basename(p)))

    db = mr.import_file("train_dreambooth_lora", SCRIPT)
    defaults = {k: v for k, v in vars(db.parse_args(["--pretrained_model_name_or_path", "X", "--instance_data_dir",
                                                     "X", "--instance_prompt", "X"])).items()
                if k not in ("pretrained_model_name_or_path", "instance_data_dir", "instance_prompt")}

    rec = DreamBoothLoraRecorder(SCRIPT, db)
    rec.install()
    argv = ["--pretrained_model_name_or_path", mr.SD_TINY, "--instance_data_dir", data_dir,
            "--class_data_dir", class_dir, "--output_dir", out_dir,
            "--instance_prompt", INSTANCE_PROMPT, "--resolution", str(RES), "--train_batch_size", str(B),
            "--max_train_steps", str(S), "--learning_rate", str(LR_ARG), "--rank", str(RANK),
            "--train_text_encoder", "--seed", str(SEED),
            "--with_prior_preservation", "--class_prompt", CLASS_PROMPT, "--num_class_images", str(NUM_CLASS),
            "--prior_loss_weight", str(PRIOR_W)] + list(extra_argv)
    sys.argv = ["train_dreambooth_lora.py"] + argv
    try:
        args = db.parse_args(argv)
        db.main(args)
    finally:
        rec.uninstall()
    r = rec.r

    # ---- counts
    for k in ("pixel_values", "vae_noise", "latents", "noise", "timesteps", "input_ids", "encoder_hidden_states",
              "noisy_latents", "model_pred", "loss", "grad", "total_norm", "lr", "weights_at_step_start"):
        assert len(r[k]) == S, (k, len(r[k]))
    assert len(r["mse"]) == 2 * S, len(r["mse"])
    assert rec.dataset_len == NUM_CLASS   # max(num_class_images, num_instance_images)
    steps_per_epoch = math.ceil(rec.dataset_len / B)
    # items fetched: accelerate fetches one batch ahead in every epoch
    n_epochs = math.ceil(S / steps_per_epoch)

    # ---- the LoRA weights
    init = rec.lora_init
    afters = [r["weights_at_step_start"][s] for s in range(1, S)] + [rec.weights_final]
    assert all(torch.equal(init[k], r["weights_at_step_start"][0][k]) for k in init), "weights changed before step 1"
    names = list(init)
    assert names == list(afters[-1])
    # every trainable parameter is a LoRA weight
    for kind in ("unet", "text_encoder"):
        m = rec.models[kind]
        tr = [n for n, p in m.named_parameters() if p.requires_grad]
        assert all("lora_" in n for n in tr) and len(tr) == len(lora_params(m, "")), kind
    # the optimizer got exactly these, in this order (UNet first, then the text encoder), one group
    assert len(rec.param_groups) == 1 and rec.param_groups[0]["params"] == names
    clip_names, max_norm, clip_a, clip_kw = r["clip_args"][0]
    assert clip_names == names and not clip_a and not clip_kw
    assert all(c[0] == names and c[1] == max_norm for c in r["clip_args"])

    # ---- the batch
    sf = 0.18215
    from diffusers import AutoencoderKL, DDPMScheduler
    assert AutoencoderKL.load_config(os.path.join(mr.SD_TINY, "vae"))["scaling_factor"] == sf
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(os.path.join(mr.SD_TINY, "tokenizer"))
    ids_inst = tok(INSTANCE_PROMPT, padding="max_length", truncation=True, max_length=77, return_tensors="pt").input_ids
    ids_cls = tok(CLASS_PROMPT, padding="max_length", truncation=True, max_length=77, return_tensors="pt").input_ids
    input_ids = torch.stack(r["input_ids"])                         # [S, 2, 77]
    for s in range(S):
        assert torch.equal(input_ids[s], torch.cat([ids_inst, ids_cls])), s

    def png_pixels(path):
        a = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
        return ((a.to(torch.float32) / 255) - 0.5) / 0.5             # ToTensor + Normalize([0.5], [0.5])
    pv = torch.stack(r["pixel_values"])                             # [S, 2, 3, 64, 64]
    cls_paths = [os.path.join(class_dir, n) for n in rec.dataset_paths["class_images_path"]]
    # the index of the dataset item of each step (accelerate's DataLoaderShard fetches one batch ahead)
    fetched = r["index"]
    step_index = []
    for e in range(n_epochs):
        ep = fetched[e * steps_per_epoch: (e + 1) * steps_per_epoch]
        step_index += ep
    step_index = step_index[:S]
    class_file_index = [i % NUM_CLASS for i in step_index]
    pixel_formula_exact = True
    for s in range(S):
        assert torch.equal(pv[s, 0], png_pixels(toy)), s
        assert torch.equal(pv[s, 1], png_pixels(cls_paths[class_file_index[s]])), s
    alt = ((torch.from_numpy(np.asarray(Image.open(toy).convert("RGB")).copy()).permute(2, 0, 1).to(torch.float32)
            / 127.5) - 1.0)
    pixel_formula_127 = bool(torch.equal(alt, pv[0, 0]))

    vae_noise = torch.stack(r["vae_noise"])
    latents = torch.stack(r["latents"]) * sf
    noise = torch.stack(r["noise"])
    timesteps = torch.stack(r["timesteps"]).to(torch.int64)
    assert all(torch.equal(a, b) for a, b in zip(r["unet_timesteps"], r["timesteps"]))
    noisy = torch.stack(r["noisy_latents"])
    sched = DDPMScheduler.from_pretrained(mr.SD_TINY, subfolder="scheduler")
    for s in range(S):
        assert torch.equal(sched.add_noise(latents[s], noise[s], timesteps[s]), noisy[s]), s
    model_pred = torch.stack(r["model_pred"])
    inst_loss, prior_loss = [], []
    for s in range(S):
        (p0, t0, l0, red0), (p1, t1, l1, red1) = r["mse"][2 * s], r["mse"][2 * s + 1]
        assert red0 == red1 == "mean"
        assert torch.equal(p0, model_pred[s, :1]) and torch.equal(t0, noise[s, :1])
        assert torch.equal(p1, model_pred[s, 1:]) and torch.equal(t1, noise[s, 1:])
        assert torch.equal(r["loss"][s], l0 + PRIOR_W * l1), s
        inst_loss.append(l0)
        prior_loss.append(l1)

    # ---- clipping and AdamW
    total_norm = torch.stack(r["total_norm"])
    coefs = []
    for s in range(S):
        g = r["grad"][s]
        tn = torch.norm(torch.stack([torch.norm(g[k], 2.0) for k in names]), 2.0)
        assert torch.equal(tn, total_norm[s]), s
        coefs.append(torch.clamp(max_norm / (total_norm[s] + 1e-6), max=1.0))
    clip_coef = torch.stack(coefs)
    lr_used = r["lr"][0]
    assert all(x == lr_used == LR_ARG for x in r["lr"])
    assert defaults["scale_lr"] is False
    g0 = rec.param_groups[0]
    betas, eps, wd = tuple(g0["betas"]), g0["eps"], g0["weight_decay"]
    assert (betas, eps, wd) == ((defaults["adam_beta1"], defaults["adam_beta2"]), defaults["adam_epsilon"],
                                defaults["adam_weight_decay"])
    adam_err = adamw_check(init, r["grad"], coefs, lr_used, betas, eps, wd, afters)
    assert adam_err < 1e-6, adam_err
    # lora_A grads are exactly 0 at step 1 (B = 0), so step 1 changes A only by weight decay
    a_grad_zero_step1 = all(bool((r["grad"][0][k] == 0).all()) for k in names if ".lora_A." in k)
    a_step1_is_decay_only = all(torch.equal(afters[0][k], init[k] * (1 - lr_used * wd)) for k in names
                                if ".lora_A." in k)

    # ---- random draws
    draws_ok, sampler_order = replay_draws(rec, SEED, steps_per_epoch)

    # ---- the file the script saved
    from safetensors import safe_open
    from safetensors.torch import load_file
    saved_path = os.path.join(out_dir, "pytorch_lora_weights.safetensors")
    saved = load_file(saved_path)
    with safe_open(saved_path, framework="pt") as f:
        saved_meta = f.metadata()
    saved_keys = list(saved)
    assert sorted(saved_keys) == sorted(names), (sorted(saved_keys)[:4], names[:4])
    assert all(torch.equal(saved[k], afters[-1][k]) for k in names)

    # ---- tensors
    tensors = OrderedDict()
    tensors["input_ids"] = input_ids.to(torch.int64)
    tensors["pixel_values"] = pv
    tensors["class_image_index"] = torch.tensor(class_file_index, dtype=torch.int64)
    tensors["vae_noise"] = vae_noise
    tensors["latents"] = latents
    tensors["noise"] = noise
    tensors["timesteps"] = timesteps
    tensors["noisy_latents"] = noisy
    tensors["encoder_hidden_states"] = torch.stack(r["encoder_hidden_states"])
    tensors["model_pred"] = model_pred
    tensors["instance_loss"] = torch.stack(inst_loss)
    tensors["prior_loss"] = torch.stack(prior_loss)
    tensors["loss"] = torch.stack(r["loss"])
    tensors["total_norm"] = total_norm
    tensors["clip_coef"] = clip_coef
    tensors["lr"] = torch.tensor(r["lr"], dtype=torch.float32)
    for k in names:
        tensors["lora_init." + k] = init[k]
    for s in range(S):
        for k in names:
            tensors[f"grad_step{s + 1}." + k] = r["grad"][s][k]
    for s in range(S):
        for k in names:
            tensors[f"lora_after_step{s + 1}." + k] = afters[s][k]
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)

    # ---- json
    args_used = list(argv)
    args_used[args_used.index(mr.SD_TINY)] = "<GOLDEN_OUT>/sd_tiny"
    args_used[args_used.index(data_dir)] = "<scratch>/data (holds only toy.png)"
    args_used[args_used.index(class_dir)] = "<scratch>/class (holds class_0.png, class_1.png)"
    args_used[args_used.index(out_dir)] = "<scratch>/out"

    def cfg(c):
        d = c.to_dict()
        d = {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}
        if d.get("base_model_name_or_path") == mr.SD_TINY:   # (transformers' add_adapter sets it; diffusers' None)
            d["base_model_name_or_path"] = "<GOLDEN_OUT>/sd_tiny"
        return json.loads(json.dumps(d, default=str))

    modules = [{"model": p[:-1], "module": m, "in_features": fi, "out_features": fo, "lora_class": t,
                "base_layer": bl, "scaling": sc,
                "peft_param_names": [f"{m}.lora_A.default.weight", f"{m}.lora_B.default.weight"],
                "shapes": {"lora_A": [RANK, fi], "lora_B": [fo, RANK]}}
               for p, m, fi, fo, t, bl, sc in rec.lora_modules]
    sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()  # noqa: E731
    defaults_json = json.loads(json.dumps(defaults, default=str))
    summary = {
        "generator": TAG,
        "code": {"script": "huggingface/diffusers v0.25.1 examples/dreambooth/train_dreambooth_lora.py",
                 "peft": PEFT_COMMIT, **mr.COMMITS},
        "model": "<GOLDEN_OUT>/sd_tiny (text hidden 32, 2 CLIP layers; UNet block_out_channels [32, 64], "
                 "cross_attention_dim 32; VAE /2), float32 CPU",
        "argv": args_used,
        "images": {"instance": {"file": "toy.png", "size": [64, 64], "sha256": sha(toy)},
                   "class": [{"file": os.path.basename(p), "size": [64, 64], "sha256": sha(p)} for p in class_pngs]},
        "steps": S, "train_batch_size": B, "rows_per_step": 2 * B, "resolution": RES, "seed": SEED,
        "instance_prompt": INSTANCE_PROMPT, "class_prompt": CLASS_PROMPT,
        "prior_loss_weight": PRIOR_W, "num_class_images": NUM_CLASS,
        "batch_layout": "rows [0, B) are the instance examples, rows [B, 2B) the class examples "
                        "(collate_fn: input_ids = cat(instance ids, class ids); pixel_values = stack(instance, class))",
        "dataset": {"len": rec.dataset_len, "len_formula": "max(min(#class files, num_class_images), #instance files)",
                    "steps_per_epoch": steps_per_epoch, "epochs_run": n_epochs,
                    "items_fetched": fetched,
                    "step_item_index": step_index,
                    "instance_file": "instance_images_path[index % num_instance_images] (always toy.png)",
                    "class_file": "class_images_path[index % num_class_images]",
                    "class_image_index_per_step": class_file_index,
                    "files_in_order": rec.dataset_paths, "listing_was_resorted": rec.paths_resorted,
                    "sampler": "accelerate SeedableRandomSampler (replaces the DataLoader's RandomSampler, shuffle=True):"
                               " per epoch e, torch.randperm(len, generator=torch.Generator().manual_seed(seed + e))",
                    "sampler_order_replayed": sampler_order,
                    "transforms": "Resize(64, BILINEAR) (identity: the image is already 64x64), RandomCrop(64) "
                                  "(no draw: the image is exactly 64x64), ToTensor (uint8 / 255 float32), "
                                  "Normalize([0.5], [0.5]): pixel = (x/255 - 0.5)/0.5 in float32",
                    "pixel_equals_x_over_127.5_minus_1_bitwise": pixel_formula_127,
                    "pixel_formula_checked_bitwise": pixel_formula_exact},
        "lora": {
            "unet_config": cfg(rec.configs["unet"]), "text_encoder_config": cfg(rec.configs["text_encoder"]),
            "rank": RANK, "lora_alpha": RANK, "scaling": 1.0, "scaling_formula": "lora_alpha / r",
            "init": "init_lora_weights='gaussian': lora_A ~ normal(0, std=1/r) (PEFT reset_lora_parameters), "
                    "lora_B = 0; lora_A/B are created as nn.Linear(in, r, bias=False) / nn.Linear(r, out, bias=False) "
                    "first, whose kaiming_uniform_ draws are consumed and overwritten",
            "forward": "y = base(x) + lora_B(lora_A(dropout(x))) * scaling   (dropout: Identity, lora_dropout 0)",
            "num_modules": {"unet": sum(1 for m in modules if m["model"] == "unet"),
                            "text_encoder": sum(1 for m in modules if m["model"] == "text_encoder")},
            "num_params": sum(v.numel() for v in init.values()),
            "modules": modules},
        "tensor_naming": "lora_init.<model>.<module>.lora_{A,B}.weight, grad_step<k>.<same> (d loss / d W at step k, "
                         "after backward, BEFORE clipping), lora_after_step<k>.<same> (after optimizer.step of step "
                         "k); <model> is unet or text_encoder; the name in the model is <module>.lora_A.default.weight "
                         "(PEFT adapter 'default'); get_peft_model_state_dict drops '.default'",
        "optimizer": {"class": "torch.optim.AdamW (torch 1.13, foreach False on CPU, amsgrad False)",
                      "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in rec.param_groups],
                      "params_order": "all UNet LoRA parameters in unet.parameters() order, then all text-encoder "
                                      "LoRA parameters (same list as lora names in this file, in order)",
                      "lr_used": lr_used, "scale_lr": False,
                      "zero_grad": "AcceleratedOptimizer.zero_grad(set_to_none=None -> False): grads zeroed in place"},
        "clipping": {"max_grad_norm": max_norm, "norm_type": 2.0,
                     "formula": "total = ||stack([||g_i||_2 for every LoRA grad in optimizer order])||_2; "
                                "coef = clamp(max_norm / (total + 1e-6), max=1); g_i *= coef (always applied)",
                     "total_norm": [float(x) for x in total_norm], "clip_coef": [float(x) for x in clip_coef]},
        "lr_scheduler": {"name": defaults["lr_scheduler"], "lr_warmup_steps_arg": defaults["lr_warmup_steps"],
                         "effect": "constant: LambdaLR(lambda _: 1); warmup ignored", "lr_per_step": r["lr"]},
        "noise_scheduler": {"class": "DDPMScheduler.from_pretrained(sd_tiny/scheduler)",
                            "num_train_timesteps": sched.config.num_train_timesteps,
                            "beta_start": sched.config.beta_start, "beta_end": sched.config.beta_end,
                            "beta_schedule": sched.config.beta_schedule,
                            "prediction_type": sched.config.prediction_type},
        "random_draws": {"replayed_bitwise": draws_ok, "order": [
            "set_seed(seed): random.seed, numpy.random.seed, torch.manual_seed (no torch draw before LoRA init)",
            "unet.add_adapter: for every target Linear in unet.named_modules() order: nn.Linear(in, r): "
            "uniform_(-1/sqrt(in), 1/sqrt(in)) over [r, in]; nn.Linear(r, out): uniform_(-1/sqrt(r), 1/sqrt(r)) over "
            "[out, r]; lora_A.normal_(0, 1/r); lora_B.zero_()",
            "text_encoder.add_adapter: the same, text encoder modules in named_modules() order",
            "each epoch start: torch.empty((), int64).random_() (DataLoader iterator base seed); the item order is "
            "torch.randperm(len, private generator seeded seed + epoch) (takes nothing from the global one)",
            "each step: torch.randn([2B,4,32,32]) (latent_dist.sample), noise = torch.randn_like(latents) (latents "
            "are channels-last -> torch.empty([2B,4,32,32], memory_format=channels_last).normal_()), "
            "torch.randint(0, 1000, (2B,)) (timesteps); the dataset itself draws nothing (no flip; "
            "RandomCrop of an exact-size image returns (0,0))"]},
        "loss": {"formula": "model_pred, model_pred_prior = chunk(unet(x_t, t, text_encoder(input_ids)[0]), 2, dim=0); "
                            "target, target_prior = chunk(noise, 2, dim=0); "
                            "loss = mse(model_pred, target) + prior_loss_weight * mse(model_pred_prior, target_prior)",
                 "instance_loss": [float(x) for x in inst_loss], "prior_loss": [float(x) for x in prior_loss],
                 "loss": [float(x) for x in r["loss"]], "timesteps": [[int(t) for t in ts] for ts in r["timesteps"]]},
        "saved_file": {"name": "pytorch_lora_weights.safetensors", "metadata": saved_meta,
                       "keys": {k: list(saved[k].shape) for k in saved_keys},
                       "key_format": "'unet.' + get_peft_model_state_dict(unet) key / 'text_encoder.' + ... "
                                     "(LoraLoaderMixin.save_lora_weights pack_weights); values = lora_after_step3"},
        "checks": {"independent_adamw_with_clipping_max_abs_diff": adam_err,
                   "lora_A_grad_zero_at_step1": a_grad_zero_step1,
                   "lora_A_after_step1_equals_init_times_1_minus_lr_wd": a_step1_is_decay_only,
                   "input_ids_equal_tokenizer_of_prompts": True, "pixel_values_equal_pngs": True,
                   "noisy_latents_equal_add_noise": True, "loss_equals_instance_plus_w_prior_bitwise": True,
                   "total_norm_recomputed_bitwise": True, "saved_file_equals_final_weights": True,
                   "only_lora_params_trainable": True},
        "argparse_defaults": defaults_json,
    }
    print(json.dumps({"loss": summary["loss"], "total_norm": summary["clipping"]["total_norm"],
                      "clip_coef": summary["clipping"]["clip_coef"], "adam_err": adam_err,
                      "class_idx": class_file_index, "fetched": fetched, "resorted": rec.paths_resorted,
                      "moved": max(float((afters[-1][k] - init[k]).abs().max()) for k in names)}, indent=1))
    return tensors, summary


# the second run: the same argv + --max_grad_norm CLIP_MAX_NORM, so that clipping is active in every step (with the
# default 1.0 the total norm stays below 0.1 and clip_coef is 1). Same draws, same batches.
CLIP_MAX_NORM = 0.02
CLIP_SAME = ("input_ids", "pixel_values", "class_image_index", "vae_noise", "latents", "noise", "timesteps", "lr")
CLIP_KEEP = ("instance_loss", "prior_loss", "loss", "total_norm", "clip_coef", "grad_step", "lora_after_step")


def main():
    os.makedirs(mr.METHODS_OUT, exist_ok=True)
    torch.set_num_threads(1)
    mr.patch_slow_tokenizer_without_tokenizers()
    tensors, summary = run([])
    ct, cs = run(["--max_grad_norm", str(CLIP_MAX_NORM)])
    for k in CLIP_SAME:
        assert torch.equal(tensors[k], ct[k]), k
    for k in tensors:
        if k.startswith("lora_init.") or k.startswith("grad_step1."):
            assert torch.equal(tensors[k], ct[k]), k   # step 1 sees the same weights
    assert torch.equal(tensors["loss"][0], ct["loss"][0])
    assert all(float(c) < 1.0 for c in ct["clip_coef"])
    for k, v in ct.items():
        if k.startswith(CLIP_KEEP):
            tensors["clip." + k] = v
    st_path = os.path.join(mr.METHODS_OUT, "dreambooth_lora.safetensors")
    mr.save_tensors(st_path, tensors, {"notes": "see README.md and dreambooth_lora.json"}, generator=TAG)
    size = os.path.getsize(st_path)
    assert size < 3 * 1024 * 1024, size
    summary["clip_variant"] = {
        "extra_argv": ["--max_grad_norm", str(CLIP_MAX_NORM)],
        "tensors": "clip.<name> for " + ", ".join(CLIP_KEEP) + " (all other inputs are bitwise those of the "
                   "main run: same draws, same batches; step 1 has the same loss and raw gradients)",
        "clipping": cs["clipping"], "loss": cs["loss"],
        "independent_adamw_with_clipping_max_abs_diff": cs["checks"]["independent_adamw_with_clipping_max_abs_diff"],
        "saved_file_equals_final_weights": True}
    summary["num_tensors"] = len(tensors)
    summary["safetensors_bytes"] = size
    mr.write_json(os.path.join(mr.METHODS_OUT, "dreambooth_lora.json"), summary)
    print("tensors", len(tensors), "bytes", size)


if __name__ == "__main__":
    main()
