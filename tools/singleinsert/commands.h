#pragma once
// Each subcommand registers its flags and its action on the application.
#include <CLI/CLI.hpp>

namespace singleinsert::cli {

void add_generate_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_create_default_model_command(CLI::App& app);
void add_invert_command(CLI::App& app);
void add_finetune_command(CLI::App& app);
void add_world_command(CLI::App& app);
void add_train_base_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_eval_images_command(CLI::App& eval);  // eval images
void add_eval_edits_command(CLI::App& eval);   // eval edits
void add_eval_judge_commands(CLI::App& eval);  // eval train-clip, eval judge
void add_report_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_prepare_command(CLI::App& app);
void add_batch_command(CLI::App& app);
void add_edit_command(CLI::App& app);

}  // namespace singleinsert::cli
