#pragma once
// Reads the procedural world's attributes back from an image: a small CNN trained on renders
// (blurred and noised, so that it also reads generated images) with one classification head per
// attribute a prompt can change, and an identity embedding regressed from the face's hidden
// parameters (the identity distance is the Euclidean distance between embeddings).
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "singleinsert/core/progress.h"
#include "singleinsert/models/layers.h"
#include "singleinsert/world/scene.h"

namespace singleinsert::world {

// Categorical attributes the detector reads, with their class counts.
struct AttributeHead {
  std::string name;  // "sunglasses", "background", ...
  int classes;
};
const std::vector<AttributeHead>& attribute_heads();
// The label of each head for a scene (index into the head's classes).
std::vector<int64_t> attribute_labels(const Scene& scene);
// The identity target: the hidden proportions scaled to [0, 1] and the named identity
// attributes one-hot. Width kIdentityWidth.
at::Tensor identity_target(const FaceIdentity& face);
constexpr int64_t kIdentityWidth = 9 + 4 + 5 + 3 + 3 + 1;

class WorldDetectorImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kInputSize = 64;
  WorldDetectorImpl();
  // images float [B, 3, 64, 64] in [-1, 1] -> [B, sum(classes) + kIdentityWidth]
  at::Tensor forward(const at::Tensor& images);

  IndexedList<Conv2d> convs;
  Linear hidden{nullptr}, heads{nullptr};
};
TORCH_MODULE(WorldDetector);

struct Detection {
  std::map<std::string, int64_t> attributes;  // head name -> class
  at::Tensor identity;                        // [kIdentityWidth]
};

// images uint8 [B, H, W, 3] (any square size; resized to 64 with area averaging).
std::vector<Detection> detect(WorldDetector& detector, const at::Tensor& images);
double identity_distance(const Detection& a, const Detection& b);

struct DetectorTrainingOptions {
  int steps = 3000;
  int batch_size = 64;
  double lr = 1e-3;
  uint64_t seed = 0;
};
WorldDetector train_detector(const DetectorTrainingOptions& options, const ProgressCallback& progress = {});

struct DetectorValidation {
  std::map<std::string, double> accuracy;  // per head, on fresh renders
  double identity_auc = 0;                 // same vs different identity, across scenes
  int samples = 0;
};
// Scores `samples` fresh renders (seeds no training step used) and identity pairs.
DetectorValidation validate_detector(WorldDetector& detector, int samples, uint64_t seed);

void save_detector(const WorldDetector& detector, const std::string& path);
WorldDetector load_detector(const std::string& path);

}  // namespace singleinsert::world
