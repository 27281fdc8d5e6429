// Robust summaries of measured times: the machines are shared and noisy, so pipetrain reports
// medians.
#pragma once

#include <cstddef>
#include <vector>

namespace pipetrain {

// The middle value (the mean of the two middle ones for an even count); 0 for none.
double median(std::vector<double> values);

// How far predictions were from measurements over a set of runs: errors are (predicted - measured)
// / measured, signed; the summary is over their absolute values.
struct ErrorSummary {
  double median_abs = 0.0;
  double worst_abs = 0.0;
  size_t worst = 0;  // index of the worst error (0 when there are none)
};
ErrorSummary summarise_errors(const std::vector<double>& errors);

}  // namespace pipetrain
