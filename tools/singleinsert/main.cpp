// singleinsert: teach Stable Diffusion a concept from one image, and render it from text.
#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "commands.h"
#include "singleinsert/core/error.h"
#include "singleinsert/core/logging.h"
#include "singleinsert/core/runtime.h"

// Subcommands run in CLI11 callbacks; whatever they throw reaches the handlers below.

namespace {

std::string first_line(const std::string& text) {
  const size_t end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"singleinsert: insert a concept from a single image into Stable Diffusion, then render it"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags (--log-level) may follow the subcommand
  app.set_help_all_flag("--help-all", "Print help for every subcommand");
  singleinsert::init_logging(singleinsert::LogLevel::kWarn);
  singleinsert::configure_runtime();
  app.add_option_function<std::string>(
         "--log-level", [](const std::string& level) { singleinsert::init_logging(singleinsert::parse_log_level(level)); },
         "debug, info, warn (default), error or off")
      ->type_name("LEVEL");
  singleinsert::cli::add_invert_command(app);
  singleinsert::cli::add_finetune_command(app);
  singleinsert::cli::add_generate_command(app);
  singleinsert::cli::add_edit_command(app);
  singleinsert::cli::add_tokenize_command(app);
  singleinsert::cli::add_create_default_model_command(app);
  singleinsert::cli::add_export_command(app);
  singleinsert::cli::add_convert_command(app);
  singleinsert::cli::add_info_command(app);
  singleinsert::cli::add_prepare_command(app);
  singleinsert::cli::add_batch_command(app);
  singleinsert::cli::add_world_command(app);
  singleinsert::cli::add_train_base_command(app);
  singleinsert::cli::add_eval_command(app);
  singleinsert::cli::add_report_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s (see --help)\n", first_line(e.what()).c_str());
    return 2;
  } catch (const singleinsert::Error& e) {
    std::fprintf(stderr, "error: %s\n", first_line(e.what()).c_str());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", first_line(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", first_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
