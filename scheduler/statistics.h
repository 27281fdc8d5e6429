// Robust summaries of measured times: the machines are shared and noisy, so pipetrain reports
// medians.
#pragma once

#include <vector>

namespace pipetrain {

// The middle value (the mean of the two middle ones for an even count); 0 for none.
double median(std::vector<double> values);

}  // namespace pipetrain
