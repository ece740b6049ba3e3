#pragma once
// The UNet's cross-attention layers by canonical path and stage, and the guard that hooks them.
//
// A stage is a resolution on one side of the UNet: SD v1.5's seven attention blocks make five
// stages (down 64, down 32, the 16x16-and-8x8 bottom where the path turns, up 32, up 64), the
// "five stages" Beyond Inserting gives one key/value token pair each. In general, with L down
// blocks that carry cross-attention, there are 2L - 1 stages: down level l is stage l, the mid
// block and the up block at the lowest such level share stage L - 1, and up level l is stage
// 2(L - 1) - l.
#include <string>
#include <vector>

#include "singleinsert/models/attention.h"
#include "singleinsert/models/unet.h"

namespace singleinsert {

struct CrossAttentionLayer {
  std::string path;  // e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
  AttentionImpl* layer = nullptr;
  int stage = 0;
};

// Every attn2 of `unet` in the order forward() runs them.
std::vector<CrossAttentionLayer> cross_attention_layers(UNet2DConditionModelImpl& unet);
int cross_attention_stage_count(const UNetConfig& config);
// The stage whose layers sit at the UNet's lowest attention resolution (the bottom, L - 1).
int bottom_stage(const UNetConfig& config);

// Installs `hook` on every cross-attention layer of `unet` for its lifetime. Guards do not nest
// on one model: a second one is refused rather than silently replacing the first.
class AttentionHookGuard {
 public:
  AttentionHookGuard(UNet2DConditionModelImpl& unet, AttentionHook& hook);
  ~AttentionHookGuard();
  AttentionHookGuard(const AttentionHookGuard&) = delete;
  AttentionHookGuard& operator=(const AttentionHookGuard&) = delete;

 private:
  std::vector<AttentionImpl*> layers_;
};

}  // namespace singleinsert
