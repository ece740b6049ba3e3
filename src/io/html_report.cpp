#include "singleinsert/io/html_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"

namespace fs = std::filesystem;

namespace singleinsert {
namespace {

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const uint32_t a = static_cast<unsigned char>(bytes[i]);
    const uint32_t b = i + 1 < bytes.size() ? static_cast<unsigned char>(bytes[i + 1]) : 0;
    const uint32_t c = i + 2 < bytes.size() ? static_cast<unsigned char>(bytes[i + 2]) : 0;
    const uint32_t triple = (a << 16) | (b << 8) | c;
    out += kAlphabet[(triple >> 18) & 63];
    out += kAlphabet[(triple >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(triple >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[triple & 63] : '=';
  }
  return out;
}

// <img> with the file embedded; a note instead when the file is missing.
std::string embedded_image(const fs::path& path, const std::string& alt, int display_size = 160) {
  if (!fs::exists(path)) return fmt::format("<div class=\"missing\">{} missing</div>", escape(path.filename().string()));
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  const std::string mime = ext == ".png" ? "image/png" : ext == ".webp" ? "image/webp" : ext == ".bmp" ? "image/bmp"
                                                                                                      : "image/jpeg";
  return fmt::format("<img src=\"data:{};base64,{}\" alt=\"{}\" width=\"{}\" height=\"{}\">", mime,
                     base64(read_file(path.string())), escape(alt), display_size, display_size);
}

std::string figure(const nlohmann::json& value, const char* format = "{:.3f}") {
  return value.is_number() ? fmt::format(fmt::runtime(format), value.get<double>()) : "&ndash;";
}

nlohmann::json read_json(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_file(path.string()));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not JSON ({})", path.string(), e.what()));
  }
}

// The loss history as an SVG chart: the loss and each of its terms, log10 y axis (at most six
// decades below the highest value: a term that starts at zero would flatten the rest), stage II
// shaded.
std::string loss_chart(const nlohmann::json& history) {
  std::map<std::string, std::vector<std::pair<double, double>>> series;  // name -> (x, loss)
  double x_max = 0;
  double stage2_start = -1;
  double index = 0;
  int first_step = -1, last_step = 0, stage1_steps = 0;
  for (const nlohmann::json& row : history) {
    if (!row.is_object()) continue;
    const int step = row.contains("step") && row.at("step").is_number_integer() ? row.at("step").get<int>() : 0;
    if (row.value("stage", 1) == 2 && stage2_start < 0) stage2_start = index, stage1_steps = last_step;
    if (first_step < 0) first_step = step;
    last_step = step;
    for (const auto& [name, value] : row.items()) {
      // Not losses: the fields every history row has (concept.cpp's kRecordFields).
      if (name == "stage" || name == "step" || name == "lr" || name == "grad_norm" || name == "seconds" ||
          !value.is_number())
        continue;
      const double v = value.get<double>();
      if (v > 0 && std::isfinite(v)) series[name].push_back({index, v});
    }
    x_max = index++;
  }
  if (series.empty()) return "<p class=\"note\">No loss history in concept.json.</p>";
  double lo = 1e300, hi = -1e300;
  for (const auto& [name, points] : series)
    for (const auto& [x, y] : points) lo = std::min(lo, std::log10(y)), hi = std::max(hi, std::log10(y));
  lo = std::max(lo, hi - 6);
  if (hi - lo < 1e-6) hi = lo + 1;
  const int width = 720, height = 300, left = 60, right = 160, top = 12, bottom = 32;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  auto px = [&](double x) { return left + (x_max > 0 ? x / x_max : 0.5) * plot_w; };
  auto py = [&](double y) { return top + (hi - std::log10(y)) / (hi - lo) * plot_h; };
  static const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"};
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" class=\"chart\">"
      "<rect x=\"{}\" y=\"{}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"#fafafa\" stroke=\"#ccc\"/>",
      width, height, left, top, plot_w, plot_h);
  if (stage2_start >= 0)
    svg += fmt::format("<rect x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"#eef3fb\"/>"
                       "<text x=\"{:.1f}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{} | stage II: 1</text>",
                       px(stage2_start), top, left + plot_w - px(stage2_start), plot_h, px(stage2_start),
                       top + plot_h + 14, stage1_steps);
  for (int decade = static_cast<int>(std::ceil(lo)); decade <= static_cast<int>(std::floor(hi)); ++decade) {
    const double y = py(std::pow(10.0, decade));
    svg += fmt::format("<line x1=\"{}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
                       "<text x=\"{}\" y=\"{:.1f}\" class=\"axis\" text-anchor=\"end\">1e{}</text>",
                       left, left + plot_w, y, y, left - 6, y + 4, decade);
  }
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">training step "
                     "of each stage; loss on a log scale</text>"
                     "<text x=\"{}\" y=\"{}\" class=\"axis\">{}</text>"
                     "<text x=\"{:.1f}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">{}</text>",
                     left + plot_w / 2, height - 8, left, top + plot_h + 14, first_step, left + plot_w,
                     top + plot_h + 14, last_step);
  int colour = 0, legend_y = top + 14;
  for (const auto& [name, points] : series) {
    std::string path;
    for (const auto& [x, y] : points) path += fmt::format("{:.1f},{:.1f} ", px(x), py(std::max(y, std::pow(10.0, lo))));
    const char* c = kColours[colour++ % 7];
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>", c, path);
    svg += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"/>"
                       "<text x=\"{:.1f}\" y=\"{}\" class=\"axis\">{}</text>",
                       left + plot_w + 10, left + plot_w + 28, legend_y - 4, legend_y - 4, c, left + plot_w + 34,
                       legend_y, escape(name));
    legend_y += 18;
  }
  return svg + "</svg>";
}

const char* kStyle = R"(<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin-bottom: 6px; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; text-align: center; font-size: 12px; }
figure img { image-rendering: pixelated; border: 1px solid #ccc; display: block; }
figcaption { max-width: 160px; } .ok { color: #1a7f37; font-weight: bold; } .no { color: #c62828; font-weight: bold; }
.note { color: #666; font-size: 13px; } .axis { font-size: 11px; fill: #555; }
.missing { width: 160px; height: 160px; border: 1px dashed #bbb; color: #999; display: flex; align-items: center;
           justify-content: center; font-size: 12px; }
</style>)";

struct FigureInfo {
  const char* key;
  const char* label;
  const char* scale;
};
const FigureInfo kFigures[] = {
    {"clip_i_f", "CLIP-I-f", "cosine of CLIP image embeddings, generation vs source, subject region; 1 = same"},
    {"clip_i_b", "CLIP-I-b", "the same on the background region; lower = the background changed as asked"},
    {"dino_f", "DINO-f", "cosine of DINO features, subject region; more identity-sensitive than CLIP"},
    {"dino_b", "DINO-b", "the same on the background region"},
    {"clip_t", "CLIP-T", "cosine of the image and the prompt (trigger removed); SD v1.5 images usually 0.2-0.35"},
};

std::string concept_summary(const fs::path& dir, const nlohmann::json& concept_json) {
  const nlohmann::json& wall = concept_json.value("wall_time_seconds", nlohmann::json::object());
  const nlohmann::json& losses = concept_json.value("final_losses", nlohmann::json::object());
  auto loss = [&](const char* stage) {
    return losses.contains(stage) && losses.at(stage).is_object() ? figure(losses.at(stage).value("loss", nlohmann::json()), "{:.4f}")
                                                                  : std::string("&ndash;");
  };
  std::string html = "<table>";
  html += fmt::format("<tr><th>trigger</th><td>{}</td><th>class</th><td>{}</td><th>method</th><td>{}</td>"
                      "<th>stage</th><td>{}</td></tr>",
                      escape(concept_json.value("trigger", "")), escape(concept_json.value("class", "")),
                      escape(concept_json.value("method", "singleinsert")), concept_json.value("stage", 0));
  html += fmt::format("<tr><th>stage I</th><td>{} s, loss {}</td><th>stage II</th><td>{} s, loss {}</td>"
                      "<th>device</th><td>{}</td><th>base UNet</th><td>{}</td></tr></table>",
                      figure(wall.value("stage1", nlohmann::json()), "{:.1f}"), loss("stage1"),
                      figure(wall.value("stage2", nlohmann::json()), "{:.1f}"), loss("stage2"),
                      escape(concept_json.value("device", "")),
                      escape(concept_json.value("base_model", nlohmann::json::object()).value("unet_sha256", "").substr(0, 12)));
  html += "<div class=\"row\" style=\"margin-top:12px\">";
  html += "<figure>" + embedded_image(dir / "source.png", "source") + "<figcaption>source</figcaption></figure>";
  html += "<figure>" + embedded_image(dir / "mask.png", "mask") + "<figcaption>mask</figcaption></figure>";
  if (fs::exists(dir / "preview.png"))
    html += "<figure>" + embedded_image(dir / "preview.png", "preview", 320) + "<figcaption>preview</figcaption></figure>";
  html += "</div>";
  return html;
}

std::string metrics_section(const nlohmann::json& scores) {
  const nlohmann::json& means = scores.at("means");
  std::string html = "<table><tr><th>figure</th><th>value</th><th>scale</th></tr>";
  for (const FigureInfo& f : kFigures)
    html += fmt::format("<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>", f.label,
                        figure(means.value(f.key, nlohmann::json())), f.scale);
  html += fmt::format("<tr><td>DIV</td><td class=\"num\">{}</td><td>mean LPIPS between images of one prompt "
                      "({} prompts); 0 = identical, higher = more varied</td></tr>",
                      figure(scores.value("div", nlohmann::json())), scores.value("div_prompts", 0));
  html += fmt::format("<tr><td>ESR</td><td class=\"num\">{}</td><td>share of {} images from editing-list prompts "
                      "whose every edit the CLIP judge sees; 0..1</td></tr></table>",
                      figure(scores.value("esr", nlohmann::json())), scores.value("esr_images", 0));
  for (const nlohmann::json& note : scores.value("notes", nlohmann::json::array()))
    html += "<p class=\"note\">" + escape(note.get<std::string>()) + "</p>";
  return html;
}

std::string generations_section(const nlohmann::json& eval, const nlohmann::json& scores, size_t per_prompt_limit) {
  const fs::path images_dir = eval.value("images_dir", "");
  std::vector<std::string> order;
  std::map<std::string, std::vector<const nlohmann::json*>> by_prompt;
  for (const nlohmann::json& row : scores.at("images")) {
    const std::string prompt = row.value("prompt", "");
    if (!by_prompt.count(prompt)) order.push_back(prompt);
    by_prompt[prompt].push_back(&row);
  }
  std::string html;
  for (const std::string& prompt : order) {
    html += "<h3>" + escape(prompt) + "</h3><div class=\"row\">";
    size_t shown = 0;
    for (const nlohmann::json* row : by_prompt[prompt]) {
      if (shown++ == per_prompt_limit) break;
      std::string caption = fmt::format("{}<br>CLIP-I-f {} &middot; DINO-f {}<br>CLIP-T {}",
                                        escape(row->value("name", "")), figure(row->value("clip_i_f", nlohmann::json()), "{:.2f}"),
                                        figure(row->value("dino_f", nlohmann::json()), "{:.2f}"),
                                        figure(row->value("clip_t", nlohmann::json()), "{:.2f}"));
      if (row->value("listed", false)) {
        std::string edits;
        for (const nlohmann::json& e : row->at("edits"))
          edits += fmt::format(" {} {:.2f}", escape(e.value("name", "")), e.value("probability", 0.0));
        caption += fmt::format("<br><span class=\"{}\">{}</span>{}", row->value("edit_success", false) ? "ok" : "no",
                               row->value("edit_success", false) ? "edit seen" : "edit missed", edits);
      }
      html += "<figure>" + embedded_image(images_dir / row->value("name", ""), row->value("name", "")) +
              "<figcaption>" + caption + "</figcaption></figure>";
    }
    html += "</div>";
  }
  return html;
}

std::string page(const std::string& title, const std::string& body) {
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape(title) + "</title>" +
         kStyle + "</head><body>\n" + body + "\n</body></html>\n";
}

}  // namespace

std::string concept_report_html(const std::string& concept_dir, const nlohmann::json* eval) {
  const fs::path dir(concept_dir);
  if (!fs::exists(dir / "concept.json")) throw Error(concept_dir + ": not a concept folder (no concept.json)");
  const nlohmann::json concept_json = read_json(dir / "concept.json");
  std::string body = fmt::format("<h1>Concept <code>{}</code> &middot; {}</h1>", escape(concept_json.value("trigger", "")),
                                 escape(fs::absolute(dir).lexically_normal().string()));
  body += concept_summary(dir, concept_json);
  body += "<h2>Loss</h2>" + loss_chart(concept_json.value("history", nlohmann::json::array()));
  if (eval) {
    if (!eval->contains("scores")) throw Error("the --eval file is not a record of eval images");
    body += "<h2>Metrics</h2>" + metrics_section(eval->at("scores"));
    auto model_name = [&](const char* key) {
      const std::string path = eval->at("models").value(key, "");
      return path.empty() ? std::string("none") : escape(path);
    };
    body += fmt::format("<p class=\"note\">Regions: masks from <code>{}</code>; outside the region filled with grey "
                        "({}). Models: CLIP <code>{}</code>, DINO <code>{}</code>, LPIPS <code>{}</code>.</p>",
                        escape(eval->value("masks", "")), eval->value("region_fill", 127),
                        model_name("clip"), model_name("dino"), model_name("lpips"));
    body += "<h2>Generations by prompt</h2>" + generations_section(*eval, eval->at("scores"), 16);
  } else {
    body += "<p class=\"note\">No metrics: pass --eval with the JSON of <code>singleinsert eval images</code>.</p>";
  }
  return page("singleinsert concept " + concept_json.value("trigger", ""), body);
}

std::string batch_report_html(const std::string& batch_dir, int images_per_photo) {
  const fs::path dir(batch_dir);
  if (!fs::exists(dir / "summary.json")) throw Error(batch_dir + ": not a batch folder (no summary.json)");
  const nlohmann::json summary = read_json(dir / "summary.json");
  std::string body = fmt::format("<h1>Batch &middot; {}</h1><p>{} of {} photos done.</p>",
                                 escape(fs::absolute(dir).lexically_normal().string()), summary.value("done", 0),
                                 summary.value("total", 0));
  body += "<table><tr><th>photo</th><th>status</th><th>stage I s</th><th>stage II s</th><th>loss I</th>"
          "<th>loss II</th><th>CLIP-I-f</th><th>DINO-f</th><th>CLIP-T</th><th>DIV</th><th>ESR</th></tr>";
  std::string sections;
  for (const nlohmann::json& row : summary.value("photos", nlohmann::json::array())) {
    const std::string photo = row.value("photo", "");
    const fs::path photo_dir = dir / photo;
    nlohmann::json scores;
    if (fs::exists(photo_dir / "metrics.json")) scores = read_json(photo_dir / "metrics.json").value("scores", nlohmann::json());
    const nlohmann::json means = scores.is_object() ? scores.value("means", nlohmann::json::object()) : nlohmann::json::object();
    auto from_scores = [&](const char* key) { return scores.is_object() ? scores.value(key, nlohmann::json()) : nlohmann::json(); };
    body += fmt::format(
        "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td class=\"num\">{2}</td><td class=\"num\">{3}</td>"
        "<td class=\"num\">{4}</td><td class=\"num\">{5}</td><td class=\"num\">{6}</td><td class=\"num\">{7}</td>"
        "<td class=\"num\">{8}</td><td class=\"num\">{9}</td><td class=\"num\">{10}</td></tr>",
        escape(photo), escape(row.value("status", "") == "failed" ? "failed: " + row.value("error", "") : row.value("status", "")),
        figure(row.value("stage1_seconds", nlohmann::json()), "{:.0f}"),
        figure(row.value("stage2_seconds", nlohmann::json()), "{:.0f}"),
        figure(row.value("stage1_loss", nlohmann::json()), "{:.4f}"),
        figure(row.value("stage2_loss", nlohmann::json()), "{:.4f}"), figure(means.value("clip_i_f", nlohmann::json())),
        figure(means.value("dino_f", nlohmann::json())), figure(means.value("clip_t", nlohmann::json())),
        figure(from_scores("div")), figure(from_scores("esr")));
    if (!fs::exists(photo_dir / "concept" / "concept.json")) continue;
    sections += fmt::format("<h2 id=\"{0}\">{0}</h2>", escape(photo));
    sections += concept_summary(photo_dir / "concept", read_json(photo_dir / "concept" / "concept.json"));
    std::vector<fs::path> images;
    if (fs::is_directory(photo_dir / "images"))
      for (const auto& entry : fs::directory_iterator(photo_dir / "images"))
        if (entry.path().extension() == ".png" && entry.path().filename() != "grid.png") images.push_back(entry.path());
    std::sort(images.begin(), images.end());
    sections += "<div class=\"row\" style=\"margin-top:8px\">";
    for (size_t i = 0; i < images.size() && static_cast<int>(i) < images_per_photo; ++i)
      sections += "<figure>" + embedded_image(images[i], images[i].filename().string(), 120) + "<figcaption>" +
                  escape(images[i].filename().string()) + "</figcaption></figure>";
    sections += "</div>";
  }
  body += "</table>" + sections;
  return page("singleinsert batch " + dir.filename().string(), body);
}

}  // namespace singleinsert
