// The GPU side behind the device registry (runtime/backends/registry.h, runtime/backends/cuda/): staging-ring transfers, the
// VRAM cap, the GPU op runner. On a build or machine without CUDA the GPU cases print why they are
// skipped, and the registry's CPU-only answers are checked instead.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <stdexcept>
#include <string>

#include "runtime/backends/registry.h"
#include "runtime/backends/backend.h"

using namespace pipetrain;

namespace {

bool skip_without_cuda() {
  if (cuda_available()) return false;
  MESSAGE("skipped: no usable CUDA here (" << torch_build_description() << ")");
  return true;
}

RingSpec small_ring(int micro_batches) {
  RingSpec ring;
  ring.slots = 2;
  ring.slot_bytes = 4 * 1024 * static_cast<int64_t>(sizeof(float));
  ring.micro_batches = micro_batches;
  return ring;
}

}  // namespace

// Without CUDA, the registry hands out CPU pieces and refuses GPU ones with a message, not a crash.
TEST_CASE("a CPU-only build refuses GPU pieces by name") {
  if (built_with_cuda()) {
    MESSAGE("skipped: this build has CUDA; the GPU cases below run instead");
    return;
  }
  CHECK_FALSE(cuda_available());
  CHECK_THROWS_WITH_AS(make_stage_device(DeviceId::cuda(0), 4), doctest::Contains("built without it"), std::runtime_error);
  CHECK_THROWS_WITH_AS(cap_device_memory(DeviceId::cuda(0), 1 << 20), doctest::Contains("needs CUDA"), std::runtime_error);
  std::unique_ptr<StageDevice> cpu = make_stage_device(DeviceId::cpu(), 4);
  int ran = 0;
  cpu->run_op(EventKind::kForward, 0, [&] { ++ran; });
  CHECK(ran == 1);
  CHECK(cpu->finish_step().empty());
  CHECK(make_transfer(DeviceId::cpu(), DeviceId::cpu())->resource().empty());
}

// Through the pinned rings and back, over more micro-batches than slots: every tensor arrives
// bit for bit, each copy is timed on its copy stream, and the rings are what the plan counts.
TEST_CASE("tensors cross the staging rings unchanged, both ways") {
  if (skip_without_cuda()) return;
  const DeviceId gpu = DeviceId::cuda(0);
  constexpr int kMicroBatches = 7;
  std::unique_ptr<StageDevice> gpu_stage = make_stage_device(gpu, kMicroBatches);
  std::unique_ptr<Transfer> h2d = make_transfer(DeviceId::cpu(), gpu, small_ring(kMicroBatches));
  std::unique_ptr<Transfer> d2h = make_transfer(gpu, DeviceId::cpu(), small_ring(kMicroBatches), gpu_stage.get(), EventKind::kForward);
  CHECK(h2d->resource() == "cpu->cuda:0");
  CHECK(d2h->resource() == "cuda:0->cpu");
  CHECK(h2d->pinned_bytes() == 2 * 4 * 1024 * static_cast<int64_t>(sizeof(float)));
  for (int step = 0; step < 2; ++step) {
    gpu_stage->begin_step();
    h2d->begin_step();
    d2h->begin_step();
    for (int k = 0; k < kMicroBatches; ++k) {
      const torch::Tensor original = torch::randn({4, 8, 32});
      const torch::Tensor there = h2d->send(k, original);
      CHECK(there.device() == torch_device(gpu));
      torch::Tensor doubled;
      gpu_stage->run_op(EventKind::kForward, k, [&] { doubled = there * 2; });
      const torch::Tensor back = d2h->send(k, doubled);
      CHECK(back.device().is_cpu());
      CHECK(torch::equal(back, original * 2));
    }
    CHECK(gpu_stage->finish_step().size() == kMicroBatches);
    for (Transfer* t : {h2d.get(), d2h.get()}) {
      const std::vector<DeviceSpan> spans = t->finish_step();
      CHECK(spans.size() == kMicroBatches);
      for (const DeviceSpan& s : spans) CHECK(s.end >= s.start);
    }
  }
  // A tensor larger than a slot is refused with both sizes named.
  CHECK_THROWS_WITH_AS(h2d->send(0, torch::zeros({4 * 1024 + 1})), doctest::Contains("does not fit its ring's slots"),
                       std::runtime_error);
}

// The cap holds the caching allocator to less than the card: past it an allocation fails as out
// of memory; lifting it lets the same allocation through.
TEST_CASE("the VRAM cap is enforced by the caching allocator") {
  if (skip_without_cuda()) return;
  const DeviceId gpu = DeviceId::cuda(0);
  constexpr int64_t kCap = 256LL << 20;
  CHECK(cap_device_memory(gpu, kCap) == kCap);
  CHECK(device_memory_report(gpu).cap_bytes == kCap);
  CHECK_THROWS(torch::empty({512LL << 20}, torch::TensorOptions().dtype(torch::kUInt8).device(torch_device(gpu))));
  CHECK(cap_device_memory(gpu, 0) == 0);
  const torch::Tensor fits = torch::empty({512LL << 20}, torch::TensorOptions().dtype(torch::kUInt8).device(torch_device(gpu)));
  CHECK(device_memory_report(gpu).peak_allocated_bytes >= (512LL << 20));
}
