#!/bin/bash
# Do singleinsert's exports load in the clients that read them, and draw singleinsert's images there?
# A concept of every method is trained on the tiny model (../shared/golden/sd_tiny) and exported in
# every layout; singleinsert draws a seeded image with each concept, then check_exports.py loads each
# export into a real diffusers pipeline and draws the same prompt and seed:
#   - diffusers v0.30.3 with its PEFT backend (peft v0.12.0; pylib-0.30 of setup_env.sh):
#     --format diffusers, a1111 and kohya (load_textual_inversion + load_lora_weights);
#   - diffusers v0.25.1 without peft (the attention-processor path the SingleInsert authors'
#     test_lora_emb.py takes): --format diffusers-legacy through LoraLoaderMixin.lora_state_dict,
#     load_lora_into_unet and load_lora_into_text_encoder.
# It passes when every image is within 1/255 of singleinsert's (uint8, every pixel).
#
#   GOLDEN_ENV=/work/refenv bash tests/reference/check_exports.sh [BIN] [WORK]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(realpath "${1:-build/tools/singleinsert}")"
work="${2:-$(mktemp -d)}"
source "$here/../../../shared/refgen/env.sh"
tiny="$GOLDEN_OUT/sd_tiny"
image="$GOLDEN_OUT/singleinsert_losses/instance_image.png"
mask="$GOLDEN_OUT/singleinsert_losses/mask.png"
mkdir -p "$work" && cd "$work"
rm -rf concepts images exports && mkdir -p concepts images exports

# Short runs at a high learning rate, so that every LoRA and embedding is far from its start.
cat > si.json <<'EOF'
{"resolution": 32, "stage1": {"steps": 4, "batch": 2, "lr": 5e-2}, "stage2": {"steps": 4, "batch": 2, "lr": 5e-2},
 "encoder": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 4}}
EOF
for m in textual-inversion cross-init dreambooth-lora; do
  printf '{"method": "%s", "resolution": 32, "steps": 4, "batch": 2, "learning_rate": 5e-2}\n' "$m" > "$m.json"
done
printf 'john smith\nmary jones\npeter brown\n' > names.txt
q() { "$@" > /dev/null 2>> log.txt; }
q "$bin" invert --model "$tiny" --image "$image" --mask "$mask" --class "teddy bear" --preset si.json --out concepts/si1
q "$bin" finetune --model "$tiny" --concept concepts/si1 --out concepts/singleinsert
q "$bin" invert --model "$tiny" --method textual-inversion --num-vectors 2 --init-word bear --image "$image" --class "teddy bear" \
  --preset textual-inversion.json --out concepts/textual-inversion
q "$bin" invert --model "$tiny" --method cross-init --init-names names.txt --image "$image" --class "teddy bear" \
  --preset cross-init.json --out concepts/cross-init
q "$bin" finetune --model "$tiny" --method dreambooth-lora --train-text-encoder --concept concepts/textual-inversion \
  --preset dreambooth-lora.json --out concepts/ti-dreambooth-lora

for c in singleinsert textual-inversion cross-init ti-dreambooth-lora; do
  name="sks${c//-/}"
  q "$bin" generate --model "$tiny" --concept "concepts/$c:$name" --prompt "a photo of $name teddy bear on the beach" \
    --steps 10 --guidance 7.5 --sampler pndm --seed 7 --width 64 --height 64 --out "images/$c"
  formats="a1111 diffusers diffusers-legacy"
  [ -f "concepts/$c/lora.safetensors" ] && formats+=" kohya"  # a kohya file is a LoRA: stage II concepts only
  for f in $formats; do
    q "$bin" export --concept "concepts/$c" --format "$f" --name "$name" --out "exports/$c/$f"
  done
done

PYTHONPATH="$GOLDEN_ENV/pylib-0.30" "$PY" "$here/check_exports.py" --tiny "$tiny" --work "$work" --client peft
# diffusers v0.25.1 with peft out of sight: its pre-PEFT code path
nopeft="$work/pylib-nopeft" && rm -rf "$nopeft" && mkdir -p "$nopeft"
for entry in "$GOLDEN_ENV"/pylib/*; do
  case "$(basename "$entry")" in peft | peft-*) ;; *) ln -s "$entry" "$nopeft/";; esac
done
PYTHONPATH="$nopeft" "$PY" "$here/check_exports.py" --tiny "$tiny" --work "$work" --client legacy
