"""Golden for Textual Inversion training: tests/data/methods/textual_inversion.{safetensors,json} (+ toy.png).

Made with (the reference environment of ../shared/refgen, set up by tests/reference/setup_env.sh):
    GOLDEN_ENV=$SCRATCH/refenv source ../shared/refgen/env.sh
    $PY tests/reference/gen_textual_inversion.py
Code that runs: the official diffusers v0.25.1 (1909952826ffb0609f5df172ac7948c46422614d)
examples/textual_inversion/textual_inversion.py, imported from $GOLDEN_SRC/diffusers_examples and its main() run
unmodified on the tiny pipeline $GOLDEN_OUT/sd_tiny with argv
    --num_vectors 2 --placeholder_token <toy> --initializer_token toy --resolution 64 --train_batch_size 2
    --max_train_steps 3 --learning_rate 5e-3 --scale_lr --seed 20240601 (everything else: the script's defaults),
with diffusers 0.25.1, transformers 815ea8e8 (4.36.0.dev0), accelerate v0.25.0 (d08c23c2), huggingface_hub v0.20.3,
torch 1.13 (Debian), CPU, float32, one thread. method_recorder.Recorder wraps (never replaces) the functions that
draw random numbers or see the batch/loss/gradient and records what they returned; nothing is re-implemented except
the independent AdamW check at the end (asserted, written to the json).
Deterministic: a second run writes byte-identical files."""
import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import method_recorder as mr  # noqa: E402

SCRIPT = os.path.join(mr.SRC, "diffusers_examples", "examples", "textual_inversion", "textual_inversion.py")
S, B, RES = 3, 2, 64
SEED = 20240601
LR_ARG = 5e-3
PLACEHOLDER, INITIALIZER, NUM_VECTORS = "<toy>", "toy", 2
TAG = "tests/reference/gen_textual_inversion.py"


def adamw_check(before, grads_full_rows, lr, betas, eps, wd, after):
    """Independent re-computation of torch.optim.AdamW (torch 1.13, amsgrad False) on the placeholder rows only,
    followed by the script's restore (which never touches these rows). Needs the gradient of every step, which the
    recorder kept."""
    p = before.clone().double()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    out = []
    for k, g in enumerate(grads_full_rows, start=1):
        g = g.double()
        p = p * (1 - lr * wd)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        bc1, bc2 = 1 - betas[0] ** k, 1 - betas[1] ** k
        p = p - (lr / bc1) * m / ((v.sqrt() / bc2 ** 0.5) + eps)
        out.append(p.clone())
    return max(float((o - a.double()).abs().max()) for o, a in zip(out, after))


def main():
    os.makedirs(mr.METHODS_OUT, exist_ok=True)
    torch.set_num_threads(1)
    mr.patch_slow_tokenizer_without_tokenizers()
    img = mr.toy_image(os.path.join(mr.METHODS_OUT, "toy.png"))
    data_dir, out_dir = mr.prepare_scratch("textual_inversion", img)

    ti = mr.import_file("textual_inversion", SCRIPT)
    # the argparse defaults, as the script defines them (required arguments given dummy values)
    sys.argv = ["textual_inversion.py", "--pretrained_model_name_or_path", "X", "--train_data_dir", "X",
                "--placeholder_token", "X", "--initializer_token", "X"]
    defaults = {k: v for k, v in vars(ti.parse_args()).items()
                if k not in ("pretrained_model_name_or_path", "train_data_dir", "placeholder_token", "initializer_token")}

    ids_holder = {}
    rec = mr.Recorder(SCRIPT, ti, lambda: ids_holder["ids"])
    # placeholder ids: read from the tokenizer the script builds (CLIPTokenizer.add_tokens is wrapped to learn them)
    from transformers import CLIPTokenizer
    old_add = CLIPTokenizer.add_tokens

    def add_tokens(this, toks, *a, **kw):
        n = old_add(this, toks, *a, **kw)
        ids_holder["tokenizer"] = this
        ids_holder["ids"] = this.convert_tokens_to_ids(toks)
        return n
    CLIPTokenizer.add_tokens = add_tokens
    rec.install()
    argv = ["textual_inversion.py", "--pretrained_model_name_or_path", mr.SD_TINY, "--train_data_dir", data_dir,
            "--output_dir", out_dir, "--placeholder_token", PLACEHOLDER, "--initializer_token", INITIALIZER,
            "--num_vectors", str(NUM_VECTORS), "--resolution", str(RES), "--train_batch_size", str(B),
            "--max_train_steps", str(S), "--learning_rate", str(LR_ARG), "--scale_lr", "--seed", str(SEED)]
    sys.argv = argv
    try:
        ti.main()
    finally:
        rec.uninstall()
        CLIPTokenizer.add_tokens = old_add
    rec.check_counts(S, B)
    r = rec.r
    tok = ids_holder["tokenizer"]
    pids = ids_holder["ids"]
    assert pids == [49408, 49409], pids
    init_ids = tok.encode(INITIALIZER, add_special_tokens=False)
    assert len(init_ids) == 1
    init_id = init_ids[0]
    # the script used the same tokens
    assert tok.convert_ids_to_tokens(pids) == ["<toy>", "<toy>_1"]

    sf = 0.18215
    from diffusers import AutoencoderKL
    assert AutoencoderKL.load_config(os.path.join(mr.SD_TINY, "vae"))["scaling_factor"] == sf
    rows = torch.stack(r["rows"])                              # [S+1, 2, 32]
    before, after = rows[0], rows[1:]
    table0, table1 = rec.table_at_first_step, rec.table_final
    other = torch.ones(table0.shape[0], dtype=torch.bool)
    other[pids] = False
    other_unchanged = bool(torch.equal(table0[other], table1[other]))
    # the pretrained rows too (from the tiny text encoder's file), and the init (rows = the initializer's row)
    from safetensors.torch import load_file
    te_sd = load_file(os.path.join(mr.SD_TINY, "text_encoder", "model.safetensors"))
    pre = te_sd["text_model.embeddings.token_embedding.weight"]
    assert torch.equal(table1[: pre.shape[0]], pre)
    assert torch.equal(before, pre[init_id].unsqueeze(0).expand(2, -1))
    # the file the script saved at the end
    saved = load_file(os.path.join(out_dir, "learned_embeds.safetensors"))
    assert list(saved) == [PLACEHOLDER] and torch.equal(saved[PLACEHOLDER], after[-1])
    lr_used = r["lr"][0]
    assert all(x == lr_used for x in r["lr"]) and lr_used == LR_ARG * B  # scale_lr: lr * grad_accum * B * processes
    assert all(torch.equal(a, b) for a, b in zip(r["mse_loss"], r["loss"]))
    adam_err = adamw_check(before, r["grad"], lr_used, (defaults["adam_beta1"], defaults["adam_beta2"]),
                           defaults["adam_epsilon"], defaults["adam_weight_decay"], after)
    assert adam_err < 1e-6, adam_err

    prompts = [t.format("<toy> <toy>_1") for t in r["templates"]]
    input_ids = torch.stack(r["input_ids"])                    # [S, B, 77]
    for s in range(S):
        for b in range(B):
            ids = tok(prompts[s * B + b], padding="max_length", truncation=True, max_length=77,
                      return_tensors="pt").input_ids[0]
            assert torch.equal(ids, input_ids[s, b]), (s, b)
    rec.check_pixels(img, S, B)
    draws = rec.replay_draws(SEED, S, B, ti.imagenet_templates_small)
    tensors = {
        "placeholder_ids": torch.tensor(pids, dtype=torch.int64),
        "initializer_id": torch.tensor(init_id, dtype=torch.int64),
        "input_ids": input_ids.to(torch.int64),
        "pixel_values": torch.stack(r["pixel_values"]),
        "flipped": torch.tensor(r["flipped"], dtype=torch.int64).view(S, B),
        "vae_noise": torch.stack(r["vae_noise"]),
        "latents": torch.stack(r["latents"]) * sf,
        "noise": torch.stack(r["noise"]),
        "timesteps": torch.stack(r["timesteps"]).to(torch.int64),
        "embeddings_before": before,
        "loss": torch.stack(r["loss"]),
        "grad_step1": r["grad"][0],
        "grad": torch.stack(r["grad"]),
        "embeddings_after": after,
        "other_rows_unchanged": torch.tensor(1.0 if other_unchanged else 0.0),
        "lr": torch.tensor(lr_used, dtype=torch.float32),
    }
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    st_path = os.path.join(mr.METHODS_OUT, "textual_inversion.safetensors")
    mr.save_tensors(st_path, tensors, {"notes": "see README.md and textual_inversion.json"}, generator=TAG)
    # the scratch paths are fixed, but written relative to be readable
    args_used = argv[1:]
    args_used[args_used.index(mr.SD_TINY)] = "<GOLDEN_OUT>/sd_tiny"
    args_used[args_used.index(data_dir)] = "<scratch>/data (holds only toy.png)"
    args_used[args_used.index(out_dir)] = "<scratch>/out"
    summary = {
        "generator": TAG,
        "code": {"script": "huggingface/diffusers v0.25.1 examples/textual_inversion/textual_inversion.py",
                 **mr.COMMITS},
        "model": "<GOLDEN_OUT>/sd_tiny (text hidden 32, VAE /2, CLIP tokenizer vocab 49408), float32 CPU",
        "argv": args_used,
        "image": {"file": "toy.png", "size": [64, 64], "sha256": hashlib.sha256(open(img, "rb").read()).hexdigest()},
        "steps": S, "batch_size": B, "resolution": RES, "seed": SEED,
        "learning_rate_arg": LR_ARG, "scale_lr": True,
        "lr_used": lr_used, "lr_formula": "learning_rate * gradient_accumulation_steps * train_batch_size * num_processes",
        "placeholder_tokens": tok.convert_ids_to_tokens(pids), "placeholder_ids": pids,
        "placeholder_string": "<toy> <toy>_1",
        "initializer_token": INITIALIZER, "initializer_id": init_id,
        "dataset_items_fetched": rec.items_fetched,
        "note_prefetch": "accelerate's DataLoaderShard fetches batch k+1 before it yields batch k, so the dataset's "
                         "draws (random.choice of the template, torch.rand of RandomHorizontalFlip) for batch k+1 "
                         "happen before step k's VAE/noise/timestep draws; one extra batch is fetched and unused",
        "random_draws": draws,
        "templates_used": r["templates"], "prompts": prompts, "flipped": r["flipped"],
        "loss": [float(x) for x in r["loss"]],
        "timesteps": [[int(t) for t in ts] for ts in r["timesteps"]],
        "saved_file": {"name": "learned_embeds.safetensors", "keys": list(saved),
                       "shape": list(saved[PLACEHOLDER].shape), "dtype": str(saved[PLACEHOLDER].dtype),
                       "metadata": {"format": "pt"}},
        "checks": {"other_rows_unchanged": other_unchanged, "independent_adamw_max_abs_diff": adam_err,
                   "embeddings_before_equal_initializer_row": True,
                   "input_ids_equal_tokenizer_of_prompts": True},
        "argparse_defaults": defaults,
        "imagenet_templates_small": ti.imagenet_templates_small,
        "imagenet_style_templates_small": ti.imagenet_style_templates_small,
        "dataset_defaults": {"interpolation": "bicubic", "flip_p": 0.5, "center_crop": False, "set": "train",
                             "pixel_values": "(uint8 / 127.5 - 1.0).astype(float32), HWC->CHW"},
    }
    mr.write_json(os.path.join(mr.METHODS_OUT, "textual_inversion.json"), summary)
    print(json.dumps({"loss": summary["loss"], "lr": lr_used, "timesteps": summary["timesteps"],
                      "prompts": prompts, "flipped": r["flipped"], "adam_err": adam_err,
                      "moved": float((after[-1] - before).abs().max())}, indent=1))


if __name__ == "__main__":
    main()
