"""A full-size SD v1.5 pipeline with random weights, for timing singleinsert against its peers.

Builds UNet2DConditionModel, AutoencoderKL and CLIPTextModel from the resolved SD v1.5 configs with
torch.manual_seed(0) and saves each with save_pretrained (float32 safetensors). The tokenizer files
come from the tiny golden pipeline (the same CLIP vocabulary).

    python3 make_sd15_random.py CONFIGS_FULL_DIR SD_TINY_DIR OUT_DIR
"""
import json
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel


def main():
    configs, tiny, out = sys.argv[1:4]
    partial = out + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(os.path.join(configs, "sd15"), partial)
    shutil.rmtree(os.path.join(partial, "tokenizer"))
    shutil.copytree(os.path.join(tiny, "tokenizer"), os.path.join(partial, "tokenizer"))
    index_path = os.path.join(partial, "model_index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["safety_checker"] = [None, None]
    index["feature_extractor"] = [None, None]
    index["requires_safety_checker"] = False
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
    shutil.rmtree(os.path.join(partial, "feature_extractor"), ignore_errors=True)

    def load(name):
        with open(os.path.join(configs, f"sd15_{name}_resolved_config.json")) as f:
            return json.load(f)

    torch.manual_seed(0)
    UNet2DConditionModel.from_config(load("unet")).save_pretrained(os.path.join(partial, "unet"))
    AutoencoderKL.from_config(load("vae")).save_pretrained(os.path.join(partial, "vae"))
    text_config = {k: v for k, v in load("text_encoder").items() if not k.startswith("_")}
    CLIPTextModel(CLIPTextConfig(**text_config)).save_pretrained(os.path.join(partial, "text_encoder"))
    shutil.rmtree(out, ignore_errors=True)
    os.rename(partial, out)


if __name__ == "__main__":
    main()
