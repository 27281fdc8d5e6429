#include "runtime/dist/world.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "memory/errors.h"
#include "runtime/data/tokenizer.h"  // fnv1a, hex16

#if PIPETRAIN_WITH_GLOO
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace pipetrain {
namespace {

// An environment variable's integer value, or `fallback` when unset; InputError naming a bad one.
int env_int(const char* name, int fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < 0 || value > 1 << 20) {
    throw InputError(std::string("environment variable ") + name + "='" + text + "' is not a non-negative integer");
  }
  return static_cast<int>(value);
}

std::string env_text(const char* name) {
  const char* text = std::getenv(name);
  return text == nullptr ? "" : text;
}

}  // namespace

std::string WorldSpec::describe() const {
  std::string where = store_file.empty() ? master_addr + ":" + std::to_string(master_port) : "store file " + store_file;
  return "rank " + std::to_string(rank) + " of " + std::to_string(size) + " (" + where + ")";
}

WorldSpec world_from_environment(double timeout_seconds) {
  WorldSpec spec;
  spec.timeout_seconds = timeout_seconds;
  const bool any = std::getenv("WORLD_SIZE") != nullptr || std::getenv("RANK") != nullptr;
  if (!any) return spec;
  spec.size = env_int("WORLD_SIZE", -1);
  spec.rank = env_int("RANK", -1);
  if (spec.size < 1 || spec.rank < 0) {
    throw InputError("RANK and WORLD_SIZE go together (RANK='" + env_text("RANK") + "', WORLD_SIZE='" + env_text("WORLD_SIZE") +
                     "'): set both, as torchrun does, or neither for one process");
  }
  if (spec.rank >= spec.size) {
    throw InputError("RANK=" + std::to_string(spec.rank) + " is not below WORLD_SIZE=" + std::to_string(spec.size) +
                     " (ranks are 0.." + std::to_string(spec.size - 1) + ")");
  }
  spec.store_file = env_text("PIPETRAIN_STORE_FILE");
  spec.master_addr = env_text("MASTER_ADDR");
  spec.master_port = env_int("MASTER_PORT", 0);
  if (spec.size > 1 && spec.store_file.empty() && (spec.master_addr.empty() || spec.master_port == 0)) {
    throw InputError("WORLD_SIZE=" + std::to_string(spec.size) + " needs a rendezvous: MASTER_ADDR and MASTER_PORT (rank 0 "
                     "listens there; got MASTER_ADDR='" + spec.master_addr + "', MASTER_PORT='" + env_text("MASTER_PORT") +
                     "'), or PIPETRAIN_STORE_FILE (a file every rank reaches)");
  }
  spec.local_size = env_int("LOCAL_WORLD_SIZE", 1);
  if (spec.local_size < 1 || spec.local_size > spec.size) {
    throw InputError("LOCAL_WORLD_SIZE=" + std::to_string(spec.local_size) + " must be in [1, WORLD_SIZE=" + std::to_string(spec.size) +
                     "] (the ranks on this host)");
  }
  if (spec.master_port > 65535) throw InputError("MASTER_PORT=" + std::to_string(spec.master_port) + " is not a TCP port");
  if (timeout_seconds <= 0.0) throw InputError("the ranks' timeout must be positive, got " + std::to_string(timeout_seconds) + " s");
  return spec;
}

bool Group::any(bool flag) {
  for (int64_t f : all_gather(flag ? 1 : 0)) {
    if (f != 0) return true;
  }
  return false;
}

void World::agree(const std::string& what, const std::string& text) {
  const uint64_t mine = fnv1a(text.data(), text.size());
  const std::vector<int64_t> all = all_->all_gather(static_cast<int64_t>(mine));
  std::string differ;
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r) + " (" + hex16(static_cast<uint64_t>(all[r])) + ")";
  }
  if (!differ.empty()) {
    throw DistError("the ranks do not hold the same " + what + ": rank 0 has fingerprint " + hex16(static_cast<uint64_t>(all[0])) +
                    ", rank(s) " + differ + " another; start every rank with the same command, config and files");
  }
}

struct PendingSum::Impl {
#if PIPETRAIN_WITH_GLOO
  c10::intrusive_ptr<c10d::Work> work;
#endif
  std::string where;
  double timeout_seconds = 0.0;
};

PendingSum::PendingSum() = default;
PendingSum::PendingSum(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

#if PIPETRAIN_WITH_GLOO
namespace {

std::chrono::milliseconds millis(double seconds) { return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1e3)); }

// c10d's error, as what this rank could not do and what usually causes it.
// c10d's reason without the C++ backtrace c10::Error appends.
std::string reason(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

[[noreturn]] void lost(const std::string& where, const std::string& doing, const std::exception& e, double timeout_seconds) {
  char timeout[32];
  std::snprintf(timeout, sizeof(timeout), "%g s", timeout_seconds);
  throw DistError(where + ": " + doing + " failed: another rank died, hung past the " + timeout +
                  " timeout (--dist-timeout-s), or cannot be reached (c10d: " + reason(e) + ")");
}

class GlooGroup : public Group {
 public:
  GlooGroup(c10::intrusive_ptr<c10d::Store> store, int rank, int size, const WorldSpec& spec, const std::string& name)
      : rank_(rank), size_(size), spec_(spec), where_(spec.describe() + (name.empty() ? "" : ", group " + name)) {
    auto options = c10d::ProcessGroupGloo::Options::create(millis(spec.timeout_seconds));
    const std::string host = spec.master_addr.empty() || spec.master_addr == "localhost" ? "127.0.0.1" : "";
    try {
      // Loopback when every rank is on this host; else the interface the host name resolves to.
      options->devices.push_back(host.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                              : c10d::ProcessGroupGloo::createDeviceForHostname(host));
      options->threads = 2;
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
    } catch (const std::exception& e) {
      lost(where_, "the rendezvous (waiting for all " + std::to_string(size) + " ranks)", e, spec.timeout_seconds);
    }
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  PendingSum sum_async(const torch::Tensor& flat) override {
    auto impl = std::make_shared<PendingSum::Impl>();
    impl->where = where_;
    impl->timeout_seconds = spec_.timeout_seconds;
    std::vector<at::Tensor> tensors{flat};
    try {
      impl->work = group_->allreduce(tensors);
    } catch (const std::exception& e) {
      lost(where_, "a sum", e, spec_.timeout_seconds);
    }
    return PendingSum(impl);
  }
  void send(const torch::Tensor& tensor, int to, int tag) override {
    std::vector<at::Tensor> tensors{tensor.contiguous()};
    try {
      group_->send(tensors, to, tag)->wait(millis(spec_.timeout_seconds));
    } catch (const std::exception& e) {
      lost(where_, "a send to rank " + std::to_string(to), e, spec_.timeout_seconds);
    }
  }
  void recv(const torch::Tensor& into, int from, int tag) override {
    std::vector<at::Tensor> tensors{into};
    try {
      group_->recv(tensors, from, tag)->wait(millis(spec_.timeout_seconds));
    } catch (const std::exception& e) {
      lost(where_, "a receive from rank " + std::to_string(from), e, spec_.timeout_seconds);
    }
  }
  std::vector<int64_t> all_gather(int64_t value) override {
    std::vector<at::Tensor> in{torch::full({1}, value, torch::kInt64)};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < size_; ++r) out[0].push_back(torch::zeros({1}, torch::kInt64));
    try {
      group_->allgather(out, in)->wait(millis(spec_.timeout_seconds));
    } catch (const std::exception& e) {
      lost(where_, "an all-gather", e, spec_.timeout_seconds);
    }
    std::vector<int64_t> values;
    for (const at::Tensor& t : out[0]) values.push_back(t.item<int64_t>());
    return values;
  }

 private:
  int rank_;
  int size_;
  WorldSpec spec_;
  std::string where_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};

class GlooWorld : public World {
 public:
  explicit GlooWorld(const WorldSpec& spec) : World(spec) {
    try {
      if (!spec.store_file.empty()) {
        store_ = c10::make_intrusive<c10d::FileStore>(spec.store_file, spec.size);
      } else {
        c10d::TCPStoreOptions options;
        options.port = static_cast<uint16_t>(spec.master_port);
        options.isServer = spec.rank == 0;
        options.numWorkers = static_cast<size_t>(spec.size);
        options.waitWorkers = true;
        options.timeout = millis(spec.timeout_seconds);
        store_ = c10::make_intrusive<c10d::TCPStore>(spec.master_addr, options);
      }
      store_->setTimeout(millis(spec.timeout_seconds));
    } catch (const std::exception& e) {
      lost(spec.describe(), "the rendezvous (waiting for all " + std::to_string(spec.size) + " ranks)", e, spec.timeout_seconds);
    }
    all_ = std::make_unique<GlooGroup>(c10::make_intrusive<c10d::PrefixStore>("all", store_), spec.rank, spec.size, spec, "");
  }
  std::unique_ptr<Group> group(const std::vector<int>& ranks, const std::string& name) override {
    int mine = -1;
    for (size_t i = 0; i < ranks.size(); ++i) {
      if (ranks[i] == rank()) mine = static_cast<int>(i);
    }
    if (mine < 0) throw std::logic_error("rank " + std::to_string(rank()) + " is not in group " + name);
    return std::make_unique<GlooGroup>(c10::make_intrusive<c10d::PrefixStore>(name, store_), mine,
                                       static_cast<int>(ranks.size()), spec_, name);
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
};

}  // namespace

void PendingSum::wait() {
  if (!impl_) return;
  const std::shared_ptr<Impl> impl = std::move(impl_);
  try {
    impl->work->wait();
  } catch (const std::exception& e) {
    lost(impl->where, "a sum", e, impl->timeout_seconds);
  }
}

std::unique_ptr<World> World::connect(const WorldSpec& spec) { return std::make_unique<GlooWorld>(spec); }

#else  // this build found no Gloo headers

void PendingSum::wait() {}

std::unique_ptr<World> World::connect(const WorldSpec& spec) {
  throw InputError(spec.describe() + ": this build of pipetrain has no c10d Gloo (its headers, Debian's libgloo-dev, were not "
                   "found when it was built): rebuild with them to run several processes");
}

#endif

}  // namespace pipetrain
