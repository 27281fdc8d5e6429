// Data parallelism's one exchange: each stage's gradients summed over the replicas of that stage
// (the same layers in every copy of the pipeline), started as soon as the stage's last backward of
// the step ends, so the sums of the later stages overlap the backward of the earlier ones.
//
// Every replica must start its sums in the same order (c10d pairs them by order): stages start
// from the last to the first, each once it and every stage after it are ready, whatever order the
// stages' threads report in.
//
//   ReplicaSums sums(replica_group, here);   // here[s]: this process computes stage s
//   ...in the executor's callbacks: sums.stage_ready(s, stage.gradients());   // after its last backward
//   sums.finish();   // waits, and leaves every gradient as the replicas' mean
#pragma once

#include <torch/types.h>

#include <mutex>
#include <vector>

#include "runtime/dist/world.h"

namespace pipetrain {

class ReplicaSums {
 public:
  // here[s]: this process computes stage s (a stage of another host has nothing to sum here).
  ReplicaSums(Group& replicas, std::vector<bool> here);
  // Stage s's gradients are final for this step (on its thread). Starts every sum now due.
  void stage_ready(int s, std::vector<torch::Tensor> grads);
  // Waits for every stage's sum (a stage not reported yet is started first, in order) and writes
  // each gradient back as the sum over the replicas divided by their count. DistError when a
  // replica failed.
  void finish(const std::vector<std::vector<torch::Tensor>>& all_grads);
  // A step that failed: nothing pending is written back (the next step starts over).
  void reset();

 private:
  struct Pending {
    std::vector<torch::Tensor> grads;
    torch::Tensor flat;  // float32, on the host: what c10d sums
    PendingSum sum;
    bool ready = false;
    bool started = false;
  };
  void clear();  // under mutex_: every stage of this process pending again
  void start_due();  // under mutex_

  Group& replicas_;
  std::vector<bool> here_;
  std::mutex mutex_;
  std::vector<Pending> stages_;
  int next_ = 0;  // stages start in the order num_stages-1 .. 0: next_ counts those started
};

}  // namespace pipetrain
