// The `pipetrain <command>` entry points. Each parses its own options (cxxopts), builds a plain
// config, validates it and hands it to the library. They return the process exit status:
// 0 success, 1 runtime failure, 2 bad input (InputError, or options cxxopts rejects).
#pragma once

namespace pipetrain::cli {

int train_command(int argc, char** argv);
int doctor_command(int argc, char** argv);
int plan_command(int argc, char** argv);
int profile_command(int argc, char** argv);
int bench_command(int argc, char** argv);
int generate_command(int argc, char** argv);
int export_command(int argc, char** argv);
int report_command(int argc, char** argv);
int tokenizer_command(int argc, char** argv);

}  // namespace pipetrain::cli
