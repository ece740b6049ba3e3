"""Golden for PIL's bicubic resize, the filter textual inversion's and Cross Initialization's datasets resize with
(Image.resize(size, Image.Resampling.BICUBIC)): tests/data/methods/pil_bicubic.safetensors.

Made with (the reference environment of ../shared/refgen, Pillow 9.4.0, Debian 12's python3-pil):
    GOLDEN_ENV=$SCRATCH/refenv source ../shared/refgen/env.sh
    $PY tests/reference/gen_pil_bicubic.py
Input: tests/data/methods/toy.png (64x64), upsampled to 77x77 and 128x128 and downsampled to 40x40 and 23x31
(width x height), and a 3x5 image of fixed values upsampled to 64x64 (the filter's edge handling)."""
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "methods")


def main():
    toy = Image.open(os.path.join(OUT, "toy.png")).convert("RGB")
    tiny = Image.fromarray(((np.arange(3 * 5 * 3).reshape(5, 3, 3) * 37) % 256).astype(np.uint8), "RGB")
    tensors = {"toy": torch.from_numpy(np.array(toy)), "tiny": torch.from_numpy(np.array(tiny))}
    for name, image, size in [("toy_77x77", toy, (77, 77)), ("toy_128x128", toy, (128, 128)),
                              ("toy_40x40", toy, (40, 40)), ("toy_23x31", toy, (23, 31)),
                              ("tiny_64x64", tiny, (64, 64))]:
        tensors[name] = torch.from_numpy(np.array(image.resize(size, resample=Image.Resampling.BICUBIC)))
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "pil_bicubic.safetensors"),
              {"notes": "uint8 [H, W, 3]: the inputs toy and tiny and PIL.Image.resize((W, H), BICUBIC) of them, "
                        "named <input>_<W>x<H>; made by tests/reference/gen_pil_bicubic.py"})


if __name__ == "__main__":
    main()
