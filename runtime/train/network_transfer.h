// A boundary whose two stages run on different hosts (the stage map's `host:`): the activations
// and gradients cross it by c10d point to point in the pipeline's process group, on the same
// Transfer interface the rings implement (runtime/backends/backend.h). Every process runs the
// whole schedule; a stage of another host is a no-op there, so each side of a boundary meets its
// peer in the same order: the sending host's send(k) pairs with the receiving host's send(k), which
// receives. The executor calls each direction from its own serial node, so the receive waits
// there, not on a stage's thread.
//
//   NetworkTransfer t(pipeline, NetworkTransfer::Side::kReceiver, /*peer=*/0, tag, sizes, dtype, device, "host0->host1");
//   torch::Tensor x = t.send(k, {});   // micro-batch k's activation, from host 0, on `device`
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "runtime/backends/backend.h"
#include "runtime/dist/world.h"

namespace pipetrain {

class NetworkTransfer : public Transfer {
 public:
  enum class Side {
    kSender,    // this host holds the sending stage: send(k, t) sends t to the peer, returns nothing
    kReceiver,  // this host holds the receiving stage: send(k, ·) returns what the peer sent
    kNeither,   // neither stage is here: nothing moves
  };
  // `tag_base` + k pairs micro-batch k's messages; `sizes` and `dtype` are what crosses;
  // `to` is the receiving stage's device.
  NetworkTransfer(Group& pipeline, Side side, int peer, int tag_base, std::vector<int64_t> sizes, torch::Dtype dtype,
                  torch::Device to, std::string resource);
  torch::Tensor send(int k, const torch::Tensor& tensor) override;
  std::string resource() const override { return resource_; }

 private:
  Group& pipeline_;
  Side side_;
  int peer_;
  int tag_base_;
  std::vector<int64_t> sizes_;
  torch::Dtype dtype_;
  torch::Device to_;
  std::string resource_;
};

}  // namespace pipetrain
