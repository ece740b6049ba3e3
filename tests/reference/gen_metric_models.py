"""Goldens for the metric models of `singleinsert eval images`: tests/data/metrics/.

  clip_tiny/              transformers CLIPModel (text and vision towers, both projections, logit_scale), tiny random
                          (its 1025-word vocabulary is the toy world tokenizer's size, so that tests can tokenize with it),
                          config, save_pretrained layout (config.json, model.safetensors, preprocessor_config.json)
  dino_tiny/              transformers ViTModel (DINO's architecture: gelu, layer_norm_eps 1e-12, qkv bias, with its
                          pooler, which DINO features do not use), tiny random config, save_pretrained layout, and
                          a preprocessor_config.json as facebook/dino-vits16 writes it ("size" a plain number)
  lpips_alex.safetensors  lpips.LPIPS(net='alex', version='0.1') state dict: the lin heads the lpips project ships
                          (lpips/weights/v0.1/alex.pth) and a random AlexNet trunk (the ImageNet trunk is a download)
  metrics_golden.safetensors  inputs and the reference outputs

Made with (the reference environment of ../shared/refgen, set up by tests/reference/setup_env.sh):
    GOLDEN_ENV=$SCRATCH/refenv source ../shared/refgen/env.sh
    $PY tests/reference/gen_metric_models.py
Code that runs: transformers 815ea8e8 (4.36.0.dev0) CLIPModel, CLIPImageProcessor, ViTModel; richzhang/
PerceptualSimilarity @ 082bb24 (lpips 0.1.4; $GOLDEN_SRC/PerceptualSimilarity) with torchvision 0.14.1's AlexNet;
torch 1.13 (Debian), CPU, float32. `import lpips` pulls lpips/trainer.py, which imports scipy and tqdm for training
only; scipy is absent here and is stood in by an empty module (LPIPS.forward uses neither).
Every weight is rounded to float16 and stored as float16 (the AlexNet trunk alone is 2.5 M parameters); the reference
runs on the same values in float32. Deterministic: a second run writes byte-identical files."""
import json
import os
import sys
import types

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, ViTConfig, ViTImageProcessor, ViTModel  # noqa: E402

sys.path.insert(0, os.path.join(os.environ["GOLDEN_SRC"], "PerceptualSimilarity"))
for name in ("scipy", "scipy.ndimage"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["scipy.ndimage"].zoom = None
import lpips  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "metrics")
SEED = 20241130


def round_to_half_(model):
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.half().float())


def perturb_(model, generator):
    """Norm weights and biases away from 1 and 0, so that a mix-up of them shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.add_(torch.randn(p.shape, generator=generator) * 0.1)
            elif name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=generator) * 0.02)


def save_half(model, folder, weights_name="model.safetensors"):
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("position_ids")}
    save_file(state, os.path.join(folder, weights_name), {"format": "pt"})


def clip_golden(generator, tensors):
    config = CLIPConfig(
        text_config=dict(vocab_size=1025, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                         eos_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16, logit_scale_init_value=2.6592)
    torch.manual_seed(SEED)
    model = CLIPModel(config).eval()
    perturb_(model, generator)
    with torch.no_grad():
        model.logit_scale.fill_(2.9)
    round_to_half_(model)
    folder = os.path.join(OUT, "clip_tiny")
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)
    save_half(model, folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)

    ids = torch.randint(3, 1015, (3, 77), generator=generator)
    ids[0, 9] = 1024  # pooled at the highest id (eos_token_id 2: transformers' legacy rule)
    ids[1, 40] = 1024
    ids[2, 76] = 1024
    pixels = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
        tensors["clip.input_ids"] = ids.to(torch.int64)
        tensors["clip.pixel_values"] = pixels
        tensors["clip.text_embeds"] = model.get_text_features(input_ids=ids)
        tensors["clip.image_embeds"] = model.get_image_features(pixel_values=pixels)
        tensors["clip.logits_per_image"] = out.logits_per_image
        tensors["clip.text_pooled"] = out.text_model_output.pooler_output
        tensors["clip.image_pooled"] = out.vision_model_output.pooler_output

    # The processor on a real picture: PIL bicubic to the shortest edge, centre crop, CLIP's mean and std.
    toy = Image.open(os.path.join(HERE, "..", "data", "methods", "toy.png")).convert("RGB")
    wide = toy.resize((77, 53), resample=Image.Resampling.BICUBIC)
    tensors["clip.processor_input"] = torch.from_numpy(np.array(wide))
    tensors["clip.processor_output"] = processor(images=wide, return_tensors="pt")["pixel_values"]
    # Older folders (openai/clip-vit-base-patch32) give "size" and "crop_size" as plain numbers: for CLIP a number is the
    # shortest edge.
    legacy = CLIPImageProcessor(size=32, crop_size=32)
    tensors["clip.processor_output_legacy"] = legacy(images=wide, return_tensors="pt")["pixel_values"]


def dino_golden(generator, tensors):
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-12, qkv_bias=True)
    torch.manual_seed(SEED + 1)
    model = ViTModel(config, add_pooling_layer=True).eval()
    perturb_(model, generator)
    with torch.no_grad():  # ViT's init leaves these at zero
        model.embeddings.cls_token.normal_(0, 0.5, generator=generator)
        model.embeddings.position_embeddings.normal_(0, 0.5, generator=generator)
    round_to_half_(model)
    folder = os.path.join(OUT, "dino_tiny")
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)
    save_half(model, folder)
    pixels = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    tensors["dino.pixel_values"] = pixels
    tensors["dino.last_hidden_state"] = out.last_hidden_state
    # DINO's processor as facebook/dino-vits16 configures it: "size" a plain number (for ViT: a square), bilinear,
    # ImageNet's mean and std, no crop.
    processor = ViTImageProcessor(size=32, resample=Image.Resampling.BILINEAR, image_mean=[0.485, 0.456, 0.406],
                                  image_std=[0.229, 0.224, 0.225])
    processor.save_pretrained(folder)
    with open(os.path.join(folder, "preprocessor_config.json")) as f:
        saved = json.load(f)
    saved["size"] = 32  # as the hub's file writes it (save_pretrained writes the dict form)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
        f.write("\n")
    toy = Image.open(os.path.join(HERE, "..", "data", "methods", "toy.png")).convert("RGB")
    wide = toy.resize((77, 53), resample=Image.Resampling.BICUBIC)
    tensors["dino.processor_output"] = processor(images=wide, return_tensors="pt")["pixel_values"]


def lpips_golden(generator, tensors):
    torch.manual_seed(SEED + 2)
    model = lpips.LPIPS(pretrained=True, net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    round_to_half_(model)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, "lpips_alex.safetensors"), {"format": "pt"})
    a = torch.rand(3, 3, 64, 64, generator=generator) * 2 - 1
    b = (a + torch.randn(3, 3, 64, 64, generator=generator) * torch.tensor([0.05, 0.3, 1.0]).view(3, 1, 1, 1))
    b = b.clamp(-1, 1)
    c = torch.rand(1, 3, 96, 80, generator=generator) * 2 - 1
    d = torch.rand(1, 3, 96, 80, generator=generator) * 2 - 1
    with torch.no_grad():
        tensors["lpips.in0"], tensors["lpips.in1"] = a, b
        value, layers = model(a, b, retPerLayer=True)
        tensors["lpips.distance"] = value.flatten()
        tensors["lpips.per_layer"] = torch.cat([l.flatten(1) for l in layers], 1)  # [3, 5]
        tensors["lpips.in2"], tensors["lpips.in3"] = c, d
        tensors["lpips.distance_96x80"] = model(c, d).flatten()


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(SEED)
    tensors = {}
    clip_golden(generator, tensors)
    dino_golden(generator, tensors)
    lpips_golden(generator, tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "metrics_golden.safetensors"),
              {"notes": "made by tests/reference/gen_metric_models.py"})
    for k, v in sorted(tensors.items()):
        print(k, tuple(v.shape), v.dtype)


if __name__ == "__main__":
    main()
