#include "runtime/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include "memory/errors.h"
#include "runtime/io/crc32.h"

namespace pipetrain {

namespace {

// The reference implementation refuses headers over 100 MB; so does this one, before allocating.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string quoted(const std::string& name) { return "'" + name + "'"; }

uint64_t header_length(const unsigned char* first8, uint64_t file_size, const std::string& path) {
  if (file_size < 8) {
    throw InputError("'" + path + "' is " + std::to_string(file_size) +
                     " bytes: too short for a safetensors file (8 bytes of header length, then the header)");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | first8[i];
  if (n > file_size - 8) {
    throw InputError("'" + path + "' says its safetensors header is " + std::to_string(n) + " bytes, past the end of the file (" +
                     std::to_string(file_size) + " bytes): truncated, or not a safetensors file");
  }
  if (n > kMaxHeaderBytes) {
    throw InputError("'" + path + "' has a safetensors header of " + std::to_string(n) + " bytes; at most " +
                     std::to_string(kMaxHeaderBytes) + " are accepted");
  }
  return n;
}

// n as a tensor dimension, or an InputError.
int64_t dimension(const nlohmann::json& n, const std::string& where) {
  if (!n.is_number_unsigned() || n.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    throw InputError(where + " has shape entry " + n.dump() + ", not a non-negative integer");
  }
  return n.get<int64_t>();
}

SafetensorsTensor parse_tensor(const std::string& name, const nlohmann::json& entry, uint64_t data_size,
                               const std::string& where) {
  if (name.empty()) throw InputError(where + ": a tensor has an empty name");
  const std::string tensor = where + ": tensor " + quoted(name);
  if (!entry.is_object()) throw InputError(tensor + " is " + entry.dump() + ", not an object with dtype, shape and data_offsets");
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) throw InputError(tensor + " has no '" + key + "'");
  }
  SafetensorsTensor t;
  t.name = name;
  const auto& dtype = entry.at("dtype");
  if (!dtype.is_string() || safetensors_element_size(dtype.get<std::string>()) == 0) {
    throw InputError(tensor + " has dtype " + dtype.dump() +
                     ", not one the format defines (BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)");
  }
  t.dtype = dtype.get<std::string>();
  const auto& shape = entry.at("shape");
  if (!shape.is_array()) throw InputError(tensor + " has shape " + shape.dump() + ", not an array");
  // Elements times element size, refusing what would overflow 64 bits.
  uint64_t count = 1;
  bool overflow = false;
  for (const auto& n : shape) {
    const int64_t d = dimension(n, tensor);
    t.shape.push_back(d);
    if (d != 0 && count > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) overflow = true;
    count *= static_cast<uint64_t>(d);
  }
  const auto size = static_cast<uint64_t>(safetensors_element_size(t.dtype));
  if (overflow || count > std::numeric_limits<uint64_t>::max() / size) {
    throw InputError(tensor + " has shape " + shape.dump() + ": more bytes than 64 bits count");
  }
  const auto& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
    throw InputError(tensor + " has data_offsets " + offsets.dump() + ", not [begin, end] in bytes");
  }
  t.begin = offsets[0].get<uint64_t>();
  t.end = offsets[1].get<uint64_t>();
  if (t.begin > t.end || t.end > data_size) {
    throw InputError(tensor + " has data_offsets " + offsets.dump() + " outside the " + std::to_string(data_size) +
                     " bytes of data after the header (a truncated file, or offsets out of range)");
  }
  if (t.end - t.begin != count * size) {
    throw InputError(tensor + " spans " + std::to_string(t.end - t.begin) + " bytes, but " + t.dtype + " of shape " +
                     shape.dump() + " is " + std::to_string(count * size) + " bytes");
  }
  return t;
}

SafetensorsFile parse_header(std::string_view text, uint64_t data_size, const std::string& path) {
  const std::string where = "safetensors file '" + path + "'";
  if (text.empty() || text.front() != '{') throw InputError(where + ": its header does not start with '{'");
  nlohmann::json header = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) throw InputError(where + ": its header is not a JSON object");
  SafetensorsFile file;
  file.path = path;
  file.data_start = 8 + text.size();
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw InputError(where + ": __metadata__ is " + entry.dump() + ", not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) throw InputError(where + ": __metadata__ entry '" + key + "' is " + value.dump() + ", not a string");
        file.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    file.tensors.push_back(parse_tensor(name, entry, data_size, where));
  }
  std::sort(file.tensors.begin(), file.tensors.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (const auto& t : file.tensors) {
    if (t.begin != at) {
      throw InputError(where + ": tensor " + quoted(t.name) + " starts at byte " + std::to_string(t.begin) + " of the data, but " +
                       (t.begin < at ? "the tensor before it ends at " : "nothing covers the bytes from ") + std::to_string(at) +
                       (t.begin < at ? " (overlapping offsets)" : " (a hole)"));
    }
    at = t.end;
  }
  if (at != data_size) {
    throw InputError(where + ": its tensors cover " + std::to_string(at) + " bytes of data, but " + std::to_string(data_size) +
                     " follow the header");
  }
  return file;
}

std::string os_error() { return std::strerror(errno); }

}  // namespace

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

int64_t safetensors_element_size(const std::string& dtype) {
  static const std::map<std::string, int64_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& path) {
  const uint64_t n = header_length(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), path);
  return parse_header(bytes.substr(8, n), bytes.size() - 8 - n, path);
}

namespace {

// Reads exactly `bytes` at `offset`, or says why not.
void read_at(int fd, void* out, uint64_t bytes, uint64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(out);
  while (bytes > 0) {
    const ssize_t got = ::pread(fd, p, std::min<uint64_t>(bytes, 1u << 30), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw InputError("cannot read '" + path + "': " + os_error());
    if (got == 0) {
      throw InputError("'" + path + "' ends at byte " + std::to_string(offset) + ", before the bytes its header promises (truncated)");
    }
    p += got;
    bytes -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Fd open_for_reading(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw InputError("cannot open weights file '" + path + "': " + os_error());
  return f;
}

uint64_t file_size(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw InputError("cannot stat '" + path + "': " + os_error());
  if (!S_ISREG(st.st_mode)) throw InputError("'" + path + "' is not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

SafetensorsFile read_safetensors_header(const std::string& path) {
  Fd f = open_for_reading(path);
  const uint64_t size = file_size(f.fd, path);
  unsigned char first8[8] = {};
  read_at(f.fd, first8, std::min<uint64_t>(size, 8), 0, path);
  const uint64_t n = header_length(first8, size, path);
  std::string text(n, '\0');
  read_at(f.fd, text.data(), n, 8, path);
  return parse_header(text, size - 8 - n, path);
}

void read_safetensors_data(const SafetensorsFile& file, const SafetensorsTensor& tensor, void* out) {
  Fd f = open_for_reading(file.path);
  read_at(f.fd, out, tensor.bytes(), file.data_start + tensor.begin, file.path);
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<SafetensorsTensor> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), partial_(path + ".partial"), tensors_(std::move(tensors)) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t at = 0;
  for (auto& t : tensors_) {
    const int64_t size = safetensors_element_size(t.dtype);
    if (size == 0) throw std::logic_error("safetensors: unknown dtype " + t.dtype + " for " + t.name);
    if (header.contains(t.name)) throw std::logic_error("safetensors: tensor " + t.name + " given twice");
    uint64_t bytes = static_cast<uint64_t>(size);
    for (int64_t d : t.shape) bytes *= static_cast<uint64_t>(d);
    t.begin = at;
    t.end = at + bytes;
    at = t.end;
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned, as the reference writer does
  fd_ = ::open(partial_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw InputError("cannot write '" + partial_ + "': " + os_error());
  unsigned char length[8];
  uint64_t n = text.size();
  for (unsigned char& byte : length) {
    byte = static_cast<unsigned char>(n & 0xff);
    n >>= 8;
  }
  try {
    put(length, 8);
    put(text.data(), text.size());
  } catch (...) {
    ::close(fd_);
    ::unlink(partial_.c_str());
    throw;
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(partial_.c_str());
  }
}

void SafetensorsWriter::put(const void* data, uint64_t bytes) {
  const auto* p = static_cast<const char*>(data);
  crc_ = crc32_update(crc_, data, bytes);
  size_ += bytes;
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, std::min<uint64_t>(bytes, 1u << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw InputError("cannot write '" + partial_ + "': " + os_error());
    p += n;
    bytes -= static_cast<uint64_t>(n);
  }
}

void SafetensorsWriter::write(const void* data, uint64_t bytes) {
  // Past tensors of no bytes (a shape with a 0): they are complete as soon as they begin.
  while (next_ < tensors_.size() && tensors_[next_].bytes() == 0) ++next_;
  if (bytes == 0) return;
  if (next_ >= tensors_.size()) throw std::logic_error("safetensors: more bytes written than the tensors declared");
  const SafetensorsTensor& t = tensors_[next_];
  if (bytes > t.bytes() - written_) {
    throw std::logic_error("safetensors: tensor " + t.name + " is " + std::to_string(t.bytes()) + " bytes, " +
                           std::to_string(written_ + bytes) + " given");
  }
  put(data, bytes);
  written_ += bytes;
  if (written_ == t.bytes()) {
    ++next_;
    written_ = 0;
  }
}

void SafetensorsWriter::commit() {
  while (next_ < tensors_.size() && tensors_[next_].bytes() == 0) ++next_;
  if (next_ != tensors_.size()) {
    throw std::logic_error("safetensors: " + std::to_string(tensors_.size() - next_) + " declared tensors not written");
  }
  if (::fsync(fd_) != 0) throw InputError("cannot flush '" + partial_ + "' to disk: " + os_error());
  ::close(fd_);
  fd_ = -1;
  if (std::rename(partial_.c_str(), path_.c_str()) != 0) {
    const std::string why = os_error();
    ::unlink(partial_.c_str());
    throw InputError("cannot move '" + partial_ + "' to '" + path_ + "': " + why);
  }
  std::string dir = path_.substr(0, path_.find_last_of('/') == std::string::npos ? 0 : path_.find_last_of('/'));
  if (dir.empty()) dir = path_.find('/') == 0 ? "/" : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace pipetrain
