// Bounds-checked binary writer and reader for checkpoints, with a CRC-32 over the whole record.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <istream>
#include <iterator>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>

#include "nestla/error.hpp"

namespace nestla::detail {

// CRC-32 (IEEE 802.3, as zlib's crc32), table built at compile time.
inline std::uint32_t crc32(const char* data, std::size_t n, std::uint32_t crc = 0) {
  static constexpr auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ static_cast<unsigned char>(data[i])) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

// Values are stored in the host's byte order; the header records it so that a
// checkpoint from a machine of the other order is rejected, not misread.
class checkpoint_writer {
 public:
  template <class V>
    requires std::is_arithmetic_v<V>
  void put(V v) {
    char raw[sizeof(V)];
    std::memcpy(raw, &v, sizeof(V));
    buf_.append(raw, sizeof(V));
  }
  void put_string(std::string_view s) {
    put<std::uint64_t>(s.size());
    buf_.append(s.data(), s.size());
  }
  template <class V>
  void put_array(const V* v, std::size_t n) {
    put<std::uint64_t>(n);
    buf_.append(reinterpret_cast<const char*>(v), n * sizeof(V));
  }
  // Reserves room for n values and returns where to write them (device copies land here).
  // Returned as bytes: the slot need not be aligned for V, so fill it with memcpy.
  template <class V>
  char* put_array_slot(std::size_t n) {
    put<std::uint64_t>(n);
    const std::size_t at = buf_.size();
    buf_.resize(at + n * sizeof(V));
    return buf_.data() + at;
  }
  void finish_to(std::ostream& os, std::string_view what) {
    put<std::uint32_t>(crc32(buf_.data(), buf_.size()));
    os.write(buf_.data(), static_cast<std::streamsize>(buf_.size()));
    os.flush();
    if (!os) fail<checkpoint_error>("nestla: ", what, ": writing the checkpoint to the stream failed");
  }

 private:
  std::string buf_;
};

class checkpoint_reader {
 public:
  // Reads the whole stream and verifies the trailing CRC before anything is parsed.
  checkpoint_reader(std::istream& is, std::string_view what) : what_(what) {
    buf_.assign(std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>());
    if (is.bad()) fail<checkpoint_error>("nestla: ", what_, ": reading the checkpoint stream failed");
    if (buf_.size() < sizeof(std::uint32_t))
      fail<checkpoint_error>("nestla: ", what_, ": checkpoint is empty or truncated (", buf_.size(), " bytes)");
    end_ = buf_.size() - sizeof(std::uint32_t);
    std::uint32_t stored;
    std::memcpy(&stored, buf_.data() + end_, sizeof stored);
    computed_ok_ = crc32(buf_.data(), end_) == stored;
  }

  bool checksum_ok() const { return computed_ok_; }
  // The format version the checkpoint declares (load_checkpoint sets it after
  // checking it), so that readers of later fields can accept older files.
  std::uint32_t version() const { return version_; }
  void set_version(std::uint32_t v) { version_ = v; }
  std::size_t position() const { return pos_; }
  bool at_end() const { return pos_ == end_; }
  std::string_view what() const { return what_; }

  template <class V>
    requires std::is_arithmetic_v<V>
  V get(std::string_view field) {
    need(sizeof(V), field);
    V v;
    std::memcpy(&v, buf_.data() + pos_, sizeof(V));
    pos_ += sizeof(V);
    return v;
  }
  std::string get_string(std::string_view field, std::size_t max_len = 4096) {
    const auto n = get<std::uint64_t>(field);
    if (n > max_len) fail<checkpoint_error>("nestla: ", what_, ": field '", field, "' has implausible length ", n);
    need(n, field);
    std::string s(buf_.data() + pos_, n);
    pos_ += n;
    return s;
  }
  // Checks the stored count against the expected one and returns where the
  // values are, as bytes (not aligned for V: read them with memcpy).
  template <class V>
  const char* get_array(std::size_t expected, std::string_view field) {
    const auto n = get<std::uint64_t>(field);
    if (n != expected)
      fail<checkpoint_error>("nestla: ", what_, ": field '", field, "' holds ", n, " values, expected ", expected);
    need(n * sizeof(V), field);
    const char* at = buf_.data() + pos_;
    pos_ += n * sizeof(V);
    return at;
  }
  [[noreturn]] void error(std::string_view msg) const {
    fail<checkpoint_error>("nestla: ", what_, ": ", msg, " (at byte ", pos_, ")");
  }

 private:
  void need(std::size_t n, std::string_view field) const {
    if (n > end_ - pos_)
      fail<checkpoint_error>("nestla: ", what_, ": checkpoint truncated while reading '", field, "' at byte ", pos_);
  }

  std::string buf_;
  std::string what_;
  std::size_t pos_ = 0, end_ = 0;
  std::uint32_t version_ = 0;
  bool computed_ok_ = false;
};

}  // namespace nestla::detail
