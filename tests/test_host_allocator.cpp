// runtime/host_allocator: large CPU tensors come from cached mapped blocks that are reused by size,
// and a step boundary returns the blocks the step did not ask for.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/backends/cpu/host_allocator.h"
#include "test_util.h"

using namespace pipetrain;

namespace {

// PIPETRAIN_TEST_WITHOUT_HOST_ALLOCATOR=1: this process computes with LibTorch's own allocator (the
// reference the block-reuse test compares against).
const bool kWithoutAllocator = std::getenv("PIPETRAIN_TEST_WITHOUT_HOST_ALLOCATOR") != nullptr;

struct Installed {
  Installed() {
    if (!kWithoutAllocator) HostCachingAllocator::install();
  }
} installed;

// Three training steps' losses and the final gradient's sum, as hex floats (exact).
std::vector<std::string> training_arithmetic() {
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({512, 512}, torch::requires_grad());
  torch::Tensor x = torch::randn({64, 512});
  std::vector<std::string> out;
  char text[64];
  for (int i = 0; i < 3; ++i) {
    torch::Tensor loss = torch::matmul(x, w).pow(2).mean();
    loss.backward();
    std::snprintf(text, sizeof(text), "%a", loss.item<double>());
    out.push_back(text);
    if (HostCachingAllocator::installed()) HostCachingAllocator::end_step();
  }
  std::snprintf(text, sizeof(text), "%a", w.grad().sum().item<double>());
  out.push_back(text);
  return out;
}

}  // namespace

// Freeing a large tensor and asking for the same size again maps nothing new: the block is reused.
TEST_CASE("a freed block serves the next request of its size") {
  HostCachingAllocator::release_cached();
  const HostAllocatorStats before = HostCachingAllocator::stats();
  { torch::Tensor a = torch::ones({1 << 18}); }  // 1 MiB
  const HostAllocatorStats freed = HostCachingAllocator::stats();
  CHECK(freed.maps == before.maps + 1);
  CHECK(freed.cached_bytes >= (1 << 20));
  torch::Tensor b = torch::full({1 << 18}, 3.0f);
  const HostAllocatorStats reused = HostCachingAllocator::stats();
  CHECK(reused.maps == freed.maps);
  CHECK(reused.reuses == freed.reuses + 1);
  CHECK(b.sum().item<double>() == doctest::Approx(3.0 * (1 << 18)));
  // Small tensors do not touch the cache.
  torch::Tensor small = torch::ones({16});
  CHECK(HostCachingAllocator::stats().maps == reused.maps);
}

// end_step keeps cached blocks of the sizes the step requested and unmaps the others.
TEST_CASE("end_step returns blocks of sizes the step did not request") {
  HostCachingAllocator::release_cached();
  HostCachingAllocator::end_step();
  { torch::Tensor one = torch::ones({1 << 18}), two = torch::ones({1 << 19}); }  // 1 MiB and 2 MiB
  HostCachingAllocator::end_step();  // both sizes were requested in this "step": both stay cached
  const int64_t cached = HostCachingAllocator::stats().cached_bytes;
  CHECK(cached >= 3 << 20);
  { torch::Tensor again = torch::ones({1 << 18}); }  // the next step asks only for 1 MiB
  HostCachingAllocator::end_step();
  const HostAllocatorStats after = HostCachingAllocator::stats();
  CHECK(after.cached_bytes < 2 << 20);
  CHECK(after.cached_bytes >= 1 << 20);
  HostCachingAllocator::release_cached();
  CHECK(HostCachingAllocator::stats().cached_bytes == 0);
}

// Autograd through cached blocks computes what it computes without them: the same steps in a
// process of this binary without the caching allocator give the same losses and gradient, bit for
// bit, and the blocks were reused.
TEST_CASE("training arithmetic is unchanged by block reuse") {
  const std::vector<std::string> here = training_arithmetic();
  if (kWithoutAllocator) {
    std::string line;
    for (const std::string& v : here) line += v + " ";
    MESSAGE("reference: " << line);
    return;
  }
  CHECK(HostCachingAllocator::stats().cached_bytes > 0);  // blocks were cached, and so reused by the later steps
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  REQUIRE(n > 0);
  const auto child = testing::run_command("PIPETRAIN_TEST_WITHOUT_HOST_ALLOCATOR=1 " + std::string(self, static_cast<size_t>(n)) +
                                          " '--test-case=training arithmetic is unchanged by block reuse'");
  REQUIRE_MESSAGE(child.exit_code == 0, child.output);
  const auto at = child.output.find("reference: ");
  REQUIRE_MESSAGE(at != std::string::npos, child.output);
  std::istringstream values(child.output.substr(at + 11));
  std::vector<std::string> reference(here.size());
  for (std::string& v : reference) values >> v;
  CHECK(here == reference);
}
