#include "scheduler/statistics.h"

#include <algorithm>
#include <cmath>

namespace pipetrain {

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

ErrorSummary summarise_errors(const std::vector<double>& errors) {
  ErrorSummary summary;
  std::vector<double> magnitudes;
  for (size_t i = 0; i < errors.size(); ++i) {
    magnitudes.push_back(std::abs(errors[i]));
    if (magnitudes.back() > summary.worst_abs) {
      summary.worst_abs = magnitudes.back();
      summary.worst = i;
    }
  }
  summary.median_abs = median(std::move(magnitudes));
  return summary;
}

}  // namespace pipetrain
