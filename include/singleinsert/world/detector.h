#pragma once
// Reads the procedural world's attributes back from an image: a small CNN trained on renders
// (blurred, noised and passed through a model's VAE, so that it also reads generated images)
// with one classification head per attribute a prompt can change, and two identity embeddings
// regressed from the truth: the face's (hidden proportions and shades, then its named
// attributes one-hot) and the cup's (hidden shape, then its colour one-hot). Identity distances
// are Euclidean distances between embeddings, over the whole face embedding or either part.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "singleinsert/core/progress.h"
#include "singleinsert/models/layers.h"
#include "singleinsert/models/vae.h"
#include "singleinsert/world/scene.h"

namespace singleinsert::world {

// Categorical attributes the detector reads, with their class counts.
struct AttributeHead {
  std::string name;  // "sunglasses", "background", ...
  int classes;
};
const std::vector<AttributeHead>& attribute_heads();
// The label of each head for a scene (index into the head's classes; -100 where it does not apply).
std::vector<int64_t> attribute_labels(const Scene& scene);

// The face identity target: the hidden parameters scaled to [0, 1] (kFaceHiddenWidth), then the
// named attributes one-hot (kFaceNamedWidth).
constexpr int64_t kFaceHiddenWidth = 11;
constexpr int64_t kFaceNamedWidth = 4 + 5 + 3 + 3 + 1;
constexpr int64_t kFaceIdentityWidth = kFaceHiddenWidth + kFaceNamedWidth;
at::Tensor identity_target(const FaceIdentity& face);
// The cup's: hidden shape scaled to [0, 1], then the colour one-hot.
constexpr int64_t kCupIdentityWidth = 6 + 6;
at::Tensor cup_identity_target(const CupIdentity& cup);

class WorldDetectorImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kInputSize = 64;
  WorldDetectorImpl();
  // images float [B, 3, 64, 64] in [-1, 1] -> [B, sum(classes) + kFaceIdentityWidth + kCupIdentityWidth]
  at::Tensor forward(const at::Tensor& images);

  IndexedList<Conv2d> convs;
  Linear hidden{nullptr}, heads{nullptr};
};
TORCH_MODULE(WorldDetector);

struct Detection {
  std::map<std::string, int64_t> attributes;  // head name -> class
  at::Tensor identity;                        // [kFaceIdentityWidth]
  at::Tensor cup_identity;                    // [kCupIdentityWidth]
};

// images uint8 [B, H, W, 3] (any square size; resized to 64 with area averaging).
std::vector<Detection> detect(WorldDetector& detector, const at::Tensor& images);

// Which part of the face identity a distance measures.
enum class IdentityPart { kWhole, kNamed, kHidden };
double identity_distance(const Detection& a, const Detection& b, IdentityPart part = IdentityPart::kWhole);
double cup_identity_distance(const Detection& a, const Detection& b);
// The named attributes read from a face identity embedding: the largest of each one-hot group
// (skin, hair colour, hair style, eyes), freckles above one half. Only `named` fields are set.
FaceIdentity named_attributes(const at::Tensor& identity);

struct DetectorTrainingOptions {
  int steps = 3000;
  int batch_size = 64;
  double lr = 1e-3;
  uint64_t seed = 0;
  double vae_share = 0.5;  // of the batches passed through `vae` (when given) before the augmentation
  bool bf16 = true;        // autocast the forward passes (the weights and the loss stay float32)
  std::string init;        // weights to continue from instead of a fresh initialisation
  uint64_t first_scene = 0;  // index of the first training scene (a continued run takes scenes it never saw)
};
// `vae` (optional): a model's VAE, so that the detector also learns to read images as that
// model's decoder draws them.
WorldDetector train_detector(const DetectorTrainingOptions& options, const ProgressCallback& progress = {},
                             AutoencoderKL* vae = nullptr);

struct DetectorValidation {
  std::map<std::string, double> accuracy;  // per head, on fresh renders
  double identity_auc = 0;                 // the same face vs two faces, across scenes and views
  double cup_identity_auc = 0;             // the same cup vs two cups, as the subject or beside a face
  int samples = 0;
};
// Scores `samples` fresh renders (seeds no training step used) and identity pairs.
DetectorValidation validate_detector(WorldDetector& detector, int samples, uint64_t seed);

void save_detector(const WorldDetector& detector, const std::string& path);
WorldDetector load_detector(const std::string& path);

}  // namespace singleinsert::world
