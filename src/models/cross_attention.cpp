#include "singleinsert/models/cross_attention.h"

#include <fmt/format.h>

#include <algorithm>

#include "singleinsert/core/error.h"

namespace singleinsert {

namespace {

bool carries_cross_attention(const std::string& block_type) { return block_type.rfind("CrossAttn", 0) == 0; }

// Resolution levels (0 = full latent resolution) whose down block carries cross-attention.
std::vector<int> attention_levels(const UNetConfig& config) {
  std::vector<int> levels;
  for (size_t i = 0; i < config.down_block_types.size(); ++i)
    if (carries_cross_attention(config.down_block_types[i])) levels.push_back(static_cast<int>(i));
  return levels;
}

int rank_of(const std::vector<int>& levels, int level) {
  const auto at = std::find(levels.begin(), levels.end(), level);
  return at == levels.end() ? static_cast<int>(levels.size()) - 1 : static_cast<int>(at - levels.begin());
}

void add_block(std::vector<CrossAttentionLayer>& out, IndexedList<Transformer2DModel>& attentions,
               const std::string& prefix, int stage) {
  for (size_t a = 0; a < attentions.size(); ++a)
    for (size_t b = 0; b < attentions[a]->transformer_blocks.size(); ++b)
      out.push_back({fmt::format("{}.attentions.{}.transformer_blocks.{}.attn2", prefix, a, b),
                     attentions[a]->transformer_blocks[b]->attn2.get(), stage});
}

}  // namespace

int cross_attention_stage_count(const UNetConfig& config) {
  const auto levels = attention_levels(config);
  return levels.empty() ? 1 : 2 * static_cast<int>(levels.size()) - 1;
}

int bottom_stage(const UNetConfig& config) { return std::max(0, static_cast<int>(attention_levels(config).size()) - 1); }

std::vector<CrossAttentionLayer> cross_attention_layers(UNet2DConditionModelImpl& unet) {
  const UNetConfig& config = unet.config();
  const auto levels = attention_levels(config);
  const int bottom = bottom_stage(config);
  std::vector<CrossAttentionLayer> out;
  for (size_t i = 0; i < unet.down_blocks.size(); ++i)
    add_block(out, unet.down_blocks[i]->attentions, fmt::format("down_blocks.{}", i),
              levels.empty() ? 0 : rank_of(levels, static_cast<int>(i)));
  add_block(out, unet.mid_block->attentions, "mid_block", bottom);
  const int count = static_cast<int>(unet.up_blocks.size());
  for (int j = 0; j < count; ++j)
    add_block(out, unet.up_blocks[j]->attentions, fmt::format("up_blocks.{}", j),
              levels.empty() ? 0 : 2 * bottom - rank_of(levels, count - 1 - j));
  return out;
}

AttentionHookGuard::AttentionHookGuard(UNet2DConditionModelImpl& unet, AttentionHook& hook) {
  const auto layers = cross_attention_layers(unet);
  for (const auto& entry : layers)
    if (entry.layer->hook) throw Error(fmt::format("{} already has an attention hook", entry.path));
  for (const auto& entry : layers) {
    entry.layer->hook = &hook;
    entry.layer->hook_path = entry.path;
    layers_.push_back(entry.layer);
  }
}

AttentionHookGuard::~AttentionHookGuard() {
  for (AttentionImpl* layer : layers_) layer->hook = nullptr;
}

}  // namespace singleinsert
