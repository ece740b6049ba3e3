#pragma once
// The one training image and its mask, prepared as SingleInsert's training code prepares them:
// the image resized to the training resolution for the VAE and to the encoder's input size, the
// mask resized to the latent size with the same antialiased bilinear filter, then averaged over
// its channels into a soft mask in [0, 1].
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace singleinsert {

struct SourceImages {
  at::Tensor image;  // uint8 [H, W, 3]
  at::Tensor mask;   // uint8 [H, W, C]
};

enum class CropMode { kCenter, kNone };

struct PreparedSource {
  at::Tensor image;        // uint8 [S, S, 3]: the (cropped) source as trained on, kept in the concept
  at::Tensor mask;         // uint8 [S, S, C]
  at::Tensor pixels;       // float [1, 3, R, R] in [-1, 1] for the VAE
  at::Tensor cond_pixels;  // float [1, 3, E, E] for the image encoder
  at::Tensor mask_latent;  // float [1, 1, h, w] in [0, 1]
  double foreground_fraction = 0;
  std::vector<std::string> warnings;
};

// Checks and prepares the inputs. Errors: sizes differ, a non-square image with kNone, an
// empty mask. Warnings: cropping, an all-foreground mask (L_bg vanishes).
PreparedSource prepare_source(const SourceImages& source, int resolution, int latent_size, int encoder_size,
                              const std::string& encoder_normalization, CropMode crop);

}  // namespace singleinsert
