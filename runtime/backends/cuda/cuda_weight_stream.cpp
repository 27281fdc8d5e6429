// A streamed stage's copy engine on a GPU (stages/weight_stream.h): the window is `slots` device
// buffers; two pinned staging buffers carry weights in and two carry gradients out.
//
// Load of layer l into slot j, on this stream's loads worker (the compute thread only queues it):
//   wait until a staging buffer's previous copy has left it -> convert the layer's float32 masters
//   into it in the compute dtype (LibTorch's intra-op threads) -> the copy stream waits for the
//   compute stream's release of slot j (an event: the GPU, not the host, waits) -> cudaMemcpyAsync
//   staging -> slot j -> record `loaded[j]`.
// wait_loaded(j): the host waits only until the copy has been queued; the compute stream then
//   waits for `loaded[j]` on the GPU.
// Gradients out, on a second worker (so loads never queue behind them or a layer's step): the copy
//   stream waits for the compute stream (the gradients are final there) -> cudaMemcpyAsync into a
//   staging buffer -> the worker waits for it and converts into the host tensors (float32 master
//   gradients); jobs queued after (a layer's step) run on the same worker.
// Written against the CUDA runtime and c10/cuda like cuda_transfer.cpp; compiled on every machine
// with the toolkit's headers, run only where a GPU is lent (the GPU-check issue measures it).
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <memory>

#include "runtime/backends/cuda/cuda_backend.h"
#include "runtime/backends/cuda/cuda_util.h"

namespace pipetrain::cuda_backend {
namespace {

class CudaWeightStream : public WeightStream {
 public:
  CudaWeightStream(torch::Device gpu, int slots, int64_t slot_elements, torch::Dtype compute)
      : gpu_(gpu), compute_(compute), slots_(slots),
        in_stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, gpu.index())),
        out_stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, gpu.index())) {
    if (slots < 1) throw std::invalid_argument("a weight window needs at least one slot, got " + std::to_string(slots));
    c10::cuda::CUDAGuard guard(gpu.index());
    const int64_t bytes = slot_elements * static_cast<int64_t>(c10::elementSize(compute));
    for (int j = 0; j < slots; ++j) {
      window_.push_back(torch::empty({slot_elements}, torch::TensorOptions().dtype(compute).device(gpu)));
      loaded_.push_back(std::make_unique<Event>());
      released_.push_back(std::make_unique<Event>());
    }
    for (int i = 0; i < 2; ++i) {
      staging_in_.emplace_back(bytes);
      staging_out_.emplace_back(bytes);
      in_done_.push_back(std::make_unique<Event>());
      out_done_.push_back(std::make_unique<Event>());
    }
  }
  ~CudaWeightStream() override {
    loads_.drain();
    outs_.drain();
  }

  torch::Device device() const override { return gpu_; }
  const torch::Tensor& slot(int j) const override { return window_[static_cast<size_t>(j)]; }
  int slots() const override { return static_cast<int>(window_.size()); }
  int64_t window_bytes() const override {
    return static_cast<int64_t>(window_.size()) * window_.front().numel() * static_cast<int64_t>(window_.front().element_size());
  }

  void load(int j, int64_t layer, const std::vector<torch::Tensor>& views, const std::vector<torch::Tensor>& masters) override {
    loads_.locked([&] { slots_.start_load(j, layer); });
    loads_.enqueue([this, j, views, masters] {
      c10::cuda::CUDAGuard guard(gpu_.index());
      const size_t b = next_in_;
      next_in_ = (next_in_ + 1) % staging_in_.size();
      in_done_[b]->synchronize();  // its previous copy has left it
      int64_t offset = 0;
      {
        torch::NoGradGuard no_grad;
        const torch::Tensor staging = torch::from_blob(staging_in_[b].data(), {staging_in_[b].bytes() / static_cast<int64_t>(c10::elementSize(compute_))},
                                                       torch::TensorOptions().dtype(compute_));
        for (const torch::Tensor& master : masters) {
          staging.narrow(0, offset, master.numel()).view(master.sizes()).copy_(master);
          offset += master.numel();
        }
      }
      const cudaStream_t copy = in_stream_.stream();
      if (released_[static_cast<size_t>(j)]->recorded()) {
        check(cudaStreamWaitEvent(copy, released_[static_cast<size_t>(j)]->get(), 0), "cudaStreamWaitEvent");
      }
      const size_t bytes = static_cast<size_t>(offset) * c10::elementSize(compute_);
      check(cudaMemcpyAsync(window_[static_cast<size_t>(j)].data_ptr(), staging_in_[b].data(), bytes, cudaMemcpyHostToDevice, copy),
            "cudaMemcpyAsync (weights in)");
      in_done_[b]->record(copy);
      loaded_[static_cast<size_t>(j)]->record(copy);
      loads_.locked([&] { slots_.loaded(j); });
      (void)views;  // the views alias the slot: the copy above fills them
    });
  }

  void wait_loaded(int j) override {
    loads_.locked([&] {
      if (slots_.state(j) == WindowSlots::State::kFree) slots_.hold(j);  // throws: never loaded
    });
    loads_.wait_until([&] { return slots_.state(j) != WindowSlots::State::kLoading; });
    loads_.locked([&] { slots_.hold(j); });
    const cudaStream_t compute = c10::cuda::getCurrentCUDAStream(gpu_.index()).stream();
    check(cudaStreamWaitEvent(compute, loaded_[static_cast<size_t>(j)]->get(), 0), "cudaStreamWaitEvent");
  }

  void release(int j) override {
    // What the compute stream launched with the slot so far must finish before a load refills it.
    c10::cuda::CUDAGuard guard(gpu_.index());
    released_[static_cast<size_t>(j)]->record(c10::cuda::getCurrentCUDAStream(gpu_.index()).stream());
    loads_.locked([&] { slots_.release(j); });
  }

  void copy_out(const std::vector<torch::Tensor>& host, const std::vector<torch::Tensor>& device) override {
    c10::cuda::CUDAGuard guard(gpu_.index());
    auto ready = std::make_shared<Event>();
    ready->record(c10::cuda::getCurrentCUDAStream(gpu_.index()).stream());
    for (const torch::Tensor& t : device) c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), out_stream_);
    outs_.locked([&] { ++queued_copies_; });
    outs_.enqueue([this, host, device, ready] {
      c10::cuda::CUDAGuard on_gpu(gpu_.index());
      const size_t b = next_out_;
      next_out_ = (next_out_ + 1) % staging_out_.size();
      out_done_[b]->synchronize();
      const cudaStream_t copy = out_stream_.stream();
      check(cudaStreamWaitEvent(copy, ready->get(), 0), "cudaStreamWaitEvent");
      int64_t offset = 0;
      auto* base = static_cast<char*>(staging_out_[b].data());
      std::vector<torch::Tensor> staged;
      for (const torch::Tensor& t : device) {
        const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
        check(cudaMemcpyAsync(base + offset, t.data_ptr(), bytes, cudaMemcpyDeviceToHost, copy), "cudaMemcpyAsync (gradients out)");
        staged.push_back(torch::from_blob(base + offset, t.sizes(), torch::TensorOptions().dtype(t.scalar_type())));
        offset += static_cast<int64_t>(bytes);
      }
      out_done_[b]->record(copy);
      out_done_[b]->synchronize();
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < host.size(); ++i) host[i].copy_(staged[i]);
      outs_.locked([&] { --queued_copies_; });
    });
  }

  void after_copies(std::function<void()> job) override { outs_.enqueue(std::move(job)); }
  void wait_copies_out() override { outs_.wait_until([&] { return queued_copies_ == 0; }); }
  void wait_idle() override { outs_.wait_idle(); }

  void reset() override {
    loads_.drain();
    outs_.drain();
    check(cudaStreamSynchronize(in_stream_.stream()), "cudaStreamSynchronize");
    check(cudaStreamSynchronize(out_stream_.stream()), "cudaStreamSynchronize");
    loads_.locked([&] { slots_.reset(); });
    outs_.locked([&] { queued_copies_ = 0; });
  }

 private:
  torch::Device gpu_;
  torch::Dtype compute_;
  WindowSlots slots_;
  c10::cuda::CUDAStream in_stream_;   // weights in (H2D)
  c10::cuda::CUDAStream out_stream_;  // gradients out (D2H): the two copy engines overlap
  std::vector<torch::Tensor> window_;
  std::vector<std::unique_ptr<Event>> loaded_, released_, in_done_, out_done_;
  std::vector<PinnedBuffer> staging_in_, staging_out_;
  size_t next_in_ = 0;         // the loads worker's
  size_t next_out_ = 0;        // the outs worker's
  int64_t queued_copies_ = 0;  // under outs_'s lock
  SerialWorker loads_;         // last: their threads stop first
  SerialWorker outs_;
};

}  // namespace

std::unique_ptr<WeightStream> make_weight_stream(torch::Device gpu, int slots, int64_t slot_elements, torch::Dtype compute) {
  return std::make_unique<CudaWeightStream>(gpu, slots, slot_elements, compute);
}

}  // namespace pipetrain::cuda_backend
