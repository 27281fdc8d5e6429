// How a streamed stage's weights reach its device and its gradients leave it: the copy calls, and
// nothing else, differ between a GPU and the CPU stand-in (stages/streamed_stage.h runs the same
// logic over either).
//
// A window of `slots` buffers lives on the device. Loading layer l into slot j converts the
// layer's float32 masters (host RAM) into the compute dtype and copies them into the slot on the
// copy engine, after every use of the slot so far: a slot is refilled only once the compute that
// used it has released it, and refilling one that is still held is a logic error, never a silent
// overwrite. Gradients go out the other way, into host tensors, on a second worker, which also
// runs what must follow them (a layer's optimizer step): loads never queue behind a step.
//
//   StandInWeightStream stream(/*slots=*/2, slot_elements, torch::kFloat32);
//   stream.load(0, layer, views_of_slot_0, masters);   // queued on the copy engine
//   stream.wait_loaded(0);                               // compute may read slot 0 now
//   ... compute ...
//   stream.release(0);                                   // slot 0 may be refilled
//   stream.copy_out(host_grads, device_grads);
//   stream.after_copies([&] { step(layer); });          // on the copies' worker, after them
//   stream.wait_copies_out();                            // the copies (not the steps) have landed
//   stream.wait_idle();                                  // and every job after them has run
#pragma once

#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pipetrain {

class WeightStream {
 public:
  virtual ~WeightStream() = default;
  // The device the window lives on, and the window's slots (flat, `slot_elements` each).
  virtual torch::Device device() const = 0;
  virtual const torch::Tensor& slot(int j) const = 0;
  virtual int slots() const = 0;
  // Queues layer `layer`'s weights into slot j: views[i] (of slot j) <- masters[i], converted.
  // Throws std::logic_error when slot j is still held (loaded and not released).
  virtual void load(int j, int64_t layer, const std::vector<torch::Tensor>& views,
                    const std::vector<torch::Tensor>& masters) = 0;
  // Blocks until slot j's load has landed; it is then held until release(j).
  virtual void wait_loaded(int j) = 0;
  virtual void release(int j) = 0;
  // Queues host[i] <- device[i] (converted to host[i]'s dtype), after what the device computed so far.
  virtual void copy_out(const std::vector<torch::Tensor>& host, const std::vector<torch::Tensor>& device) = 0;
  // Queues a host job after the copies out queued so far (on their worker).
  virtual void after_copies(std::function<void()> job) = 0;
  // Blocks until every copy out queued so far has landed in its host tensors.
  virtual void wait_copies_out() = 0;
  // Blocks until every copy out and every job after them has run; rethrows a job's failure.
  virtual void wait_idle() = 0;
  // Bytes of the window on the device.
  virtual int64_t window_bytes() const = 0;
  // After a failed step: waits for the queued copies, then every slot is free.
  virtual void reset() = 0;
};

// One thread that runs queued jobs in order (a copy engine's host side). The first exception a job
// throws is kept; failure() returns it.
class SerialWorker {
 public:
  SerialWorker();
  ~SerialWorker();
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;
  void enqueue(std::function<void()> job);
  // Blocks until `done()` holds (checked under the worker's lock, after each job) or a job failed.
  void wait_until(const std::function<bool()>& done);
  // Blocks until no job is queued or running; rethrows a job's failure.
  void wait_idle();
  // Runs `change` under the worker's lock, then wakes every waiter.
  void locked(const std::function<void()>& change);
  // Blocks until no job is queued or running, then clears a failure.
  void drain();
  std::string failure() const;

 private:
  void work();
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::function<void()>> jobs_;
  std::string failure_;
  bool stopping_ = false;
  bool running_ = false;
  std::thread thread_;
};

// The slot states of a window, the same for every engine: free -> loading -> loaded -> held ->
// free; a load into a slot that is not free is a logic error naming both layers.
class WindowSlots {
 public:
  explicit WindowSlots(int slots) : state_(static_cast<size_t>(slots), State::kFree), layer_(static_cast<size_t>(slots), -1) {}
  enum class State { kFree, kLoading, kLoaded, kHeld };
  void start_load(int j, int64_t layer);  // free -> loading (throws when not free)
  void loaded(int j) { state_[static_cast<size_t>(j)] = State::kLoaded; }
  void hold(int j);                       // waited for: -> held
  void release(int j);                    // held -> free (throws when not held)
  void reset();
  State state(int j) const { return state_[static_cast<size_t>(j)]; }

 private:
  std::vector<State> state_;
  std::vector<int64_t> layer_;
};

// The stand-in device: the window lives in host memory of its own (a separate budget), and one
// worker thread plays the copy engine, running copies in the order they were queued, concurrently
// with compute, so the ordering rules above are exercised as on a GPU.
class StandInWeightStream : public WeightStream {
 public:
  StandInWeightStream(int slots, int64_t slot_elements, torch::Dtype compute);
  ~StandInWeightStream() override;
  StandInWeightStream(const StandInWeightStream&) = delete;
  StandInWeightStream& operator=(const StandInWeightStream&) = delete;

  torch::Device device() const override { return torch::kCPU; }
  const torch::Tensor& slot(int j) const override { return window_[static_cast<size_t>(j)]; }
  int slots() const override { return static_cast<int>(window_.size()); }
  void load(int j, int64_t layer, const std::vector<torch::Tensor>& views, const std::vector<torch::Tensor>& masters) override;
  void wait_loaded(int j) override;
  void release(int j) override;
  void copy_out(const std::vector<torch::Tensor>& host, const std::vector<torch::Tensor>& device) override;
  void after_copies(std::function<void()> job) override;
  void wait_copies_out() override;
  void wait_idle() override;
  int64_t window_bytes() const override;
  void reset() override;
  // Loads run so far (each layer's weights crossing once counts one).
  int64_t loads() const { return loads_count_; }

 private:
  std::vector<torch::Tensor> window_;
  WindowSlots slots_;           // under loads_'s lock
  int64_t queued_copies_ = 0;   // under outs_'s lock
  int64_t loads_count_ = 0;
  SerialWorker loads_;          // last: their threads stop first
  SerialWorker outs_;
};

}  // namespace pipetrain
