// Transfers between the CPU and a GPU through pinned staging rings, on copy streams of their own.
//
// Host to device (an activation into a GPU stage, or a gradient back into one):
//   the sending CPU stage's op writes its output straight into a free ring slot (staging(): a
//   slot whose previous copy has left it, held for that micro-batch; the op's own threads write it)
//   -> cudaMemcpyAsync slot -> device on the copy stream -> the GPU stage's stream waits for that
//   copy (an event, on the GPU: the host does not wait) -> the slot is free once the copy is done.
//   When no slot was free for the op, send() waits for the next unheld slot's copy and memcpys the
//   tensor into it; when every slot is held, the copy reads the tensor's own memory (the driver
//   stages it). The copy of micro-batch k+1 runs while the stage computes micro-batch k.
// Device to host (out of a GPU stage):
//   the copy stream waits for the event of exactly the op that made the tensor (not for whatever
//   the stage launched since) -> cudaMemcpyAsync device -> a free slot -> this transfer's thread
//   waits for the copy (the CPU stage needs the bytes) -> the CPU stage gets the slot itself as its
//   tensor, no second copy; the slot is free again when the last tensor using it goes (after the
//   micro-batch's backward). The ring has the receiving stage's in-flight count + 1 slots, so one
//   is always free; if none were, the bytes would be copied out into ordinary memory instead.
//   The GPU stage's own thread never waits: it is already launching the next op.
// Device memory that one stream allocated and another uses is handed to the caching allocator with
// recordStream, so it is not reused before the other stream is done with it.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <atomic>
#include <cstring>

#include "runtime/backends/cuda/cuda_backend.h"
#include "runtime/backends/cuda/cuda_stage_device.h"
#include "runtime/backends/cuda/cuda_util.h"

namespace pipetrain::cuda_backend {
namespace {

// A ring of pinned slots; slot i is free again once the copy recorded in its event is done and no
// micro-batch holds it (staged by its op, not yet sent).
class PinnedRing {
 public:
  explicit PinnedRing(const RingSpec& spec) : held_(spec.slots) {
    if (spec.slots < 1 || spec.slot_bytes < 1) {
      throw std::invalid_argument("a pinned ring needs at least one slot of at least one byte (got " +
                                  std::to_string(spec.slots) + " x " + std::to_string(spec.slot_bytes) + " bytes)");
    }
    for (int i = 0; i < spec.slots; ++i) {
      buffers_.emplace_back(spec.slot_bytes);
      copied_.emplace_back();
    }
  }
  // A slot for micro-batch k's op to write into, if one is free now (never waits).
  int claim(int k) {
    return held_.claim(k, [&](int i) {
      const Event& e = copied_[static_cast<size_t>(i)];
      return !e.recorded() || cudaEventQuery(e.get()) == cudaSuccess;
    });
  }
  // The slot k's op wrote into, or -1; released once its copy's event is recorded (claim() then
  // waits for that copy).
  int slot_of(int k) { return held_.slot_of(k); }
  void release(int k) { held_.release(k); }
  void reset() { held_.reset(); }
  // A slot no op holds, now held for k, once its previous copy has finished; -1 when every slot is
  // held.
  int acquire(int k) {
    const int i = held_.claim(k, [](int) { return true; });
    if (i >= 0) copied_[static_cast<size_t>(i)].synchronize();
    return i;
  }
  void* data(int i) const { return buffers_[static_cast<size_t>(i)].data(); }
  Event& copied(int i) { return copied_[static_cast<size_t>(i)]; }
  int64_t slot_bytes() const { return buffers_.front().bytes(); }
  int64_t total_bytes() const { return slot_bytes() * static_cast<int64_t>(buffers_.size()); }

 private:
  std::vector<PinnedBuffer> buffers_;
  std::vector<Event> copied_;
  StagedSlots held_;
};

// A ring whose slots are lent out as CPU tensors (device to host). A slot is held from its copy
// until the last tensor viewing it is destroyed; the memory lives as long as any such tensor does,
// even past the transfer.
class LentRing {
 public:
  explicit LentRing(const RingSpec& spec) : slot_bytes_(spec.slot_bytes) {
    if (spec.slots < 1 || spec.slot_bytes < 1) {
      throw std::invalid_argument("a pinned ring needs at least one slot of at least one byte (got " +
                                  std::to_string(spec.slots) + " x " + std::to_string(spec.slot_bytes) + " bytes)");
    }
    for (int i = 0; i < spec.slots; ++i) slots_.push_back(std::make_shared<Slot>(spec.slot_bytes));
  }
  // A free slot's index, or -1 when every slot is still held by a tensor.
  int acquire() {
    for (size_t n = 0; n < slots_.size(); ++n) {
      const size_t i = (next_ + n) % slots_.size();
      bool expected = false;
      if (slots_[i]->held.compare_exchange_strong(expected, true)) {
        next_ = (i + 1) % slots_.size();
        return static_cast<int>(i);
      }
    }
    return -1;
  }
  void* data(int i) const { return slots_[static_cast<size_t>(i)]->buffer.data(); }
  // Slot i's bytes as a CPU tensor that frees the slot when it goes.
  torch::Tensor lend(int i, c10::IntArrayRef sizes, const torch::TensorOptions& options) {
    std::shared_ptr<Slot> slot = slots_[static_cast<size_t>(i)];
    return torch::from_blob(slot->buffer.data(), sizes, [slot](void*) { slot->held.store(false); },
                            options.device(torch::kCPU));
  }
  int64_t slot_bytes() const { return slot_bytes_; }
  int64_t total_bytes() const { return slot_bytes_ * static_cast<int64_t>(slots_.size()); }

 private:
  struct Slot {
    explicit Slot(int64_t bytes) : buffer(bytes) {}
    PinnedBuffer buffer;
    std::atomic<bool> held{false};
  };
  std::vector<std::shared_ptr<Slot>> slots_;
  int64_t slot_bytes_;
  size_t next_ = 0;
};

int64_t checked_bytes(const torch::Tensor& t, int64_t slot_bytes, const std::string& resource) {
  const int64_t bytes = static_cast<int64_t>(t.nbytes());
  if (bytes > slot_bytes) {
    throw std::runtime_error("transfer " + resource + ": a tensor of " + std::to_string(bytes) +
                             " bytes does not fit its ring's slots of " + std::to_string(slot_bytes) +
                             " bytes (the ring is sized from the boundary activation)");
  }
  return bytes;
}

class CudaTransfer : public Transfer {
 public:
  CudaTransfer(torch::Device gpu, std::string resource, int micro_batches)
      : gpu_(gpu), resource_(std::move(resource)),
        copy_stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, gpu.index())),
        compute_stream_(c10::cuda::getDefaultCUDAStream(gpu.index())), clock_(micro_batches) {}

  std::string resource() const override { return resource_; }
  void begin_step() override {
    c10::cuda::CUDAGuard guard(gpu_.index());
    clock_.start(copy_stream_.stream());
  }
  std::vector<DeviceSpan> finish_step() override {
    std::vector<DeviceSpan> spans;
    for (int k = 0; k < clock_.size(); ++k) {
      if (!clock_.used(k)) continue;
      clock_.end(k).synchronize();
      spans.push_back({EventKind::kSendActivation, k, clock_.host_time(clock_.begin(k)), clock_.host_time(clock_.end(k))});
    }
    return spans;
  }

 protected:
  torch::Device gpu_;
  std::string resource_;
  c10::cuda::CUDAStream copy_stream_;
  c10::cuda::CUDAStream compute_stream_;
  SpanClock clock_;
};

class HostToDevice final : public CudaTransfer {
 public:
  HostToDevice(torch::Device gpu, const RingSpec& ring, int micro_batches)
      : CudaTransfer(gpu, "cpu->" + gpu.str(), micro_batches), ring_(ring) {}
  int64_t pinned_bytes() const override { return ring_.total_bytes(); }
  void begin_step() override {
    CudaTransfer::begin_step();
    ring_.reset();
    staged_by_op_ = 0;
  }
  int staged_by_op() const override { return staged_by_op_; }

  torch::Tensor staging(int k, c10::IntArrayRef sizes, torch::ScalarType dtype) override {
    const auto options = torch::TensorOptions().dtype(dtype);
    if (c10::multiply_integers(sizes) * static_cast<int64_t>(c10::elementSize(dtype)) > ring_.slot_bytes()) return {};
    c10::cuda::CUDAGuard guard(gpu_.index());
    const int slot = ring_.claim(k);
    if (slot < 0) return {};
    return torch::from_blob(ring_.data(slot), sizes, options);  // the ring outlives every step
  }

  torch::Tensor send(int k, const torch::Tensor& tensor) override {
    c10::cuda::CUDAGuard guard(gpu_.index());
    const torch::Tensor src = tensor.contiguous();
    const int64_t bytes = checked_bytes(src, ring_.slot_bytes(), resource_);
    int slot = ring_.slot_of(k);
    if (slot >= 0 && src.data_ptr() == ring_.data(slot)) {
      ++staged_by_op_;  // the op wrote it there
    } else {
      ring_.release(k);  // held but not used (the op's output was not the slot)
      slot = ring_.acquire(k);
      if (slot >= 0) std::memcpy(ring_.data(slot), src.data_ptr(), static_cast<size_t>(bytes));
    }
    torch::Tensor dst;
    {
      c10::cuda::CUDAStreamGuard on_copy(copy_stream_);
      dst = torch::empty(src.sizes(), src.options().device(gpu_));
    }
    const cudaStream_t copy = copy_stream_.stream();
    clock_.begin(k).record(copy);
    // With every slot held by ops ahead of this one, from the tensor's own memory: pageable, so
    // the driver stages it and the call returns once the bytes are read.
    check(cudaMemcpyAsync(dst.data_ptr(), slot >= 0 ? ring_.data(slot) : src.data_ptr(), static_cast<size_t>(bytes),
                          cudaMemcpyHostToDevice, copy),
          "cudaMemcpyAsync (host to device)");
    clock_.end(k).record(copy);
    clock_.mark_used(k);
    if (slot >= 0) ring_.copied(slot).record(copy);
    ring_.release(k);  // the slot's next claim waits for this copy
    // The stage computes on its stream: it must not read dst before the copy lands, and the
    // allocator must not hand dst's memory to the copy stream again before the stage is done.
    check(cudaStreamWaitEvent(compute_stream_.stream(), clock_.end(k).get(), 0), "cudaStreamWaitEvent");
    c10::cuda::CUDACachingAllocator::recordStream(dst.storage().data_ptr(), compute_stream_);
    return dst;
  }

 private:
  PinnedRing ring_;
  int staged_by_op_ = 0;
};

class DeviceToHost final : public CudaTransfer {
 public:
  DeviceToHost(torch::Device gpu, const RingSpec& ring, int micro_batches, StageDevice* producer, EventKind produced_by)
      : CudaTransfer(gpu, gpu.str() + "->cpu", micro_batches), ring_(ring),
        producer_(dynamic_cast<CudaStageDevice*>(producer)), produced_by_(produced_by) {}
  int64_t pinned_bytes() const override { return ring_.total_bytes(); }

  torch::Tensor send(int k, const torch::Tensor& tensor) override {
    c10::cuda::CUDAGuard guard(gpu_.index());
    torch::Tensor src = tensor;
    cudaEvent_t ready = producer_ != nullptr ? producer_->op_done(produced_by_, k) : nullptr;
    if (!src.is_contiguous() || ready == nullptr) {
      // Made here, on the compute stream: wait for everything launched on it so far.
      c10::cuda::CUDAStreamGuard on_compute(compute_stream_);
      src = src.contiguous();
      tip_.record(compute_stream_.stream());
      ready = tip_.get();
    }
    const int64_t bytes = checked_bytes(src, ring_.slot_bytes(), resource_);
    const int slot = ring_.acquire();
    torch::Tensor out;
    void* dst = nullptr;
    if (slot >= 0) {
      dst = ring_.data(slot);
    } else {  // every slot still held: ordinary memory, copied through the driver's own staging
      out = torch::empty(src.sizes(), src.options().device(torch::kCPU));
      dst = out.data_ptr();
    }
    const cudaStream_t copy = copy_stream_.stream();
    check(cudaStreamWaitEvent(copy, ready, 0), "cudaStreamWaitEvent");
    clock_.begin(k).record(copy);
    check(cudaMemcpyAsync(dst, src.data_ptr(), static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, copy),
          "cudaMemcpyAsync (device to host)");
    clock_.end(k).record(copy);
    clock_.mark_used(k);
    c10::cuda::CUDACachingAllocator::recordStream(src.storage().data_ptr(), copy_stream_);
    // The CPU stage needs the bytes: this transfer's thread (not the GPU stage's) waits for them.
    clock_.end(k).synchronize();
    return slot >= 0 ? ring_.lend(slot, src.sizes(), src.options()) : out;
  }

 private:
  LentRing ring_;
  CudaStageDevice* producer_;
  EventKind produced_by_;
  Event tip_;
};

}  // namespace

std::unique_ptr<Transfer> make_transfer(torch::Device from, torch::Device to, const RingSpec& ring, StageDevice* producer,
                                        EventKind produced_by) {
  const torch::Device gpu = from.is_cuda() ? from : to;
  c10::cuda::CUDAGuard guard(gpu.index());  // the ring's events belong to this GPU
  if (from.is_cpu() && to.is_cuda()) return std::make_unique<HostToDevice>(to, ring, ring.micro_batches);
  if (from.is_cuda() && to.is_cpu()) return std::make_unique<DeviceToHost>(from, ring, ring.micro_batches, producer, produced_by);
  throw std::logic_error("cuda_backend::make_transfer links the CPU and a GPU, not " + from.str() + " and " + to.str());
}

}  // namespace pipetrain::cuda_backend
