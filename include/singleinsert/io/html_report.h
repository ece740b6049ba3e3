#pragma once
// One self-contained HTML page (images embedded as data URIs, no script, no external file) that
// shows a concept: its source and mask, its loss curves, its metrics with their scales and its
// generations grouped by prompt; or a whole batch folder, a section per photo.
#include <nlohmann/json_fwd.hpp>

#include <string>

namespace singleinsert {

// `eval` is the record `eval images --json` writes (may be null: no metrics, no generations).
std::string concept_report_html(const std::string& concept_dir, const nlohmann::json* eval);
// A folder written by `batch`: its summary, then each photo's concept, with the metrics of
// PHOTO/metrics.json (from eval images) when present, and up to `images_per_photo` generations.
std::string batch_report_html(const std::string& batch_dir, int images_per_photo = 8);

}  // namespace singleinsert
