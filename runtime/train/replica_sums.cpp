#include "runtime/train/replica_sums.h"

#include <torch/torch.h>

namespace pipetrain {
namespace {

// One float32 buffer on the host of every gradient, in order: one sum per stage, whatever the
// stage's dtypes and device.
torch::Tensor flatten(const std::vector<torch::Tensor>& grads) {
  std::vector<torch::Tensor> flat;
  flat.reserve(grads.size());
  for (const torch::Tensor& g : grads) flat.push_back(g.detach().to(torch::kCPU, torch::kFloat32).reshape({-1}));
  return flat.empty() ? torch::zeros({0}, torch::kFloat32) : torch::cat(flat);
}

}  // namespace

ReplicaSums::ReplicaSums(Group& replicas, std::vector<bool> here)
    : replicas_(replicas), here_(std::move(here)), stages_(here_.size()) {
  clear();
}

void ReplicaSums::clear() {
  for (size_t s = 0; s < stages_.size(); ++s) {
    stages_[s] = Pending();
    stages_[s].ready = !here_[s];  // nothing to sum: never waited for
  }
  next_ = 0;
}

void ReplicaSums::stage_ready(int s, std::vector<torch::Tensor> grads) {
  std::lock_guard<std::mutex> lock(mutex_);
  Pending& p = stages_[static_cast<size_t>(s)];
  p.grads = std::move(grads);
  p.ready = true;
  start_due();
}

void ReplicaSums::start_due() {
  const int num = static_cast<int>(stages_.size());
  while (next_ < num) {
    Pending& p = stages_[static_cast<size_t>(num - 1 - next_)];
    if (!p.ready) return;
    if (here_[static_cast<size_t>(num - 1 - next_)]) {
      p.flat = flatten(p.grads);
      p.sum = replicas_.sum_async(p.flat);
    }
    p.started = true;
    ++next_;
  }
}

void ReplicaSums::finish(const std::vector<std::vector<torch::Tensor>>& all_grads) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t s = 0; s < stages_.size(); ++s) {
      if (!stages_[s].ready) {  // (a stage of this process whose backward never reported)
        stages_[s].grads = all_grads[s];
        stages_[s].ready = true;
      }
    }
    start_due();
  }
  const double replicas = static_cast<double>(replicas_.size());
  torch::NoGradGuard no_grad;
  for (Pending& p : stages_) {
    if (!p.flat.defined()) continue;  // a stage of another host
    p.sum.wait();
    p.flat.div_(replicas);
    int64_t offset = 0;
    for (torch::Tensor& g : p.grads) {
      const int64_t n = g.numel();
      g.copy_(p.flat.narrow(0, offset, n).view(g.sizes()));
      offset += n;
    }
  }
  reset();
}

void ReplicaSums::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  clear();
}

}  // namespace pipetrain
