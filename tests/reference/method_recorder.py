"""Shared pieces of gen_textual_inversion.py and gen_cross_init.py (the golden generators for
tests/data/methods/). Run only from those scripts, with the reference environment of
../shared/refgen (GOLDEN_ENV=... source env.sh; $PY ...).

Nothing here changes what the official training scripts compute: every patch below wraps a function, calls the
original with the same arguments and only copies what went in or came out (the random draws, the batch, the loss,
the gradient, the embedding rows). The official scripts themselves are imported from the extracted source trees
($GOLDEN_SRC/...) and their own main()/train() runs."""
import importlib.util
import os
import random as _random
import shutil
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
METHODS_OUT = os.path.join(REPO, "tests", "data", "methods")
REFGEN_DIR = os.environ.get("REFGEN_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared/refgen")
sys.path.insert(0, REFGEN_DIR)
from common import OUT as GOLDEN_OUT, SRC, patch_slow_tokenizer_without_tokenizers, save_tensors, write_json  # noqa

SD_TINY = os.path.join(GOLDEN_OUT, "sd_tiny")
GOLDEN_ENV = os.environ.get("GOLDEN_ENV") or os.path.join(os.path.expanduser("~"), ".cache", "sd-refgen")
SCRATCH = os.path.join(GOLDEN_ENV, "scratch")

# commits of the code that runs (see tests/reference/setup_env.sh, a copy of refgen/setup_env.sh + accelerate
# and CrossInitialization)
COMMITS = {
    "diffusers": "v0.25.1 = 1909952826ffb0609f5df172ac7948c46422614d",
    "transformers": "815ea8e8a23a85482225d371f7218cacc3e99e5b (main @ 4.36.0.dev0)",
    "huggingface_hub": "v0.20.3 = 2cff405655a58e91e68d2486a3d699e25fadc65b",
    "accelerate": "v0.25.0 = d08c23c20975f39393b431143237c193733e7bb8",
    "safetensors": "v0.4.1 = cc43011eaae470d14c411b8ba243273135830ce7 (python API; refgen/shim/_safetensors_rust.py)",
    "CrossInitialization": "lyuPang/CrossInitialization 0b1e39a6740a0152ad78a07b5ef99c9967687ad1",
    "torch": torch.__version__ + " (Debian 12 python3-torch), CPU, 1 thread, reference BLAS",
}


def toy_image(path):
    """Deterministic 64x64 RGB training image (no RNG): smooth colour field, a disc and a bar placed off-centre so
    that a horizontal flip changes it."""
    n = 64
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1.0)
    r = 0.55 + 0.35 * np.sin(5.0 * xx + 1.3 * yy)
    g = 0.1 + 0.8 * xx * (0.6 + 0.4 * yy)
    b = 0.5 + 0.4 * np.cos(7.0 * xx * yy + 0.5)
    disc = (xx - 0.68) ** 2 + (yy - 0.4) ** 2 < 0.2 ** 2
    r[disc], g[disc], b[disc] = 0.95, 0.8 - 0.5 * yy[disc], 0.2
    bar = (xx > 0.12) & (xx < 0.22) & (yy > 0.3) & (yy < 0.9)
    r[bar], g[bar], b[bar] = 0.1, 0.2, 0.9
    img = np.clip(np.round(np.stack([r, g, b], -1) * 255), 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(path, optimize=False)
    return path


def prepare_scratch(name, image_path):
    """A fixed scratch folder (same paths on every run): data/ holds only the training image (the official datasets
    list every file of --train_data_dir), out/ is --output_dir."""
    d = os.path.join(SCRATCH, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "data"))
    os.makedirs(os.path.join(d, "out"))
    shutil.copy(image_path, os.path.join(d, "data", os.path.basename(image_path)))
    return os.path.join(d, "data"), os.path.join(d, "out")


def import_file(modname, path):
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


class _RandomProxy:
    """Stands in for the `random` module inside a dataset module: random.choice is the real one (same global
    Mersenne Twister, same draws); its results are recorded."""

    def __init__(self, log):
        self._log = log

    def choice(self, seq):
        out = _random.choice(seq)
        self._log.append(out)
        return out

    def __getattr__(self, k):
        return getattr(_random, k)


class Recorder:
    """Records one run of an official textual-inversion-style training loop.

    script_file: the file whose calls to torch.randn_like / torch.randint / F.mse_loss / F.pairwise_distance are
    recorded (calls from anywhere else pass through unrecorded)."""

    def __init__(self, script_file, dataset_module, placeholder_ids_fn):
        self.script_file = os.path.abspath(script_file)
        self.placeholder_ids_fn = placeholder_ids_fn  # () -> list of ids (known once the script added the tokens)
        self.r = {k: [] for k in ("pixel_values", "vae_noise", "latents", "noise", "timesteps", "input_ids", "loss",
                                  "mse_loss", "pairwise_distance", "grad", "rows", "lr", "flipped", "templates")}
        self.text_encoder = None
        self.optimizer = None
        self.lr_scheduler = None
        self.table_at_first_step = None
        self.table_final = None
        self._undo = []
        self.dataset_module = dataset_module

    # -- helpers
    def _from_script(self, depth=2):
        return os.path.abspath(sys._getframe(depth).f_code.co_filename) == self.script_file

    def _patch(self, obj, name, new):
        old = getattr(obj, name)
        setattr(obj, name, new)
        self._undo.append((obj, name, old))
        return old

    def _rows(self):
        w = self.text_encoder.get_input_embeddings().weight
        return w.detach()[self.placeholder_ids_fn()].clone()

    def install(self):
        import accelerate
        import diffusers.models.autoencoders.vae as vae_mod
        import torch.nn.functional as F
        from diffusers import AutoencoderKL
        from torchvision import transforms

        rec = self
        r = self.r

        # the prompts: the dataset module's random.choice (templates)
        self._patch(self.dataset_module, "random", _RandomProxy(r["templates"]))

        # flips: RandomHorizontalFlip.forward returns its input unchanged when it does not flip
        old_flip = transforms.RandomHorizontalFlip.forward

        def flip_forward(this, img):
            out = old_flip(this, img)
            r["flipped"].append(out is not img)
            return out
        self._patch(transforms.RandomHorizontalFlip, "forward", flip_forward)

        # accelerator.prepare(text_encoder, optimizer, train_dataloader, lr_scheduler)
        old_prepare = accelerate.Accelerator.prepare

        def prepare(this, *args, **kw):
            rec.rng_at_prepare = (torch.get_rng_state(), _random.getstate())
            out = old_prepare(this, *args, **kw)
            te, opt, _dl, sch = out
            rec.text_encoder = this.unwrap_model(te)
            rec.optimizer, rec.lr_scheduler = opt, sch

            def pre_hook(_m, inp):
                r["input_ids"].append(inp[0].detach().clone())
            te.register_forward_pre_hook(pre_hook)
            return out
        self._patch(accelerate.Accelerator, "prepare", prepare)

        # the batch entering the VAE; the placeholder rows as they are when a step starts
        old_encode = AutoencoderKL.encode

        def encode(this, x, *a, **kw):
            if rec.text_encoder is not None:   # (only inside the training loop: prepare() has run)
                r["pixel_values"].append(x.detach().clone())
                r["rows"].append(rec._rows())
                r["lr"].append(float(rec.optimizer.param_groups[0]["lr"]))
                if rec.table_at_first_step is None:
                    rec.table_at_first_step = rec.text_encoder.get_input_embeddings().weight.detach().clone()
            return old_encode(this, x, *a, **kw)
        self._patch(AutoencoderKL, "encode", encode)

        # latent_dist.sample(): x = mean + std * randn_tensor(...)
        old_randn_tensor = vae_mod.randn_tensor

        def randn_tensor(*a, **kw):
            out = old_randn_tensor(*a, **kw)
            r["vae_noise"].append(out.detach().clone())
            return out
        self._patch(vae_mod, "randn_tensor", randn_tensor)

        old_sample = vae_mod.DiagonalGaussianDistribution.sample

        def sample(this, *a, **kw):
            out = old_sample(this, *a, **kw)
            r["latents"].append(out.detach().clone())   # unscaled; scaled in finish()
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

        old_mse, old_pd = F.mse_loss, F.pairwise_distance

        def mse_loss(*a, **kw):
            out = old_mse(*a, **kw)
            if rec._from_script():
                r["mse_loss"].append(out.detach().clone())
            return out

        def pairwise_distance(*a, **kw):
            out = old_pd(*a, **kw)
            if rec._from_script():
                r["pairwise_distance"].append(out.detach().clone())
            return out
        self._patch(F, "mse_loss", mse_loss)
        self._patch(F, "pairwise_distance", pairwise_distance)

        # the loss handed to backward, and the gradient on the placeholder rows right after it (before optimizer.step)
        old_backward = accelerate.Accelerator.backward

        def backward(this, loss, **kw):
            r["loss"].append(loss.detach().clone())
            out = old_backward(this, loss, **kw)
            g = rec.text_encoder.get_input_embeddings().weight.grad
            r["grad"].append(g.detach()[rec.placeholder_ids_fn()].clone())
            return out
        self._patch(accelerate.Accelerator, "backward", backward)

        # after the training loop: accelerator.wait_for_everyone()
        old_wait = accelerate.Accelerator.wait_for_everyone

        def wait_for_everyone(this):
            if rec.text_encoder is not None and rec.table_final is None:
                r["rows"].append(rec._rows())
                rec.table_final = rec.text_encoder.get_input_embeddings().weight.detach().clone()
            return old_wait(this)
        self._patch(accelerate.Accelerator, "wait_for_everyone", wait_for_everyone)

    def check_pixels(self, image_path, S, B):
        """pixel_values: the PNG (64x64, so the dataset's PIL resize to 64x64 is a copy) as uint8/127.5-1 (HWC->CHW),
        mirrored where the dataset's RandomHorizontalFlip flipped."""
        base = np.asarray(Image.open(image_path).convert("RGB"))
        base = torch.from_numpy((base / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)
        pv = torch.stack(self.r["pixel_values"])
        for s in range(S):
            for b in range(B):
                want = base.flip(-1) if self.r["flipped"][s * B + b] else base
                assert torch.equal(pv[s, b], want), (s, b)

    def replay_draws(self, seed, S, B, templates, num_train_timesteps=1000):
        """Replays, with nothing but torch/random calls, the order in which the run consumed the global RNGs, and
        checks it against what was recorded (bitwise). The order this confirms (accelerate 0.25 + torch 1.13, 1 process,
        num_workers 0):
          set_seed(seed): random.seed, np.random.seed, torch.manual_seed
          DataLoader iterator: torch.empty((), int64).random_()   (its base seed; the sampler itself is accelerate's
                               SeedableRandomSampler with a private generator, so it takes nothing from the global one)
          batch 0 and batch 1 items (accelerate fetches one batch ahead), per item: random.choice(templates), then
                               RandomHorizontalFlip's torch.rand(1) < 0.5
          step 0: torch.randn(latent shape) (latent_dist.sample), torch.randn_like (noise), torch.randint(0, T, (B,))
          batch 2 items; step 1; batch 3 items; step 2; ...
        Returns a dict for the json."""
        lat_shape = tuple(self.r["vae_noise"][0].shape)
        random_state, torch_state = _random.getstate(), torch.get_rng_state()
        try:
            torch.set_rng_state(self.rng_at_prepare[0])
            _random.setstate(self.rng_at_prepare[1])
            torch.empty((), dtype=torch.int64).random_()
            tpl, flips, vae, noise, ts = [], [], [], [], []

            def fetch_batch():
                for _ in range(B):
                    tpl.append(_random.choice(templates))
                    flips.append(bool(torch.rand(1) < 0.5))
            fetch_batch()
            fetch_batch()
            for s in range(S):
                v = torch.randn(lat_shape)
                vae.append(v)
                # torch.randn_like(latents) keeps the latents' memory format, and the latents are channels-last
                # (recorded below); torch 1.13 fills a non-contiguous tensor with its serial normal kernel, not the
                # vectorised one torch.randn uses for contiguous float tensors of >= 16 elements
                noise.append(torch.empty(lat_shape, memory_format=torch.channels_last).normal_())
                ts.append(torch.randint(0, num_train_timesteps, (B,)))
                fetch_batch()
        finally:
            _random.setstate(random_state)
            torch.set_rng_state(torch_state)
        ok = {
            "templates": tpl[: S * B] == self.r["templates"],
            "flips": flips[: S * B] == self.r["flipped"],
            "vae_noise": all(torch.equal(a, b) for a, b in zip(vae, self.r["vae_noise"])),
            "noise": all(torch.equal(a, b) for a, b in zip(noise, self.r["noise"])),
            "timesteps": all(torch.equal(a, b) for a, b in zip(ts, self.r["timesteps"])),
        }
        assert all(ok.values()), ok
        # what happened between set_seed and accelerator.prepare: transformers' resize_token_embeddings builds a new
        # nn.Embedding (reset_parameters: normal_ over the whole new table, on the global generator; CLIP's
        # _init_weights does nothing to a bare nn.Embedding) before copying the old rows in
        n_rows = self.table_at_first_step.shape[0]
        dim = self.table_at_first_step.shape[1]
        torch_state = torch.get_rng_state()
        try:
            torch.manual_seed(seed)
            e = torch.empty(n_rows, dim)
            e.normal_()
            from_seed = torch.equal(torch.get_rng_state(), self.rng_at_prepare[0])
        finally:
            torch.set_rng_state(torch_state)
        return {"replayed_bitwise": ok, "state_at_prepare_equals_seed_plus_one_table_normal": from_seed,
                "memory_format": {"pixel_values_stride": list(self.r["pixel_values"][0].stride()),
                                  "latents_stride": list(self.r["latents"][0].stride())},
                "order": [
            "set_seed(seed): random.seed, numpy.random.seed, torch.manual_seed",
            "text_encoder.resize_token_embeddings(len(tokenizer)): new nn.Embedding(V+n, d) -> normal_() over the "
            "whole table (nothing else draws before the loop; replayed: %s)" % from_seed,
            "torch.empty((), dtype=torch.int64).random_()  # DataLoader iterator base seed",
            "batch 0 items, batch 1 items: per item random.choice(templates) then torch.rand(1) < 0.5 (flip)",
            "for each step s: torch.randn([B,4,h/f,w/f]) (latent_dist.sample), torch.randn_like (noise), "
            "torch.randint(0, 1000, (B,)) (timesteps); then batch s+2 items (accelerate fetches one batch ahead)",
            "the noise: randn_like(latents) keeps the latents' channels-last layout (the collated pixel_values are "
            "channels-last: the VAE encoder's mid-block attention returns a channels-last view (transpose + reshape) and "
            "conv_out/quant_conv keep that layout), so the noise is "
            "torch.empty([B,4,h,w], memory_format=torch.channels_last).normal_(): torch 1.13's serial normal kernel in "
            "NHWC memory order, not the values torch.randn([B,4,h,w]) would give"]}

    def uninstall(self):
        for obj, name, old in reversed(self._undo):
            setattr(obj, name, old)
        self._undo = []

    def check_counts(self, S, B):
        r = self.r
        for k in ("pixel_values", "vae_noise", "latents", "noise", "timesteps", "input_ids", "loss", "grad", "lr"):
            assert len(r[k]) == S, (k, len(r[k]))
        assert len(r["rows"]) == S + 1, len(r["rows"])
        # accelerate's DataLoaderShard fetches one batch ahead (it must know which batch is the last), so the dataset
        # produced S+1 batches; the last one never reached the model. Keep the ones that did.
        n = len(r["templates"])
        assert n == len(r["flipped"]) and n == (S + 1) * B, (n, len(r["flipped"]))
        self.items_fetched = n
        r["templates"], r["flipped"] = r["templates"][: S * B], r["flipped"][: S * B]
