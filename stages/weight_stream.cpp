#include "stages/weight_stream.h"

#include <stdexcept>

namespace pipetrain {

StandInWeightStream::StandInWeightStream(int slots, int64_t slot_elements, torch::Dtype compute)
    : state_(static_cast<size_t>(slots), SlotState::kFree), layer_in_slot_(static_cast<size_t>(slots), -1) {
  if (slots < 1) throw std::invalid_argument("a weight window needs at least one slot, got " + std::to_string(slots));
  for (int j = 0; j < slots; ++j) window_.push_back(torch::empty({slot_elements}, torch::TensorOptions().dtype(compute)));
  worker_ = std::thread([this] { work(); });
}

StandInWeightStream::~StandInWeightStream() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void StandInWeightStream::enqueue(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  changed_.notify_all();
}

// The copy engine: one job at a time, in order.
void StandInWeightStream::work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
      running_ = true;
    }
    try {
      job();
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (failure_.empty()) failure_ = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = false;
    }
    changed_.notify_all();
  }
}

void StandInWeightStream::check_failure() {
  if (!failure_.empty()) throw std::runtime_error("weight stream copy failed: " + failure_);
}

void StandInWeightStream::load(int j, int64_t layer, const std::vector<torch::Tensor>& views,
                               const std::vector<torch::Tensor>& masters) {
  const size_t s = static_cast<size_t>(j);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_[s] != SlotState::kFree) {
      throw std::logic_error("window slot " + std::to_string(j) + " refilled with layer " + std::to_string(layer) +
                             " while layer " + std::to_string(layer_in_slot_[s]) + " still holds it");
    }
    state_[s] = SlotState::kLoading;
    layer_in_slot_[s] = layer;
    ++loads_;
  }
  enqueue([this, s, views, masters] {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < views.size(); ++i) views[i].copy_(masters[i]);
    std::lock_guard<std::mutex> lock(mutex_);
    state_[s] = SlotState::kLoaded;
  });
}

void StandInWeightStream::wait_loaded(int j) {
  const size_t s = static_cast<size_t>(j);
  std::unique_lock<std::mutex> lock(mutex_);
  if (state_[s] == SlotState::kFree) throw std::logic_error("window slot " + std::to_string(j) + " waited on, never loaded");
  changed_.wait(lock, [&] { return state_[s] != SlotState::kLoading || !failure_.empty(); });
  check_failure();
  state_[s] = SlotState::kHeld;
}

void StandInWeightStream::release(int j) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t s = static_cast<size_t>(j);
  if (state_[s] != SlotState::kHeld) throw std::logic_error("window slot " + std::to_string(j) + " released while not held");
  state_[s] = SlotState::kFree;
  layer_in_slot_[s] = -1;
}

void StandInWeightStream::copy_out(const std::vector<torch::Tensor>& host, const std::vector<torch::Tensor>& device) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++queued_copies_;
  }
  enqueue([this, host, device] {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < host.size(); ++i) host[i].copy_(device[i]);
    std::lock_guard<std::mutex> lock(mutex_);
    --queued_copies_;
  });
}

void StandInWeightStream::wait_copies() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return queued_copies_ == 0 || !failure_.empty(); });
  check_failure();
}

int64_t StandInWeightStream::window_bytes() const {
  int64_t bytes = 0;
  for (const torch::Tensor& t : window_) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

void StandInWeightStream::reset() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return jobs_.empty() && !running_; });
  queued_copies_ = 0;
  for (size_t s = 0; s < state_.size(); ++s) {
    state_[s] = SlotState::kFree;
    layer_in_slot_[s] = -1;
  }
  failure_.clear();
}

int64_t StandInWeightStream::loads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return loads_;
}

}  // namespace pipetrain
