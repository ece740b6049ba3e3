"""Loads singleinsert's exports into a real diffusers pipeline and compares its images with
singleinsert's (driven by check_exports.sh, which trains the concepts and draws singleinsert's images).

  --client peft    a diffusers with the PEFT backend: --format diffusers, a1111 and kohya
  --client legacy  a diffusers without peft: --format diffusers-legacy, loaded as the SingleInsert
                   authors' test_lora_emb.py loads LoRAs
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.environ["REFGEN_DIR"]))
import common  # noqa: E402  (../shared/refgen: the slow CLIP tokenizer without the Rust package)

common.patch_slow_tokenizer_without_tokenizers()
import diffusers  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from diffusers.utils import USE_PEFT_BACKEND  # noqa: E402

CONCEPTS = ["singleinsert", "textual-inversion", "cross-init", "ti-dreambooth-lora"]
WITH_LORA = {"singleinsert", "ti-dreambooth-lora"}


def load_exports(pipe, folder, layout, name, has_lora):
    if layout == "diffusers":
        pipe.load_textual_inversion(os.path.join(folder, "learned_embeds.safetensors"))
        if has_lora:
            pipe.load_lora_weights(folder, weight_name="pytorch_lora_weights.safetensors")
    elif layout == "a1111":
        pipe.load_textual_inversion(os.path.join(folder, f"{name}.safetensors"), token=name)
        if has_lora:
            pipe.load_lora_weights(folder, weight_name=f"{name}_lora.safetensors")
    elif layout == "kohya":
        pipe.load_textual_inversion(os.path.join(folder, "embeddings", f"{name}.safetensors"), token=name)
        if has_lora:
            pipe.load_lora_weights(folder, weight_name=f"{name}.safetensors")
    elif layout == "diffusers-legacy":
        pipe.load_textual_inversion(os.path.join(folder, "learned_embeds.safetensors"))
        if has_lora:
            from diffusers.loaders import LoraLoaderMixin
            state, alphas = LoraLoaderMixin.lora_state_dict(folder, weight_name="pytorch_lora_weights.safetensors")
            LoraLoaderMixin.load_lora_into_unet(state, network_alphas=alphas, unet=pipe.unet)
            LoraLoaderMixin.load_lora_into_text_encoder(state, network_alphas=alphas, text_encoder=pipe.text_encoder)
    else:
        raise ValueError(layout)


def draw(pipe, name):
    """The prompt, seed and settings of check_exports.sh's `singleinsert generate`."""
    return pipe(f"a photo of {name} teddy bear on the beach", num_inference_steps=10, guidance_scale=7.5, height=64,
                width=64, generator=torch.Generator("cpu").manual_seed(7), output_type="np").images[0]


def max_abs_uint8(image, ours):
    theirs = (image * 255).round().astype(np.uint8)  # as diffusers' numpy_to_pil
    return int(np.abs(theirs.astype(np.int32) - ours.astype(np.int32)).max())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--client", choices=["peft", "legacy"], required=True)
    args = parser.parse_args()
    assert USE_PEFT_BACKEND == (args.client == "peft"), "the client's PEFT backend is not what was asked"
    layouts = ["diffusers", "a1111", "kohya"] if args.client == "peft" else ["diffusers-legacy"]
    torch.set_num_threads(1)
    rows, worst_overall = [], 0
    for concept in CONCEPTS:
        name = "sks" + concept.replace("-", "")
        ours = np.asarray(Image.open(os.path.join(args.work, "images", concept, "0000.png")).convert("RGB"))
        for layout in layouts:
            if layout == "kohya" and concept not in WITH_LORA:
                continue  # a kohya file is a LoRA; the stage I concepts' embeddings are the a1111 files
            pipe = StableDiffusionPipeline.from_pretrained(args.tiny, safety_checker=None, requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            base = pipe.text_encoder.get_input_embeddings().weight.shape[0]
            load_exports(pipe, os.path.join(args.work, "exports", concept, layout), layout, name, concept in WITH_LORA)
            added = pipe.text_encoder.get_input_embeddings().weight.shape[0] - base
            image = draw(pipe, name)
            worst = max_abs_uint8(image, ours)
            rows.append({"concept": concept, "layout": layout, "tokens_added": added, "max_abs_uint8": worst})
            worst_overall = max(worst_overall, worst)
            print(f"diffusers {diffusers.__version__} ({'PEFT' if USE_PEFT_BACKEND else 'no peft'}) "
                  f"{concept:20s} {layout:17s} tokens added {added}  max |diff| {worst}/255", flush=True)
    # The LoRAs must change the image, or the comparison says nothing about them: the same
    # concepts' embeddings alone, in the same client.
    for concept in sorted(WITH_LORA):
        name = "sks" + concept.replace("-", "")
        ours = np.asarray(Image.open(os.path.join(args.work, "images", concept, "0000.png")).convert("RGB"))
        pipe = StableDiffusionPipeline.from_pretrained(args.tiny, safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        layout = layouts[0]
        load_exports(pipe, os.path.join(args.work, "exports", concept, layout), layout, name, has_lora=False)
        effect = max_abs_uint8(draw(pipe, name), ours)
        print(f"{concept}: without its LoRA the image differs by {effect}/255", flush=True)
        if effect <= 4:
            sys.exit(f"FAIL: {concept}'s LoRA hardly changes the image ({effect}/255); the check is blind to it")
    print(json.dumps({"diffusers": diffusers.__version__, "peft_backend": USE_PEFT_BACKEND, "rows": rows}))
    if worst_overall > 1:
        sys.exit(f"FAIL: an image differs by {worst_overall}/255")
    print("ok: every export draws singleinsert's image within 1/255")


if __name__ == "__main__":
    main()
