"""Golden for Cross Initialization: tests/data/methods/cross_init.{safetensors,json} (+ names.txt; toy.png is the
image gen_textual_inversion.py writes, regenerated here identically).

Made with (the reference environment of ../shared/refgen, set up by tests/reference/setup_env.sh):
    GOLDEN_ENV=$SCRATCH/refenv source ../shared/refgen/env.sh
    $PY tests/reference/gen_cross_init.py
Code that runs: the official lyuPang/CrossInitialization @ 0b1e39a6740a0152ad78a07b5ef99c9967687ad1
(train_cross_init.py, utils.py, textual_inversion_dataset.py, models/clip_model.py), imported from
$GOLDEN_SRC/CrossInitialization; its train() runs unmodified on the tiny pipeline $GOLDEN_OUT/sd_tiny with argv
    --n_persudo_tokens 2 --placeholder_token <toy> --celeb_path names.txt --resolution 64 --train_batch_size 2
    --max_train_steps 3 --learning_rate 5e-3 --scale_lr --only_save_embeds --seed 20240602
(everything else, reg_weight 1e-5 included, the script's defaults), on diffusers 0.25.1, transformers 815ea8e8
(4.36.0.dev0), accelerate v0.25.0 (d08c23c2), huggingface_hub v0.20.3, torch 1.13 (Debian), CPU, float32, one thread.
utils.token_cross_init (the --initialize_tokens path) is called directly, as train() calls it, for words
["face", "person"]. A second run with --reg_weight 1.0 (same seed, same draws) is stored under `reg1.*` so that
the regulariser's gradient is visible in float32. The only change to the official code's environment: the repo's
models/clip_model.py imports `_expand_mask` from transformers.models.clip.modeling_clip, which transformers 4.36 no
longer has; transformers' own equivalent (`_prepare_4d_attention_mask`) is put under that name before the import
(it is used only when an attention_mask is passed, which the official code never does).
method_recorder.Recorder wraps (never replaces) the functions that draw random numbers or see the batch, the losses
and the gradient, and records what they returned.
Deterministic: a second run writes byte-identical files."""
import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import method_recorder as mr  # noqa: E402

CI_DIR = os.path.join(mr.SRC, "CrossInitialization")
SCRIPT = os.path.join(CI_DIR, "train_cross_init.py")
S, B, RES, N = 3, 2, 64, 2
SEED = 20240602
LR_ARG = 5e-3
PLACEHOLDER = "<toy>"
NAMES = ["Emma Watson", "Barack Obama", "Madonna", "Samuel L. Jackson"]   # 2, 2, 1 and 4 tokens: column 2 averages 3 names
WORDS = ["face", "person"]
TAG = "tests/reference/gen_cross_init.py"


def import_official():
    import transformers.models.clip.modeling_clip as mc
    from transformers.modeling_attn_mask_utils import _prepare_4d_attention_mask

    if not hasattr(mc, "_expand_mask"):
        mc._expand_mask = _prepare_4d_attention_mask
    sys.path.insert(0, CI_DIR)
    tci = mr.import_file("train_cross_init", SCRIPT)
    return tci, sys.modules["textual_inversion_dataset"], sys.modules["utils"], sys.modules["models.clip_model"]


def run_training(tci, tid, names_path, data_dir, out_dir, extra=()):
    """train_cross_init.train() with the recorder installed. Returns (recorder, ids, tokenizer, init, argv)."""
    from transformers import CLIPTokenizer

    hold = {"ids": [], "tok": None, "init": []}
    rec = mr.Recorder(SCRIPT, tid, lambda: hold["ids"])
    old_add = CLIPTokenizer.add_tokens

    def add_tokens(this, toks, *a, **kw):
        n = old_add(this, toks, *a, **kw)
        hold["tok"] = this
        hold["ids"].append(this.convert_tokens_to_ids(toks))
        return n
    old_celeb = tci.celeb_names_cross_init

    def celeb(*a, **kw):
        out = old_celeb(*a, **kw)
        hold["init"].append(out.detach().clone())
        return out
    CLIPTokenizer.add_tokens = add_tokens
    tci.celeb_names_cross_init = celeb
    rec.install()
    argv = ["train_cross_init.py", "--pretrained_model_name_or_path", mr.SD_TINY, "--train_data_dir", data_dir,
            "--output_dir", out_dir, "--placeholder_token", PLACEHOLDER, "--n_persudo_tokens", str(N),
            "--celeb_path", names_path, "--resolution", str(RES), "--train_batch_size", str(B),
            "--max_train_steps", str(S), "--learning_rate", str(LR_ARG), "--scale_lr", "--only_save_embeds",
            "--seed", str(SEED), *extra]
    sys.argv = argv
    try:
        tci.train()
    finally:
        rec.uninstall()
        CLIPTokenizer.add_tokens = old_add
        tci.celeb_names_cross_init = old_celeb
    rec.check_counts(S, B)
    assert len(hold["init"]) == 1
    return rec, hold["ids"], hold["tok"], hold["init"][0], argv


def adamw_check(before, grads, lr, betas, eps, wd, after):
    """Independent torch.optim.AdamW (torch 1.13, amsgrad False) on the placeholder rows (float64)."""
    p, m, v = before.clone().double(), torch.zeros(before.shape, dtype=torch.float64), torch.zeros(
        before.shape, dtype=torch.float64)
    out = []
    for k, g in enumerate(grads, start=1):
        g = g.double()
        p = p * (1 - lr * wd)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        p = p - (lr / (1 - betas[0] ** k)) * m / ((v.sqrt() / (1 - betas[1] ** k) ** 0.5) + eps)
        out.append(p.clone())
    return max(float((o - a.double()).abs().max()) for o, a in zip(out, after))


def summarize_run(rec, pids, init, reg_weight, defaults):
    """Tensors of one training run + consistency checks."""
    r = rec.r
    rows = torch.stack(r["rows"])
    before, after = rows[0], rows[1:]
    assert torch.equal(before, init)
    t0, t1 = rec.table_at_first_step, rec.table_final
    other = torch.ones(t0.shape[0], dtype=torch.bool)
    other[pids] = False
    other_unchanged = bool(torch.equal(t0[other], t1[other]))
    # the script: reg_loss = F.pairwise_distance(E[ids], init, p=2).mean() * reg_weight; loss = F.mse_loss(...) + reg
    assert len(r["pairwise_distance"]) == S and len(r["mse_loss"]) == S
    pd = torch.stack(r["pairwise_distance"])                    # [S, n]
    reg_unweighted = pd.mean(dim=1)
    noise_loss = torch.stack(r["mse_loss"])
    for s in range(S):
        assert torch.equal(r["loss"][s], r["mse_loss"][s] + r["pairwise_distance"][s].mean() * reg_weight), s
    # the distance as the official call computes it (torch's pairwise_distance: ||x1 - x2 + eps||_2, eps = 1e-6)
    for s in range(S):
        mine = (rows[s].double() - init.double() + 1e-6).norm(dim=-1)
        assert float((mine - pd[s].double()).abs().max()) < 1e-6, s
    lr_used = r["lr"][0]
    assert all(x == lr_used for x in r["lr"])
    adam_err = adamw_check(before, r["grad"], lr_used, (defaults["adam_beta1"], defaults["adam_beta2"]),
                           defaults["adam_epsilon"], defaults["adam_weight_decay"], after)
    assert adam_err < 1e-6, adam_err
    t = {
        "input_ids": torch.stack(r["input_ids"]).to(torch.int64),
        "pixel_values": torch.stack(r["pixel_values"]),
        "flipped": torch.tensor(r["flipped"], dtype=torch.int64).view(S, B),
        "vae_noise": torch.stack(r["vae_noise"]),
        "latents": torch.stack(r["latents"]) * 0.18215,
        "noise": torch.stack(r["noise"]),
        "timesteps": torch.stack(r["timesteps"]).to(torch.int64),
        "embeddings_before": before,
        "loss": torch.stack(r["loss"]),
        "noise_loss": noise_loss,
        "reg_loss": reg_unweighted,
        "pairwise_distance": pd,
        "grad_step1": r["grad"][0],
        "grad": torch.stack(r["grad"]),
        "embeddings_after": after,
        "other_rows_unchanged": torch.tensor(1.0 if other_unchanged else 0.0),
        "lr": torch.tensor(lr_used, dtype=torch.float32),
        "reg_weight": torch.tensor(reg_weight, dtype=torch.float32),
    }
    checks = {"other_rows_unchanged": other_unchanged, "independent_adamw_max_abs_diff": adam_err,
              "loss_equals_noise_plus_weighted_reg_bitwise": True}
    return t, checks


def main():
    os.makedirs(mr.METHODS_OUT, exist_ok=True)
    torch.set_num_threads(1)
    mr.patch_slow_tokenizer_without_tokenizers()
    img = mr.toy_image(os.path.join(mr.METHODS_OUT, "toy.png"))
    names_path = os.path.join(mr.METHODS_OUT, "names.txt")
    with open(names_path, "w", encoding="utf-8") as f:
        f.write("\n".join(NAMES) + "\n")

    tci, tid, cu, cm = import_official()
    sys.argv = ["train_cross_init.py", "--pretrained_model_name_or_path", "X", "--train_data_dir", "X",
                "--placeholder_token", "X", "--n_persudo_tokens", "2", "--celeb_path", "X"]
    defaults = {k: v for k, v in vars(tci.parse_args()).items()
                if k not in ("pretrained_model_name_or_path", "train_data_dir", "placeholder_token", "celeb_path",
                             "n_persudo_tokens")}

    # ---- the training run (default reg_weight) and a second one with reg_weight 1.0
    data_dir, out_dir = mr.prepare_scratch("cross_init", img)
    rec, pids, tok, init, argv = run_training(tci, tid, names_path, data_dir, out_dir)
    assert pids == [49408, 49409], pids
    saved = torch.load(os.path.join(out_dir, "learned_embeds.bin"))
    with open(os.path.join(out_dir, "config.json")) as f:
        saved_cfg = json.load(f)
    rec.check_pixels(img, S, B)
    draws = rec.replay_draws(SEED, S, B, tid.imagenet_templates_small)
    t, checks = summarize_run(rec, pids, init, defaults["reg_weight"], defaults)
    assert list(saved) == ["<toy>_v0", "<toy>_v1"]
    assert torch.equal(torch.stack([saved["<toy>_v0"], saved["<toy>_v1"]]), t["embeddings_after"][-1])
    r = rec.r
    templates_used, flipped = r["templates"], r["flipped"]
    items_fetched = rec.items_fetched

    data_dir1, out_dir1 = mr.prepare_scratch("cross_init_reg1", img)
    rec1, pids1, _tok1, init1, _argv1 = run_training(tci, tid, names_path, data_dir1, out_dir1,
                                                    extra=("--reg_weight", "1.0"))
    assert pids1 == pids and torch.equal(init1, init)
    t1, checks1 = summarize_run(rec1, pids, init, 1.0, defaults)
    for k in ("input_ids", "pixel_values", "vae_noise", "noise", "timesteps"):   # same seed -> same draws
        assert torch.equal(t1[k], t[k]), k
    assert rec1.r["templates"] == templates_used

    # ---- (i) init from names, called directly, with its intermediate (the averaged token embeddings) recorded
    from transformers.models.clip.modeling_clip import CLIPTextEmbeddings

    te = cm.CLIPTextModel.from_pretrained(mr.SD_TINY, subfolder="text_encoder")
    te.resize_token_embeddings(len(tok))
    seen = []
    old_fwd = CLIPTextEmbeddings.forward

    def emb_fwd(this, input_ids=None, position_ids=None, inputs_embeds=None):
        seen.append((None if input_ids is None else input_ids.clone(),
                     None if inputs_embeds is None else inputs_embeds.detach().clone()))
        return old_fwd(this, input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)
    CLIPTextEmbeddings.forward = emb_fwd
    try:
        init_names = cu.celeb_names_cross_init(names_path, tok, te, N)
        init_words = cu.token_cross_init(WORDS, tok, te)
    finally:
        CLIPTextEmbeddings.forward = old_fwd
    assert torch.equal(init_names, init), "direct call != the training run's init"
    assert len(seen) == 2
    names_input_embeds = seen[0][1][0]                          # [77, 32]
    words_input_ids = seen[1][0][0]                             # [k+2]
    assert init_words.shape == (N, 32), init_words.shape
    # independent check of (i): per-column means of the first n tokens of each name, written out here
    W = te.get_input_embeddings().weight.detach()
    name_ids = [tok(nm, padding="do_not_pad", truncation=True, max_length=77).input_ids for nm in NAMES]
    cols = [[W[ids[i]] for ids in name_ids if len(ids) - 2 >= i] for i in range(1, N + 1)]
    col_mean = torch.stack([torch.stack(c).mean(0) for c in cols])
    assert torch.equal(col_mean, names_input_embeds[1:1 + N])
    pad = tok.pad_token_id
    assert torch.equal(names_input_embeds[0], W[tok.bos_token_id])
    assert torch.equal(names_input_embeds[1 + N], W[tok.eos_token_id])
    assert all(torch.equal(names_input_embeds[j], W[pad]) for j in range(2 + N, 77))
    # ... and the stock transformers text model (embeddings + causal encoder + final LayerNorm) on those rows
    from transformers import CLIPTextModel
    from transformers.modeling_attn_mask_utils import _create_4d_causal_attention_mask
    stock = CLIPTextModel.from_pretrained(mr.SD_TINY, subfolder="text_encoder")
    with torch.no_grad():
        tm = stock.text_model
        h = tm.embeddings(inputs_embeds=names_input_embeds.unsqueeze(0))
        mask = _create_4d_causal_attention_mask((1, 77), h.dtype, h.device)
        h = tm.final_layer_norm(tm.encoder(inputs_embeds=h, causal_attention_mask=mask).last_hidden_state)
        chk_stock_names = float((h[0, 1:1 + N] - init_names).abs().max())
        w_ids = tok(" ".join(WORDS), padding="do_not_pad", truncation=True, max_length=77,
                    return_tensors="pt").input_ids
        chk_stock_words = float((stock(w_ids)[0][0, 1:-1] - init_words).abs().max())
    assert chk_stock_names < 1e-6 and chk_stock_words < 1e-6, (chk_stock_names, chk_stock_words)

    prompts = [tpl.format("face of {} person".format("<toy>_v0 <toy>_v1")) for tpl in templates_used]
    for s in range(S):
        for b in range(B):
            ids = tok(prompts[s * B + b], padding="max_length", truncation=True, max_length=77,
                      return_tensors="pt").input_ids[0]
            assert torch.equal(ids, t["input_ids"][s, b]), (s, b)

    tensors = {"placeholder_ids": torch.tensor(pids, dtype=torch.int64),
               "init_from_names": init_names, "names_input_embeds": names_input_embeds,
               "names_col_mean": col_mean,
               "init_from_words": init_words, "words_input_ids": words_input_ids.to(torch.int64)}
    tensors.update(t)
    for k in ("loss", "noise_loss", "reg_loss", "pairwise_distance", "grad_step1", "grad", "embeddings_after",
              "other_rows_unchanged", "reg_weight"):
        tensors["reg1." + k] = t1[k]
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    mr.save_tensors(os.path.join(mr.METHODS_OUT, "cross_init.safetensors"), tensors,
                    {"notes": "see README.md and cross_init.json"}, generator=TAG)

    args_used = argv[1:]
    args_used[args_used.index(mr.SD_TINY)] = "<GOLDEN_OUT>/sd_tiny"
    args_used[args_used.index(data_dir)] = "<scratch>/data (holds only toy.png)"
    args_used[args_used.index(out_dir)] = "<scratch>/out"
    args_used[args_used.index(names_path)] = "tests/data/methods/names.txt"
    for k in ("pretrained_model_name_or_path", "train_data_dir", "output_dir", "celeb_path"):
        saved_cfg.pop(k, None)
    summary = {
        "generator": TAG,
        "code": {"script": "lyuPang/CrossInitialization train_cross_init.py (+ utils.py, textual_inversion_dataset.py,"
                           " models/clip_model.py)", **mr.COMMITS},
        "model": "<GOLDEN_OUT>/sd_tiny (text hidden 32, VAE /2, CLIP tokenizer vocab 49408), float32 CPU",
        "argv": args_used,
        "second_run": "same argv + --reg_weight 1.0 -> tensors reg1.* (same draws, asserted)",
        "image": {"file": "toy.png", "size": [64, 64], "sha256": hashlib.sha256(open(img, "rb").read()).hexdigest()},
        "steps": S, "batch_size": B, "resolution": RES, "seed": SEED, "n_persudo_tokens": N,
        "learning_rate_arg": LR_ARG, "scale_lr": True, "lr_used": rec.r["lr"][0],
        "lr_formula": "learning_rate * gradient_accumulation_steps * train_batch_size * num_processes",
        "reg_weight": defaults["reg_weight"],
        "placeholder_tokens": tok.convert_ids_to_tokens(pids), "placeholder_ids": pids,
        "placeholder_string_in_prompt": "face of <toy>_v0 <toy>_v1 person",
        "names": NAMES, "names_token_ids": name_ids, "pad_token_id": pad,
        "words": WORDS, "words_input_ids": words_input_ids.tolist(),
        "dataset_items_fetched": items_fetched,
        "random_draws": draws,
        "templates_used": templates_used, "prompts": prompts, "flipped": flipped,
        "loss": t["loss"].tolist(), "noise_loss": t["noise_loss"].tolist(), "reg_loss": t["reg_loss"].tolist(),
        "reg1": {"loss": t1["loss"].tolist(), "noise_loss": t1["noise_loss"].tolist(),
                 "reg_loss": t1["reg_loss"].tolist()},
        "timesteps": t["timesteps"].tolist(),
        "saved_file": {"name": "learned_embeds.bin (torch.save)", "keys": list(saved),
                       "shape_each": list(saved["<toy>_v0"].shape), "dtype": str(saved["<toy>_v0"].dtype),
                       "config.json": "args.__dict__ next to it"},
        "checks": {**checks, "reg1": checks1,
                   "init_names_stock_transformers_max_abs_diff": chk_stock_names,
                   "init_words_stock_transformers_max_abs_diff": chk_stock_words,
                   "names_col_mean_written_out_equal": True, "input_ids_equal_tokenizer_of_prompts": True},
        "argparse_defaults": defaults,
        "dataset_defaults": {"interpolation": "bicubic", "flip_p": 0.5, "center_crop": False,
                             "templates": "imagenet_templates_small of textual_inversion_dataset.py (always; "
                                          "learnable_property is ignored)",
                             "text": "random.choice(templates).format('face of {} person'.format(' '.join(tokens)))"},
        "imagenet_templates_small": tid.imagenet_templates_small,
    }
    mr.write_json(os.path.join(mr.METHODS_OUT, "cross_init.json"), summary)
    print(json.dumps({"loss": summary["loss"], "noise_loss": summary["noise_loss"], "reg": summary["reg_loss"],
                      "reg1": summary["reg1"], "lr": summary["lr_used"], "prompts": prompts,
                      "moved": float((t["embeddings_after"][-1] - t["embeddings_before"]).abs().max()),
                      "grad1_norm": float(t["grad_step1"].norm()), "reg1_grad1_norm": float(t1["grad_step1"].norm()),
                      "names_ids": name_ids, "words_ids": words_input_ids.tolist(),
                      "chk": [chk_stock_names, chk_stock_words]}, indent=1))


if __name__ == "__main__":
    main()
