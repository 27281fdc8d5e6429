#include "runtime/data/corpus.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <string_view>
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

struct Mapped {
  void* base = nullptr;
  size_t size = 0;
};

// Maps a whole file read-only; `error` words what is wrong with it.
Mapped map_file(const std::string& path, const std::function<std::string(const std::string&)>& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(error(std::string("cannot be opened: ") + std::strerror(errno)));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    throw InputError(error("is not a regular file"));
  }
  if (info.st_size == 0) {
    ::close(fd);
    throw InputError(error("is empty"));
  }
  void* addr = ::mmap(nullptr, static_cast<size_t>(info.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (addr == MAP_FAILED) throw InputError(error(std::string("cannot be mapped: ") + std::strerror(errno)));
  return {addr, static_cast<size_t>(info.st_size)};
}

// The token cache: this header, then `count` int32 ids.
struct CacheHeader {
  char magic[8];
  uint64_t source_size;
  uint64_t source_hash;
  uint64_t tokenizer_hash;
  uint64_t count;
  uint64_t reserved;
};
static_assert(sizeof(CacheHeader) == 48, "the cache header is 48 bytes");
constexpr char kCacheMagic[8] = {'P', 'T', 'T', 'O', 'K', 'E', 'N', '1'};
// Text is encoded in chunks of about this many bytes, cut after a newline.
constexpr size_t kEncodeChunk = size_t{1} << 20;

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// A folder the system's packages own (Debian's licence texts live in /usr/share): nothing of ours
// is written there, even by root.
bool is_system_folder(const std::string& absolute) {
  for (const char* prefix : {"/usr/", "/etc/", "/lib/", "/lib64/", "/bin/", "/sbin/", "/opt/", "/var/lib/", "/boot/"}) {
    if (absolute.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

// Where a cache of `source` named `suffix` may live: beside it (unless that is a system folder),
// then under the user's cache directory.
std::vector<std::string> cache_candidates(const std::string& source, const std::string& suffix) {
  char* resolved = ::realpath(source.c_str(), nullptr);
  const std::string absolute = resolved != nullptr ? resolved : source;
  std::free(resolved);
  std::vector<std::string> out;
  if (!is_system_folder(absolute)) out.push_back(source + suffix);
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string base = xdg != nullptr && *xdg != '\0' ? xdg : home != nullptr ? std::string(home) + "/.cache" : "";
  if (!base.empty()) {
    const auto slash = absolute.find_last_of('/');
    out.push_back(base + "/pipetrain/tokens/" + hex16(fnv1a(absolute.data(), absolute.size())) + "-" +
                  absolute.substr(slash == std::string::npos ? 0 : slash + 1) + suffix);
  }
  return out;
}

bool path_is_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

std::string quoted_list(const std::vector<std::string>& paths) {
  std::string out;
  for (const std::string& p : paths) out += (out.empty() ? "'" : ", '") + p + "'";
  return out.empty() ? "(no place: set HOME)" : out;
}

bool cache_matches(const std::string& path, const CacheHeader& expected) {
  std::ifstream in(path, std::ios::binary);
  CacheHeader h{};
  if (!in.read(reinterpret_cast<char*>(&h), sizeof(h))) return false;
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(in.tellg());
  return std::memcmp(h.magic, kCacheMagic, 8) == 0 && h.source_size == expected.source_size &&
         h.source_hash == expected.source_hash && h.tokenizer_hash == expected.tokenizer_hash &&
         size == sizeof(CacheHeader) + 4 * h.count;
}

void make_parents(const std::string& dir) {
  for (size_t at = 1; at != std::string::npos; at = dir.find('/', at + 1)) ::mkdir(dir.substr(0, at).c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
}

// Encodes the text into `path` (written beside it and renamed into place); false when the folder
// cannot be written.
bool write_cache(const std::string& path, const unsigned char* text, size_t size, const Tokenizer& tokenizer, CacheHeader header) {
  make_parents(directory_of(path));
  const std::string partial = path + ".partial-" + std::to_string(::getpid());
  std::ofstream out(partial, std::ios::binary | std::ios::trunc);
  if (!out) return false;
  out.write(reinterpret_cast<const char*>(&header), sizeof(header));
  uint64_t count = 0;
  for (size_t at = 0; at < size;) {
    size_t end = std::min(size, at + kEncodeChunk);
    if (end < size) {
      const void* newline = std::memchr(text + end, '\n', size - end);
      end = newline != nullptr ? static_cast<size_t>(static_cast<const unsigned char*>(newline) - text) + 1 : size;
    }
    const std::vector<int32_t> ids = tokenizer.encode(std::string_view(reinterpret_cast<const char*>(text + at), end - at));
    out.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * sizeof(int32_t)));
    count += ids.size();
    at = end;
  }
  header.count = count;
  out.seekp(0);
  out.write(reinterpret_cast<const char*>(&header), sizeof(header));
  out.close();
  if (!out || std::rename(partial.c_str(), path.c_str()) != 0) {
    ::unlink(partial.c_str());
    return false;
  }
  return true;
}

}  // namespace

Tokenizer corpus_tokenizer(const std::string& value, const std::vector<std::string>& files) {
  const std::optional<int64_t> pieces = auto_tokenizer_pieces(value);
  if (!pieces) return Tokenizer::named(value);
  if (files.empty()) throw InputError("data.tokenizer '" + value + "' trains on data.files, which is empty");
  // The model's name: N and every file's size and contents.
  uint64_t key = fnv1a(&*pieces, sizeof(*pieces));
  for (size_t i = 0; i < files.size(); ++i) {
    const Mapped text = map_file(files[i], [&](const std::string& what) { return file_error(i, files[i], what); });
    const uint64_t size = text.size;
    key = fnv1a(&size, sizeof(size), fnv1a(text.base, text.size, key));
    ::munmap(text.base, text.size);
  }
  const std::vector<std::string> candidates =
      cache_candidates(files.front(), ".auto-" + std::to_string(*pieces) + "-" + hex16(key) + ".model");
  for (const std::string& c : candidates) {
    if (path_is_file(c)) return Tokenizer::load(c);
  }
  for (const std::string& c : candidates) {
    make_parents(directory_of(c));
    // SentencePiece writes NAME.model and NAME.vocab; the model is renamed into place when whole.
    const std::string prefix = c.substr(0, c.size() - 6) + ".partial-" + std::to_string(::getpid());
    if (!std::ofstream(prefix + ".model").good()) continue;
    std::fprintf(stderr, "training the data.tokenizer model (%s, %zu file(s); once: kept as %s)...\n", value.c_str(), files.size(),
                 c.c_str());
    TokenizerTraining training;
    training.files = files;
    training.vocab_size = *pieces;
    training.out = prefix + ".model";
    training.exact_size = true;
    try {
      train_tokenizer(training);
    } catch (const InputError& e) {
      ::unlink((prefix + ".model").c_str());
      ::unlink((prefix + ".vocab").c_str());
      throw InputError("data.tokenizer '" + value + "': " + e.what() + " (ask for fewer pieces, or give more text)");
    }
    ::unlink((prefix + ".vocab").c_str());
    if (std::rename((prefix + ".model").c_str(), c.c_str()) != 0) {
      ::unlink((prefix + ".model").c_str());
      continue;
    }
    return Tokenizer::load(c);
  }
  throw InputError("data.tokenizer '" + value + "': the trained model has no place: none of " + quoted_list(candidates) +
                   " can be written");
}

Corpus::Corpus(const std::vector<std::string>& files, int64_t seq_len, double val_fraction, uint64_t seed,
               const Tokenizer& tokenizer)
    : seq_len_(seq_len),
      seed_(seed),
      vocab_size_(tokenizer.vocab_size()),
      tokenizer_(tokenizer.describe()),
      tokenizer_fingerprint_(tokenizer.fingerprint()) {
  if (files.empty()) throw InputError("data.files is empty; give at least one text file");
  const auto release = [this] {
    for (const Mapping& m : mappings_) ::munmap(m.base, m.mapped);
  };
  try {
    for (size_t i = 0; i < files.size(); ++i) {
      const std::string& path = files[i];
      const auto error = [&](const std::string& what) { return file_error(i, path, what); };
      const Mapped text = map_file(path, error);
      const auto* bytes = static_cast<const unsigned char*>(text.base);
      const int64_t probe = std::min<int64_t>(static_cast<int64_t>(text.size), kBinaryProbeBytes);
      const void* nul = std::memchr(bytes, 0, static_cast<size_t>(probe));
      if (nul != nullptr) {
        ::munmap(text.base, text.size);
        const auto offset = static_cast<const unsigned char*>(nul) - bytes;
        throw InputError(error("looks binary (a NUL byte at offset " + std::to_string(offset) + "); pipetrain trains on text"));
      }
      total_bytes_ += static_cast<int64_t>(text.size);
      // Every file's size and contents, in order: what a resume compares (runtime/train/resume.h).
      const uint64_t content = fnv1a(bytes, text.size);
      const uint64_t size = text.size;
      fingerprint_ = fnv1a(&size, sizeof(size), fnv1a(&content, sizeof(content), fingerprint_));
      if (tokenizer.is_bytes()) {
        mappings_.push_back({path, text.base, text.size, bytes, nullptr, static_cast<int64_t>(text.size)});
        token_sources_.push_back(path);
      } else {
        CacheHeader header{};
        std::memcpy(header.magic, kCacheMagic, 8);
        header.source_size = text.size;
        header.source_hash = content;
        header.tokenizer_hash = tokenizer.fingerprint();
        std::string cache;
        const std::vector<std::string> candidates = cache_candidates(path, ".tok-" + hex16(tokenizer.fingerprint()));
        for (const std::string& c : candidates) {
          if (cache_matches(c, header)) {
            cache = c;
            break;
          }
        }
        for (size_t k = 0; cache.empty() && k < candidates.size(); ++k) {
          if (write_cache(candidates[k], bytes, text.size, tokenizer, header)) cache = candidates[k];
        }
        ::munmap(text.base, text.size);
        if (cache.empty()) {
          throw InputError(error("cannot be tokenized into a cache: none of " + quoted_list(candidates) + " can be written"));
        }
        const Mapped mapped = map_file(cache, [&](const std::string& what) { return "token cache '" + cache + "' " + what; });
        const auto* ids = reinterpret_cast<const int32_t*>(static_cast<const char*>(mapped.base) + sizeof(CacheHeader));
        mappings_.push_back({cache, mapped.base, mapped.size, nullptr, ids,
                             static_cast<int64_t>((mapped.size - sizeof(CacheHeader)) / sizeof(int32_t))});
        token_sources_.push_back(cache);
      }
      const Mapping& m = mappings_.back();
      total_tokens_ += m.tokens;

      // Hold out the tail of every file; windows never straddle the boundary or a file's end.
      const int64_t val_tokens = static_cast<int64_t>(static_cast<double>(m.tokens) * val_fraction);
      const int64_t train_tokens = m.tokens - val_tokens;
      for (int64_t off = 0; off + seq_len + 1 <= train_tokens; off += seq_len) {
        train_windows_.push_back({static_cast<int32_t>(i), off});
      }
      for (int64_t off = train_tokens; off + seq_len + 1 <= m.tokens; off += seq_len) {
        val_windows_.push_back({static_cast<int32_t>(i), off});
      }
    }
  } catch (...) {
    release();
    throw;
  }
  if (train_windows_.empty() || val_windows_.empty()) {
    release();
    throw InputError("data.files hold " + std::to_string(total_tokens_) + " tokens (" + tokenizer_ +
                     "): too few for one training and one validation window of seq_len + 1 = " + std::to_string(seq_len + 1) +
                     " tokens (training windows: " + std::to_string(train_windows_.size()) +
                     ", validation windows: " + std::to_string(val_windows_.size()) + ")");
  }
  // Validation reads a fixed sample spread over every file's held-out tail (a few batches taken in
  // file order would all come from one file, e.g. one licence's all-caps disclaimer).
  val_order_ = shuffled_indices(val_windows_.size(), seed_ * 1000003ULL + 0x5eedULL * 7919ULL);
  shuffle_epoch();
}

Corpus::~Corpus() {
  for (const Mapping& m : mappings_) ::munmap(m.base, m.mapped);
}

std::vector<int64_t> Corpus::shuffled_indices(size_t n, uint64_t seed) {
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

void Corpus::shuffle_epoch() {
  order_ = shuffled_indices(train_windows_.size(), seed_ * 1000003ULL + static_cast<uint64_t>(position_.epoch));
}

void Corpus::append_window(const Window& window, std::vector<int64_t>& out) const {
  const Mapping& m = mappings_[static_cast<size_t>(window.file)];
  if (m.bytes != nullptr) {
    for (int64_t k = 0; k <= seq_len_; ++k) out.push_back(m.bytes[window.offset + k]);
    return;
  }
  for (int64_t k = 0; k <= seq_len_; ++k) {
    const int32_t id = m.ids[window.offset + k];
    // A cache damaged after it was checked must not index past the embedding.
    if (id < 0 || id >= vocab_size_) {
      throw InputError("token cache '" + m.path + "' holds id " + std::to_string(id) + " at token " +
                       std::to_string(window.offset + k) + ", outside the vocabulary of " + std::to_string(vocab_size_) +
                       " (delete the file: it is made again)");
    }
    out.push_back(id);
  }
}

std::vector<int64_t> Corpus::next_train_batch(int64_t rows) {
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

std::vector<int64_t> Corpus::val_batch(int64_t index, int64_t rows) const {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(rows * (seq_len_ + 1)));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t k = (index * rows + r) % num_val_windows();
    append_window(val_windows_[static_cast<size_t>(val_order_[static_cast<size_t>(k)])], out);
  }
  return out;
}

void Corpus::set_position(const DataPosition& position) {
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
