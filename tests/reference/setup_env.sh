#!/bin/bash
# One-time environment setup for the reference generators (Debian 12, root). Idempotent.
# 1) Debian packages  2) source trees of pinned HF releases (from git snapshots)  3) $GOLDEN_ENV/pylib
#   MIRROR      folder holding the bare git snapshots as <owner>+<name>/repo (required)
#   GOLDEN_ENV  where to build (default $HOME/.cache/sd-refgen)
set -euo pipefail
# the shared reference environment (its shim and common.py) beside this repository
HERE="${REFGEN_DIR:-$(cd "$(dirname "$0")/../../../shared/refgen" && pwd)}"
G=${GOLDEN_ENV:-$HOME/.cache/sd-refgen}
M=${MIRROR:?set MIRROR to the folder that holds the git snapshots as <owner>+<name>/repo}
if [ "${SKIP_APT:-0}" != 1 ]; then
  apt-get update
  apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends \
    python3-torch python3-numpy python3-pil python3-regex python3-requests python3-filelock python3-yaml \
    python3-tqdm python3-packaging python3-importlib-metadata python3-typing-extensions python3-fsspec python3-wcwidth \
    python3-torchvision python3-omegaconf python3-psutil
fi
mkdir -p "$G/src" && cd "$G/src"
ex(){ rm -rf "$1"; mkdir -p "$1"; git --git-dir="$2" archive "$3" "${@:4}" | tar -x -C "$1"; }   # ex DIR GITDIR COMMIT [paths...]
ex diffusers       "$M/huggingface+diffusers/repo"          v0.25.1                                    # 1909952826ffb0609f5df172ac7948c46422614d
# diffusers v0.27.0's diffusers->original-SD conversion script: the first release with the VAE attention-bias fix
# (PR #6933)
ex diffusers_v0.27.0 "$M/huggingface+diffusers/repo"        v0.27.0 scripts/convert_diffusers_to_original_stable_diffusion.py
ex transformers    "$M/xyliu-cs+transformers-4.44.0/repo"   815ea8e8a23a85482225d371f7218cacc3e99e5b   # main @ 4.36.0.dev0, 2023-12-13 (parent of "Dev version" bump to 4.37.0.dev0)
ex huggingface_hub "$M/huggingface+huggingface_hub/repo"    v0.20.3                                    # 2cff405655a58e91e68d2486a3d699e25fadc65b
ex ftfy            "$M/rspeer+python-ftfy/repo"             v6.1.1                                     # 02a634c7bb8e35c281d4088d8c0efd5bf3feef4b
ex safetensors     "$M/huggingface+safetensors/repo"        v0.4.1                                     # cc43011eaae470d14c411b8ba243273135830ce7 (python API only)
ex CLIP            "$M/openai+CLIP/repo"                    d05afc436d78f1c48dc0dbf8e5980a9d471f35f6
# the official SingleInsert code: read (never imported) by gen_singleinsert_losses.py for its cross-check.
# Only these files: the snapshot lacks the blob of output/pytorch_lora_weights.safetensors, so a full archive fails.
ex SingleInsert    "$M/JarrentWu1031+SingleInsert/repo"     b5e707f047fe2761c5c6e7d6a66b33a47688d88a \
   train.py modeling_clip.py test_lora_emb.py README.md requirements.txt
# added for the textual-inversion / cross-initialization goldens (tests/reference/gen_textual_inversion.py,
# gen_cross_init.py): accelerate (the two training scripts import it) and the official Cross Initialization code
ex accelerate      "$M/huggingface+accelerate/repo"         v0.25.0
# examples/dreambooth added for gen_dreambooth_lora.py (train_dreambooth_lora.py)
ex diffusers_examples "$M/huggingface+diffusers/repo"       v0.25.1 examples/textual_inversion examples/dreambooth
# peft: imported by train_dreambooth_lora.py (gen_dreambooth_lora.py); v0.7.0 is what diffusers v0.25.1's
# examples/dreambooth/requirements.txt pins (peft==0.7.0). With it importable, diffusers runs its PEFT backend
# (USE_PEFT_BACKEND: plain nn.Linear/nn.Conv2d instead of LoRACompatible*, same numbers without LoRA).
ex peft            "$M/huggingface+peft/repo"                v0.7.0                                     # 2665f80a1738b315dce42da8f1a9c7fe793aa9ca
# only the code files (the snapshot lacks some image/embedding blobs, so a full archive fails)
ex CrossInitialization "$M/lyuPang+CrossInitialization/repo" 0b1e39a6740a0152ad78a07b5ef99c9967687ad1 \
   train_cross_init.py utils.py textual_inversion_dataset.py test_cross_init.py models/__init__.py models/clip_model.py \
   examples/wiki_names_v2.txt README.md requirements.txt LICENSE
# LPIPS's reference implementation for gen_metric_models.py (lpips 0.1.4; its package folder and the lin heads it
# ships in lpips/weights), put on sys.path by that script
ex PerceptualSimilarity "$M/richzhang+PerceptualSimilarity/repo" 082bb24f84c091ea94de2867d34c4544f68e0963 lpips
# PYTHONPATH dir: symlinks + pure-Python safetensors core + minimal dist-info so importlib.metadata
# version checks (transformers/diffusers dependency_versions_check) pass.
rm -rf "$G/pylib" && mkdir -p "$G/pylib" && cd "$G/pylib"
ln -s ../src/diffusers/src/diffusers diffusers
ln -s ../src/transformers/src/transformers transformers
ln -s ../src/huggingface_hub/src/huggingface_hub huggingface_hub
ln -s ../src/ftfy/ftfy ftfy
ln -s ../src/accelerate/src/accelerate accelerate
ln -s ../src/peft/src/peft peft
cp -r ../src/safetensors/bindings/python/py_src/safetensors safetensors
cp "$HERE/shim/_safetensors_rust.py" safetensors/
for nv in safetensors:0.4.1 huggingface_hub:0.20.3 transformers:4.36.0.dev0 diffusers:0.25.1 ftfy:6.1.1 accelerate:0.25.0 peft:0.7.0; do
  n=${nv%%:*}; v=${nv##*:}; mkdir -p $n-$v.dist-info
  printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$n" "$v" > $n-$v.dist-info/METADATA
done
mkdir -p "$G/hf_home"
echo "setup ok: $G"
# A second PYTHONPATH, pylib-0.30, for checking the exports in a diffusers with its PEFT backend
# (tests/reference/check_exports.py): diffusers v0.30.3 with peft v0.12.0 (of the same month) and the
# huggingface_hub it needs (>= 0.23.2); transformers, accelerate, ftfy and safetensors as above.
ex diffusers_v0.30.3   "$M/huggingface+diffusers/repo"       v0.30.3 src    # c9ff360966327ace3faad3807dc871a4e5447501
ex peft_v0.12.0        "$M/huggingface+peft/repo"            v0.12.0 src    # e6cd24c907565040ee1766a5735afe3d13a71164
ex huggingface_hub_v0.25.2 "$M/huggingface+huggingface_hub/repo" v0.25.2 src  # 5eef17964897652da99ec829df6354be18c59a07
rm -rf "$G/pylib-0.30" && mkdir -p "$G/pylib-0.30" && cd "$G/pylib-0.30"
ln -s ../src/diffusers_v0.30.3/src/diffusers diffusers
ln -s ../src/peft_v0.12.0/src/peft peft
ln -s ../src/huggingface_hub_v0.25.2/src/huggingface_hub huggingface_hub
for n in transformers ftfy accelerate safetensors; do ln -s ../pylib/$n $n; done
for nv in safetensors:0.4.1 huggingface_hub:0.25.2 transformers:4.36.0.dev0 diffusers:0.30.3 ftfy:6.1.1 accelerate:0.25.0 peft:0.12.0; do
  n=${nv%%:*}; v=${nv##*:}; mkdir -p $n-$v.dist-info
  printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$n" "$v" > $n-$v.dist-info/METADATA
done
echo "pylib-0.30 ok: $G/pylib-0.30"
