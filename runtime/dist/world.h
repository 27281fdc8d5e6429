// The processes of one run, and what they do together: c10d (LibTorch's distributed engine, the one
// `torch.distributed` users trust) with its Gloo backend over TCP. This is the one room that
// includes c10d; the trainers see plain groups.
//
// Every process is started with the same command and told where it stands by torchrun's variables:
// RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (rank 0 listens there), or by PIPETRAIN_STORE_FILE,
// a file every rank can reach, instead of the address. Nothing set: one process, no c10d at all.
// Every collective waits at most `timeout_seconds`: a rank that died makes the others fail at their
// next collective (Gloo sees the connection close), one that hangs makes them fail at the timeout.
//
//   WorldSpec spec = world_from_environment(1800.0);   // InputError naming a bad variable
//   std::unique_ptr<World> world = World::connect(spec); // waits for every rank (the timeout)
//   world->agree("the config and plan", to_yaml(config));  // DistError naming the ranks that differ
//   std::unique_ptr<Group> replicas = world->group({0, 1}, "replicas");
//   PendingSum sum = replicas->sum_async(flat_gradients);  ...  sum.wait();
#pragma once

#include <torch/types.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace pipetrain {

// Another rank died, hung past the timeout, or disagrees: this rank cannot go on.
class DistError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct WorldSpec {
  int rank = 0;
  int size = 1;
  std::string master_addr;  // TCP rendezvous: rank 0 serves the store on master_port
  int master_port = 0;
  std::string store_file;   // or a file store every rank reaches (a shared filesystem)
  double timeout_seconds = 1800.0;  // torch.distributed's default: an exchange may wait out a step or a save
  int local_size = 1;       // LOCAL_WORLD_SIZE: ranks on this host, which share its RAM
  bool distributed() const { return size > 1; }
  // "rank 1 of 2 (127.0.0.1:29500)"
  std::string describe() const;
};

// From RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT or PIPETRAIN_STORE_FILE, and LOCAL_WORLD_SIZE
// (1 when unset); a single process when
// WORLD_SIZE and RANK are unset. InputError naming the variable and its value for a bad one.
WorldSpec world_from_environment(double timeout_seconds);

// A sum in flight; wait() rethrows a failure as DistError.
class PendingSum {
 public:
  struct Impl;
  PendingSum();
  explicit PendingSum(std::shared_ptr<Impl> impl);
  void wait();

 private:
  std::shared_ptr<Impl> impl_;
};

// Ranks that reduce or exchange together; ranks are numbered inside the group.
class Group {
 public:
  virtual ~Group() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Sums a contiguous CPU tensor over the group, in place, in the background. Every rank of the
  // group starts its sums in the same order.
  virtual PendingSum sum_async(const torch::Tensor& flat) = 0;
  void sum(const torch::Tensor& flat) { sum_async(flat).wait(); }
  // Whether any rank of the group says `flag` (every rank learns it): a stop that all take together.
  bool any(bool flag);
  // Point to point: `tensor` to group rank `to` / into `into` from `from`; a tag pairs them.
  virtual void send(const torch::Tensor& tensor, int to, int tag) = 0;
  virtual void recv(const torch::Tensor& into, int from, int tag) = 0;
  // Every rank's `value`, in rank order.
  virtual std::vector<int64_t> all_gather(int64_t value) = 0;
};

class World {
 public:
  // Waits until every rank has joined (at most spec.timeout_seconds; DistError naming who is
  // missing when they have not). InputError when this build has no Gloo and spec is distributed.
  static std::unique_ptr<World> connect(const WorldSpec& spec);
  virtual ~World() = default;
  const WorldSpec& spec() const { return spec_; }
  int rank() const { return spec_.rank; }
  int size() const { return spec_.size; }
  Group& all() { return *all_; }
  // The group of these world ranks (ascending; this rank among them). Every rank of the world
  // makes its groups in the same order with the same names.
  virtual std::unique_ptr<Group> group(const std::vector<int>& ranks, const std::string& name) = 0;
  // Every rank states `text` (what it loaded); DistError naming `what`, and the ranks whose
  // fingerprint differs from rank 0's, when they do not all hold the same.
  void agree(const std::string& what, const std::string& text);

 protected:
  explicit World(WorldSpec spec) : spec_(std::move(spec)) {}
  WorldSpec spec_;
  std::unique_ptr<Group> all_;
};

}  // namespace pipetrain
