#include "stages/weight_stream.h"

#include <stdexcept>

namespace pipetrain {

SerialWorker::SerialWorker() : thread_([this] { work(); }) {}

SerialWorker::~SerialWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void SerialWorker::enqueue(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  changed_.notify_all();
}

void SerialWorker::work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
      running_ = true;
    }
    std::string error;
    try {
      job();
    } catch (const std::exception& e) {
      error = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = false;
      if (!error.empty() && failure_.empty()) failure_ = error;
    }
    changed_.notify_all();
  }
}

void SerialWorker::wait_until(const std::function<bool()>& done) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return done() || !failure_.empty(); });
  if (!failure_.empty()) throw std::runtime_error("weight stream copy failed: " + failure_);
}

void SerialWorker::wait_idle() {
  wait_until([&] { return jobs_.empty() && !running_; });
}

void SerialWorker::locked(const std::function<void()>& change) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    change();
  }
  changed_.notify_all();
}

void SerialWorker::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return jobs_.empty() && !running_; });
  failure_.clear();
}

std::string SerialWorker::failure() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_;
}

void WindowSlots::start_load(int j, int64_t layer) {
  const size_t s = static_cast<size_t>(j);
  if (state_[s] != State::kFree) {
    throw std::logic_error("window slot " + std::to_string(j) + " refilled with layer " + std::to_string(layer) +
                           " while layer " + std::to_string(layer_[s]) + " still holds it");
  }
  state_[s] = State::kLoading;
  layer_[s] = layer;
}

void WindowSlots::hold(int j) {
  if (state_[static_cast<size_t>(j)] == State::kFree) {
    throw std::logic_error("window slot " + std::to_string(j) + " waited on, never loaded");
  }
  state_[static_cast<size_t>(j)] = State::kHeld;
}

void WindowSlots::release(int j) {
  const size_t s = static_cast<size_t>(j);
  if (state_[s] != State::kHeld) throw std::logic_error("window slot " + std::to_string(j) + " released while not held");
  state_[s] = State::kFree;
  layer_[s] = -1;
}

void WindowSlots::reset() {
  state_.assign(state_.size(), State::kFree);
  layer_.assign(layer_.size(), -1);
}

StandInWeightStream::StandInWeightStream(int slots, int64_t slot_elements, torch::Dtype compute)
    : slots_(slots < 1 ? 1 : slots) {
  if (slots < 1) throw std::invalid_argument("a weight window needs at least one slot, got " + std::to_string(slots));
  for (int j = 0; j < slots; ++j) window_.push_back(torch::empty({slot_elements}, torch::TensorOptions().dtype(compute)));
}

StandInWeightStream::~StandInWeightStream() = default;

void StandInWeightStream::load(int j, int64_t layer, const std::vector<torch::Tensor>& views,
                               const std::vector<torch::Tensor>& masters) {
  loads_.locked([&] { slots_.start_load(j, layer); });
  ++loads_count_;
  loads_.enqueue([this, j, views, masters] {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < views.size(); ++i) views[i].copy_(masters[i]);
    loads_.locked([&] { slots_.loaded(j); });
  });
}

void StandInWeightStream::wait_loaded(int j) {
  loads_.locked([&] {
    if (slots_.state(j) == WindowSlots::State::kFree) slots_.hold(j);  // throws: never loaded
  });
  loads_.wait_until([&] { return slots_.state(j) != WindowSlots::State::kLoading; });
  loads_.locked([&] { slots_.hold(j); });
}

void StandInWeightStream::release(int j) {
  loads_.locked([&] { slots_.release(j); });
}

void StandInWeightStream::copy_out(const std::vector<torch::Tensor>& host, const std::vector<torch::Tensor>& device) {
  outs_.locked([&] { ++queued_copies_; });
  outs_.enqueue([this, host, device] {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < host.size(); ++i) host[i].copy_(device[i]);
    outs_.locked([&] { --queued_copies_; });
  });
}

void StandInWeightStream::after_copies(std::function<void()> job) { outs_.enqueue(std::move(job)); }

void StandInWeightStream::wait_copies_out() {
  outs_.wait_until([&] { return queued_copies_ == 0; });
}

void StandInWeightStream::wait_idle() { outs_.wait_idle(); }

int64_t StandInWeightStream::window_bytes() const {
  int64_t bytes = 0;
  for (const torch::Tensor& t : window_) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

void StandInWeightStream::reset() {
  loads_.drain();
  outs_.drain();
  loads_.locked([&] { slots_.reset(); });
  outs_.locked([&] { queued_copies_ = 0; });
}

}  // namespace pipetrain
