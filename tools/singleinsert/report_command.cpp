// singleinsert report: one self-contained HTML page for a concept (with the figures of eval
// images) or for a batch folder.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/io/html_report.h"

namespace fs = std::filesystem;

namespace singleinsert::cli {

void add_report_command(CLI::App& app) {
  struct Args {
    std::string concept_dir, eval, batch, out;
    int images_per_photo = 8;
    bool overwrite = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* command = app.add_subcommand(
      "report", "Write one self-contained HTML page for a concept (source, mask, loss curves, metrics, generations by "
                "prompt) or for a batch folder");
  auto* concept_option = command->add_option("--concept", args->concept_dir, "A concept folder");
  command->add_option("--eval", args->eval, "The JSON of `eval images --json` for this concept")
      ->needs(concept_option);
  auto* batch_option = command->add_option("--batch", args->batch, "A folder written by `batch` instead");
  concept_option->excludes(batch_option);
  command->add_option("--images-per-photo", args->images_per_photo, "Generations shown per photo of a batch")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  command->add_option("--out", args->out, "The .html file to write")->required();
  command->add_flag("--overwrite", args->overwrite, "Replace an existing --out");
  command->callback([args] {
    if (args->concept_dir.empty() && args->batch.empty()) throw Error("report needs --concept or --batch");
    if (fs::exists(args->out) && !args->overwrite) throw Error(args->out + ": already exists (--overwrite replaces it)");
    std::string html;
    if (!args->batch.empty()) {
      html = batch_report_html(args->batch, args->images_per_photo);
    } else {
      nlohmann::json eval;
      if (!args->eval.empty()) {
        try {
          eval = nlohmann::json::parse(read_file(args->eval));
        } catch (const nlohmann::json::exception& e) {
          throw Error(fmt::format("{}: not JSON ({})", args->eval, e.what()));
        }
        if (!eval.is_object() || !eval.contains("scores") || !eval.contains("models"))
          throw Error(args->eval + ": not a record of `eval images --json`");
        const std::string evaluated = eval.value("concept", "");
        if (!evaluated.empty() && fs::weakly_canonical(evaluated) != fs::weakly_canonical(args->concept_dir))
          std::fprintf(stderr, "warning: %s scored the concept %s, not %s\n", args->eval.c_str(), evaluated.c_str(),
                       args->concept_dir.c_str());
      }
      html = concept_report_html(args->concept_dir, args->eval.empty() ? nullptr : &eval);
    }
    write_file_atomic(args->out, html);
    std::fprintf(stderr, "report: %s (%zu KB)\n", args->out.c_str(), html.size() / 1024);
  });
}

}  // namespace singleinsert::cli
