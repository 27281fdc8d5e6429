#include "scheduler/splits.h"

namespace pipetrain {

void for_each_cut(int64_t num_layers, int num_stages, int64_t stride,
                  const std::function<void(const std::vector<int64_t>& last)>& visit) {
  if (num_stages < 1 || num_stages > num_layers) return;
  std::vector<int64_t> last(static_cast<size_t>(num_stages));
  last.back() = num_layers - 1;
  const std::function<void(int, int64_t)> cut = [&](int s, int64_t first) {
    if (s == num_stages - 1) {
      visit(last);
      return;
    }
    for (int64_t end = first; end <= num_layers - (num_stages - s); end += stride) {
      last[static_cast<size_t>(s)] = end;
      cut(s + 1, end + 1);
    }
  };
  cut(0, 0);
}

}  // namespace pipetrain
