"""Times diffusers' StableDiffusionPipeline generating one image, for the side-by-side comparison.

Generation only: the pipeline call (text encoding, sampling, decoding) after one warm-up call,
so load time (a pure-Python safetensors stand-in here) is left out. Prints one JSON object.

    python3 diffusers_generate.py MODEL_DIR --dtype fp32|bf16 --steps 10 --size 256 --cfg 7 --rounds 1
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline


def patch_tokenizer():
    """The reference environment's transformers lacks the Rust tokenizers package; its fallback
    AddedToken needs the refgen patch to load a CLIP tokenizer."""
    refgen = os.environ.get("REFGEN_DIR")
    if refgen:
        sys.path.insert(0, refgen)
        from common import patch_slow_tokenizer_without_tokenizers
        patch_slow_tokenizer_without_tokenizers()


def main():
    patch_tokenizer()
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", help="write a Chrome trace of the last timed call")
    parser.add_argument("--prompt", default="a photo of a face wearing sunglasses")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def call():
        generator = torch.Generator().manual_seed(0)
        return pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.cfg, height=args.size,
                    width=args.size, generator=generator, output_type="np").images

    with torch.no_grad():
        call()  # warm-up
        seconds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
        if args.profile:
            with torch.autograd.profiler.profile() as profile:
                call()
            profile.export_chrome_trace(args.profile)
    print(json.dumps({"peer": "diffusers", "dtype": args.dtype, "seconds": seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
