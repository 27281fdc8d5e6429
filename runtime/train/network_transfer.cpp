#include "runtime/train/network_transfer.h"

#include <torch/torch.h>

#include <stdexcept>

namespace pipetrain {

NetworkTransfer::NetworkTransfer(Group& pipeline, Side side, int peer, int tag_base, std::vector<int64_t> sizes,
                                 torch::Dtype dtype, torch::Device to, std::string resource)
    : pipeline_(pipeline), side_(side), peer_(peer), tag_base_(tag_base), sizes_(std::move(sizes)), dtype_(dtype), to_(to),
      resource_(std::move(resource)) {}

torch::Tensor NetworkTransfer::send(int k, const torch::Tensor& tensor) {
  switch (side_) {
    case Side::kSender: {
      const torch::Tensor host = tensor.detach().to(torch::kCPU, dtype_).contiguous();
      if (host.sizes().vec() != sizes_) {
        throw std::logic_error("micro-batch " + std::to_string(k) + " sends a tensor of shape " + c10::str(host.sizes()) +
                               " across " + resource_ + ", whose boundary carries " + c10::str(c10::IntArrayRef(sizes_)));
      }
      pipeline_.send(host, peer_, tag_base_ + k);
      return {};
    }
    case Side::kReceiver: {
      const torch::Tensor into = torch::empty(sizes_, torch::TensorOptions().dtype(dtype_));
      pipeline_.recv(into, peer_, tag_base_ + k);
      return into.to(to_);
    }
    case Side::kNeither:
      return {};
  }
  throw std::logic_error("unknown NetworkTransfer side");
}

}  // namespace pipetrain
