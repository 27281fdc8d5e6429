// runtime/host_allocator: large CPU tensors come from cached mapped blocks that are reused by size,
// and a step boundary returns the blocks the step did not ask for.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "runtime/backends/cpu/host_allocator.h"

using namespace pipetrain;

namespace {

struct Installed {
  Installed() { HostCachingAllocator::install(); }
} installed;

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

// Autograd through cached blocks computes what it computes without them (same values, reused memory).
TEST_CASE("training arithmetic is unchanged by block reuse") {
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({512, 512}, torch::requires_grad());
  torch::Tensor x = torch::randn({64, 512});
  std::vector<double> losses;
  for (int i = 0; i < 3; ++i) {
    torch::Tensor loss = torch::matmul(x, w).pow(2).mean();
    loss.backward();
    losses.push_back(loss.item<double>());
    HostCachingAllocator::end_step();
  }
  CHECK(losses[0] == losses[1]);
  CHECK(losses[1] == losses[2]);
  CHECK(w.grad().abs().sum().item<double>() > 0.0);
}
