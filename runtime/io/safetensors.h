// The safetensors file format (https://github.com/huggingface/safetensors, "Format"), read and
// written without LibTorch:
//
//   8 bytes    N, the header's length, unsigned little-endian
//   N bytes    a JSON object: for each tensor "name": {"dtype": "F32", "shape": [4, 8],
//              "data_offsets": [begin, end]}, offsets into the data that follows; and optionally
//              "__metadata__": {"key": "value", ...} (strings only). Trailing spaces may pad it.
//   the data   every tensor's bytes, row-major, little-endian, back to back: no holes, no overlap,
//              nothing after the last
//
// A file is hostile input: the reader checks the header's length against the file, each dtype,
// shape and offset pair, that each tensor's byte count is its shape times its element size, and
// that the tensors tile the data exactly. Anything else is an InputError naming the file, the tensor
// and the values; nothing is read outside the file.
//
//   SafetensorsFile file = read_safetensors_header("model.safetensors");
//   for (const SafetensorsTensor& t : file.tensors) read_safetensors_data(file, t, buffer_of(t.bytes()));
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace pipetrain {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", "F64", "I64", ... as the format names them
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data, which starts after the header
  uint64_t end = 0;
  uint64_t bytes() const { return end - begin; }
};

struct SafetensorsFile {
  std::string path;
  uint64_t data_start = 0;  // 8 + the header's length
  std::vector<SafetensorsTensor> tensors;  // in the order of their data
  std::map<std::string, std::string> metadata;
  const SafetensorsTensor* find(const std::string& name) const;
};

// Bytes per element of a dtype the format defines; 0 for a name it does not.
int64_t safetensors_element_size(const std::string& dtype);

// Parses a whole file held in memory (what read_safetensors_header checks, on `bytes`); `path`
// only names it in errors. The fuzz target's entry point.
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& path);

// Reads and checks the header of the file at `path`, not its data.
SafetensorsFile read_safetensors_header(const std::string& path);

// Copies tensor `tensor`'s bytes (tensor.bytes() of them) from the file into `out`. InputError when
// the file has changed under it (shorter than its header says).
void read_safetensors_data(const SafetensorsFile& file, const SafetensorsTensor& tensor, void* out);

// Writes a safetensors file tensor by tensor, each streamed from wherever it lies, so that no copy
// of the whole file is ever made: the header is written first from the tensors' names, dtypes and
// shapes (begin/end are computed), then write() takes each tensor's bytes in that order. The file
// is written beside `path` and renamed over it by commit(), once flushed to disk: a reader never
// sees half a file, and a writer destroyed before commit() removes its partial file. InputError
// naming the path and the OS's reason when it cannot write; std::logic_error when the bytes given
// do not match the tensors declared.
//
//   SafetensorsWriter out("model.safetensors", {{"w", "F32", {2, 3}}}, {{"format", "pt"}});
//   out.write(w.data_ptr(), 24);
//   out.commit();
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, std::vector<SafetensorsTensor> tensors,
                    const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next bytes of the tensors, in order: a tensor may come whole or in parts of any size (a
  // part never runs past the tensor it belongs to).
  void write(const void* data, uint64_t bytes);
  void commit();
  // What has gone to the file so far (header included): its size and CRC-32.
  uint64_t size() const { return size_; }
  uint32_t crc32() const { return crc_; }

 private:
  void put(const void* data, uint64_t bytes);
  std::string path_;
  std::string partial_;
  std::vector<SafetensorsTensor> tensors_;
  size_t next_ = 0;
  uint64_t written_ = 0;  // of tensors_[next_]
  uint64_t size_ = 0;
  uint32_t crc_ = 0;
  int fd_ = -1;
};

}  // namespace pipetrain
