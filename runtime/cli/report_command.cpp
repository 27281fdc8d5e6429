#include <cxxopts.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "memory/errors.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/tools/report.h"

namespace pipetrain::cli {

int report_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain report",
                           "Summarises runs and draws them (gnuplot), overlaid: loss against step and tokens (training "
                           "and validation), tokens/s, bubble, peak RSS and VRAM, learning rate. A run still going is "
                           "shown as far as it got.");
  options.add_options()
      ("runs", "run directories", cxxopts::value<std::vector<std::string>>())
      ("o,out", "the PNG to write (default: RUN/report.png for one run, report.png for several)",
       cxxopts::value<std::string>())
      ("h,help", "show this help");
  options.parse_positional({"runs"});
  options.positional_help("RUN [RUN...]");
  const auto parsed = parse_command(options, argc, argv, "report");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("runs")) throw InputError("name at least one run directory: pipetrain report RUN [RUN...]");
  std::vector<RunSeries> runs;
  for (const std::string& dir : args["runs"].as<std::vector<std::string>>()) runs.push_back(read_run(dir));
  const std::string out =
      args.count("out") ? args["out"].as<std::string>() : runs.size() == 1 ? runs[0].dir + "/report.png" : "report.png";
  std::printf("%s", report_summary(runs).c_str());
  if (draw_report(runs, out)) {
    std::printf("wrote %s\n", out.c_str());
  } else {
    std::printf("no plot: gnuplot is not installed (apt-get install gnuplot-nox)\n");
  }
  return 0;
}

}  // namespace pipetrain::cli
