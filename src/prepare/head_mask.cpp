// The automatic head mask: GrabCut seeded by a head-shaped prior drawn around the face detection.
#include <ATen/ATen.h>

#include <algorithm>
#include <opencv2/imgproc.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/prepare/face_detection.h"

namespace singleinsert {
namespace {

// The prior, in units of the detection box (a Haar box runs from the brows to below the mouth,
// cheek to cheek). The inner face and the crown above the forehead are certainly head; a narrow
// head shape around them probably is (starting it wider teaches GrabCut's head colours the
// background beside the head); a ring around that probably is not; the frame, the far
// surroundings and everything below the chin are background, and nothing outside the largest
// plausible head is kept. The sizes were set on the photographs in tests/data/faces.
struct HeadPrior {
  double centre_y, half_width, half_height;  // ellipse centre (box heights below the box top) and semi-axes
};
constexpr HeadPrior kInnerFace{0.55, 0.30, 0.42};
constexpr HeadPrior kCrown{-0.05, 0.22, 0.12};
constexpr HeadPrior kHead{0.40, 0.45, 0.72};
constexpr HeadPrior kSurroundings{0.35, 0.95, 1.00};
constexpr HeadPrior kLargestHead{0.35, 0.75, 0.90};
constexpr double kBorder = 0.02;                  // of the image side
constexpr double kChin = 0.95, kBelowChin = 1.1;  // box heights below the box top; between them only the jaw
constexpr int kGrabCutIterations = 5;

void fill_ellipse(cv::Mat& labels, const Box& face, const HeadPrior& prior, int label) {
  const cv::Point centre(static_cast<int>(face.x + face.width / 2),
                         static_cast<int>(face.y + prior.centre_y * static_cast<double>(face.height)));
  const cv::Size axes(static_cast<int>(prior.half_width * static_cast<double>(face.width)),
                      static_cast<int>(prior.half_height * static_cast<double>(face.height)));
  cv::ellipse(labels, centre, axes, 0, 0, 360, cv::Scalar(label), cv::FILLED);
}

// The connected piece of `inside` (0/255) that holds `seed`, with its holes filled.
cv::Mat piece_holding(const cv::Mat& inside, cv::Point seed) {
  cv::Mat piece = cv::Mat::zeros(inside.size(), CV_8U);
  if (inside.at<uint8_t>(seed) == 0) return piece;
  cv::Mat component;
  cv::connectedComponents(inside, component, 4, CV_32S);
  const int wanted = component.at<int>(seed);
  piece = (component == wanted);
  // Holes: what the outside cannot reach from the border.
  cv::Mat outside;
  cv::copyMakeBorder(piece, outside, 1, 1, 1, 1, cv::BORDER_CONSTANT, cv::Scalar(0));
  cv::floodFill(outside, cv::Point(0, 0), cv::Scalar(255));
  cv::Mat reached = outside(cv::Rect(1, 1, piece.cols, piece.rows)) & ~piece;
  return ~reached;
}

}  // namespace

at::Tensor automatic_head_mask(const at::Tensor& pixels, const Box& face) {
  if (pixels.scalar_type() != at::kByte || pixels.dim() != 3 || pixels.size(2) != 3)
    throw Error("automatic_head_mask: expected a uint8 [H, W, 3] RGB image");
  if (face.empty()) throw Error("automatic_head_mask: no face box");
  const at::Tensor rgb = pixels.contiguous();
  const int height = static_cast<int>(rgb.size(0)), width = static_cast<int>(rgb.size(1));
  cv::Mat image;
  cv::cvtColor(cv::Mat(height, width, CV_8UC3, rgb.data_ptr()), image, cv::COLOR_RGB2BGR);

  cv::Mat labels(height, width, CV_8U, cv::Scalar(cv::GC_BGD));
  fill_ellipse(labels, face, kSurroundings, cv::GC_PR_BGD);
  const int border = std::max(1, static_cast<int>(kBorder * std::min(height, width)));
  labels.rowRange(0, border).setTo(cv::GC_BGD);
  labels.rowRange(height - border, height).setTo(cv::GC_BGD);
  labels.colRange(0, border).setTo(cv::GC_BGD);
  labels.colRange(width - border, width).setTo(cv::GC_BGD);
  fill_ellipse(labels, face, kHead, cv::GC_PR_FGD);
  fill_ellipse(labels, face, kInnerFace, cv::GC_FGD);
  fill_ellipse(labels, face, kCrown, cv::GC_FGD);
  const auto row_at = [&](double boxes) {
    return std::clamp(static_cast<int>(face.y + boxes * static_cast<double>(face.height)), 0, height);
  };
  const int chin = row_at(kChin), below_chin = row_at(kBelowChin);
  const int jaw_left = std::clamp(static_cast<int>(face.x + face.width / 5), 0, width);
  const int jaw_right = std::clamp(static_cast<int>(face.right() - face.width / 5), jaw_left, width);
  labels.rowRange(chin, below_chin).colRange(0, jaw_left).setTo(cv::GC_PR_BGD);
  labels.rowRange(chin, below_chin).colRange(jaw_right, width).setTo(cv::GC_PR_BGD);
  labels.rowRange(below_chin, height).setTo(cv::GC_BGD);

  cv::Mat background_model, foreground_model;
  cv::grabCut(image, labels, cv::Rect(), background_model, foreground_model, kGrabCutIterations,
              cv::GC_INIT_WITH_MASK);
  cv::Mat inside = ((labels == cv::GC_FGD) | (labels == cv::GC_PR_FGD));
  // Backgrounds of hair or skin colour would otherwise carry the head to the frame.
  cv::Mat plausible = cv::Mat::zeros(height, width, CV_8U);
  fill_ellipse(plausible, face, kLargestHead, 255);
  inside &= plausible;
  inside.rowRange(below_chin, height).setTo(0);

  // Smooth away threads of background colour the colour models let through, then keep the head.
  const int radius = std::max(1, static_cast<int>(face.width / 24));
  const cv::Mat kernel = cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(2 * radius + 1, 2 * radius + 1));
  cv::morphologyEx(inside, inside, cv::MORPH_OPEN, kernel);
  const cv::Point face_centre(std::clamp(static_cast<int>(face.x + face.width / 2), 0, width - 1),
                              std::clamp(static_cast<int>(face.y + face.height / 2), 0, height - 1));
  cv::Mat head = piece_holding(inside, face_centre);
  if (cv::countNonZero(head) == 0) {  // GrabCut took the face for background: the prior is the best guess left
    head = cv::Mat::zeros(height, width, CV_8U);
    fill_ellipse(head, face, kHead, 255);
    head.rowRange(chin, height).setTo(0);
  }

  at::Tensor mask = at::empty({height, width}, at::kByte);
  head.copyTo(cv::Mat(height, width, CV_8U, mask.data_ptr()));
  return mask;
}

}  // namespace singleinsert
