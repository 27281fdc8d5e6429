#include "runtime/data/byte_corpus.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "memory/errors.h"

namespace pipetrain {
namespace {

// A text corpus has no NUL bytes; one in the first 64 KiB means the file is binary.
constexpr int64_t kBinaryProbeBytes = 64 * 1024;

std::string file_error(size_t index, const std::string& path, const std::string& what) {
  return "data.files[" + std::to_string(index) + "] '" + path + "' " + what;
}

}  // namespace

ByteCorpus::ByteCorpus(const std::vector<std::string>& files, int64_t seq_len, double val_fraction, uint64_t seed)
    : seq_len_(seq_len), seed_(seed) {
  if (files.empty()) throw InputError("data.files is empty; give at least one text file");
  try {
    for (size_t i = 0; i < files.size(); ++i) {
      const std::string& path = files[i];
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw InputError(file_error(i, path, std::string("cannot be opened: ") + std::strerror(errno)));
      struct stat info {};
      if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
        ::close(fd);
        throw InputError(file_error(i, path, "is not a regular file"));
      }
      if (info.st_size == 0) {
        ::close(fd);
        throw InputError(file_error(i, path, "is empty"));
      }
      void* addr = ::mmap(nullptr, static_cast<size_t>(info.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
      ::close(fd);
      if (addr == MAP_FAILED) throw InputError(file_error(i, path, std::string("cannot be mapped: ") + std::strerror(errno)));
      mappings_.push_back({path, static_cast<const unsigned char*>(addr), static_cast<int64_t>(info.st_size)});
      const Mapping& m = mappings_.back();
      const int64_t probe = std::min<int64_t>(m.size, kBinaryProbeBytes);
      const void* nul = std::memchr(m.bytes, 0, static_cast<size_t>(probe));
      if (nul != nullptr) {
        const auto offset = static_cast<const unsigned char*>(nul) - m.bytes;
        throw InputError(file_error(i, path, "looks binary (a NUL byte at offset " + std::to_string(offset) +
                                                 "); pipetrain trains on text"));
      }
      total_bytes_ += m.size;

      // Hold out the tail of every file; windows never straddle the boundary or a file's end.
      const int64_t val_bytes = static_cast<int64_t>(static_cast<double>(m.size) * val_fraction);
      const int64_t train_bytes = m.size - val_bytes;
      for (int64_t off = 0; off + seq_len + 1 <= train_bytes; off += seq_len) {
        train_windows_.push_back({static_cast<int32_t>(i), off});
      }
      for (int64_t off = train_bytes; off + seq_len + 1 <= m.size; off += seq_len) {
        val_windows_.push_back({static_cast<int32_t>(i), off});
      }
    }
  } catch (...) {
    for (const Mapping& m : mappings_) ::munmap(const_cast<unsigned char*>(m.bytes), static_cast<size_t>(m.size));
    throw;
  }
  if (train_windows_.empty() || val_windows_.empty()) {
    for (const Mapping& m : mappings_) ::munmap(const_cast<unsigned char*>(m.bytes), static_cast<size_t>(m.size));
    throw InputError("data.files hold " + std::to_string(total_bytes_) + " bytes: too few for one training and one " +
                     "validation window of seq_len + 1 = " + std::to_string(seq_len + 1) +
                     " bytes (training windows: " + std::to_string(train_windows_.size()) +
                     ", validation windows: " + std::to_string(val_windows_.size()) + ")");
  }
  // Validation reads a fixed sample spread over every file's held-out tail (a few batches taken in
  // file order would all come from one file, e.g. one licence's all-caps disclaimer).
  val_order_ = shuffled_indices(val_windows_.size(), seed_ * 1000003ULL + 0x5eedULL * 7919ULL);
  shuffle_epoch();
}

ByteCorpus::~ByteCorpus() {
  for (const Mapping& m : mappings_) ::munmap(const_cast<unsigned char*>(m.bytes), static_cast<size_t>(m.size));
}

std::vector<int64_t> ByteCorpus::shuffled_indices(size_t n, uint64_t seed) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  // mt19937_64 is specified bit for bit by the standard; the modulo draw below is too (unlike
  // std::uniform_int_distribution), so the order is the same with every standard library.
  std::mt19937_64 rng(seed);
  for (size_t i = n; i > 1; --i) {
    const size_t j = static_cast<size_t>(rng() % i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

void ByteCorpus::shuffle_epoch() {
  order_ = shuffled_indices(train_windows_.size(), seed_ * 1000003ULL + static_cast<uint64_t>(position_.epoch));
}

void ByteCorpus::append_window(const Window& window, std::vector<int64_t>& out) const {
  const unsigned char* bytes = mappings_[static_cast<size_t>(window.file)].bytes + window.offset;
  for (int64_t k = 0; k <= seq_len_; ++k) out.push_back(bytes[k]);
}

std::vector<int64_t> ByteCorpus::next_train_batch(int64_t rows) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(rows * (seq_len_ + 1)));
  for (int64_t r = 0; r < rows; ++r) {
    if (position_.cursor >= num_train_windows()) {
      ++position_.epoch;
      position_.cursor = 0;
      shuffle_epoch();
    }
    append_window(train_windows_[static_cast<size_t>(order_[static_cast<size_t>(position_.cursor++)])], out);
  }
  return out;
}

std::vector<int64_t> ByteCorpus::val_batch(int64_t index, int64_t rows) const {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(rows * (seq_len_ + 1)));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t k = (index * rows + r) % num_val_windows();
    append_window(val_windows_[static_cast<size_t>(val_order_[static_cast<size_t>(k)])], out);
  }
  return out;
}

void ByteCorpus::set_position(const DataPosition& position) {
  if (position.epoch < 0 || position.cursor < 0 || position.cursor > num_train_windows()) {
    throw InputError("data position (epoch " + std::to_string(position.epoch) + ", window " +
                     std::to_string(position.cursor) + ") is outside this corpus of " +
                     std::to_string(num_train_windows()) + " training windows");
  }
  const bool reshuffle = position.epoch != position_.epoch;
  position_ = position;
  if (reshuffle) shuffle_epoch();
}

}  // namespace pipetrain
