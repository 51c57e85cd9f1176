// Bounds-checked binary writer and reader for checkpoints, with a CRC-32 over the whole record; the reader trusts no size it reads.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <ios>
#include <istream>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>

#include "nestla/detail/checked.hpp"
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

// Reads one checkpoint record from a stream, on demand: the parser asks for
// each field, and only then are its bytes read, in chunks that grow with what
// has arrived. So no field is allocated for before the stream has delivered
// its bytes (a short stream declaring huge sizes fails as truncated after
// reading what it holds), an endless stream fails as soon as its bytes cannot
// be a checkpoint, and the stream is left right after the record. The CRC-32
// of every byte read is compared with the record's trailing one by finish().
// max_bytes bounds the whole record (a source that keeps sending well-formed
// data for a huge declared state is stopped there).
class checkpoint_reader {
 public:
  static constexpr std::uint64_t unlimited = ~std::uint64_t(0);

  checkpoint_reader(std::istream& is, std::string_view what, std::uint64_t max_bytes = unlimited)
      : is_(is), what_(what), max_bytes_(max_bytes) {}

  // Bytes of the record consumed so far.
  std::uint64_t position() const { return consumed_; }
  // The format version the checkpoint declares (load_checkpoint sets it after
  // checking it), so that readers of later fields can accept older files.
  std::uint32_t version() const { return version_; }
  void set_version(std::uint32_t v) { version_ = v; }
  std::string_view what() const { return what_; }
  // The field being read, for errors raised outside the reader (out of
  // memory). Field names are string literals, so the view stays valid.
  std::string_view field() const { return field_; }

  template <class V>
    requires std::is_arithmetic_v<V>
  V get(std::string_view field) {
    V v;
    std::memcpy(&v, take(sizeof(V), field), sizeof(V));
    return v;
  }
  // A flag byte: 0 or 1, nothing else (the writer writes no other value).
  bool get_flag(std::string_view field) {
    const auto v = get<std::uint8_t>(field);
    if (v > 1) fail<checkpoint_error>("nestla: ", what_, ": field '", field, "' is ", unsigned(v), ", expected 0 or 1");
    return v == 1;
  }
  std::string get_string(std::string_view field, std::size_t max_len = 4096) {
    const auto n = get<std::uint64_t>(field);
    if (n > max_len) fail<checkpoint_error>("nestla: ", what_, ": field '", field, "' has implausible length ", n);
    const char* at = take(static_cast<std::size_t>(n), field);
    return std::string(at, static_cast<std::size_t>(n));
  }
  // Checks the stored count against the expected one and returns where the
  // values are, as bytes (not aligned for V: read them with memcpy). Valid
  // until the next call on this reader.
  template <class V>
  const char* get_array(std::size_t expected, std::string_view field) {
    const auto n = get<std::uint64_t>(field);
    if (n != expected)
      fail<checkpoint_error>("nestla: ", what_, ": field '", field, "' holds ", n, " values, expected ", expected);
    if (mul_overflows(expected, sizeof(V)))
      fail<checkpoint_error>("nestla: ", what_, ": field '", field, "' declares ", n, " values, more than memory holds");
    return take(expected * sizeof(V), field);
  }
  // Makes sure the next `bytes` bytes have arrived (else: truncated), before
  // a caller allocates memory for what they hold.
  void prefetch(std::uint64_t bytes, std::string_view field) { need(bytes, field); }
  // Reads the trailing CRC-32 and compares it with the bytes read before it.
  void finish() {
    const std::uint32_t computed = crc_;
    if (get<std::uint32_t>("checksum") != computed) error("checksum mismatch: the checkpoint is damaged");
  }
  [[noreturn]] void error(std::string_view msg) const {
    if (msg.starts_with("nestla: ")) msg.remove_prefix(8);  // a converted error of the library
    fail<checkpoint_error>("nestla: ", what_, ": ", msg, " (at byte ", consumed_, ")");
  }

 private:
  // Chunks start at 64 KiB and grow with the bytes received, so the buffer
  // stays within twice what the stream delivered.
  static constexpr std::size_t min_chunk = std::size_t(64) << 10;

  const char* take(std::size_t n, std::string_view field) {
    need(n, field);
    const char* at = buf_.get() + head_;
    crc_ = crc32(at, n, crc_);
    head_ += n;
    consumed_ += n;
    return at;
  }
  void need(std::uint64_t n, std::string_view field) {
    field_ = field;
    const std::size_t have = tail_ - head_;
    if (n <= have) return;
    if (n > max_bytes_ || consumed_ > max_bytes_ - n)
      fail<checkpoint_error>("nestla: ", what_, ": field '", field, "' at byte ", consumed_, " needs ", n,
                             " bytes, beyond the limit of ", max_bytes_, " bytes given to load");
    if (n > max_object_bytes)
      fail<checkpoint_error>("nestla: ", what_, ": field '", field, "' declares ", n, " bytes, more than memory holds");
    // Keep the unconsumed bytes, at the front of a buffer that grows as data arrives.
    std::size_t avail = have;
    if (head_ != 0 && avail) std::memmove(buf_.get(), buf_.get() + head_, avail);
    head_ = 0;
    tail_ = avail;
    while (avail < n) {
      const std::size_t chunk = std::min<std::size_t>(static_cast<std::size_t>(n) - avail, std::max(min_chunk, avail));
      if (cap_ - avail < chunk) {
        const std::size_t cap = avail + chunk;
        std::unique_ptr<char[]> grown(new char[cap]);
        if (avail) std::memcpy(grown.get(), buf_.get(), avail);
        buf_ = std::move(grown);
        cap_ = cap;
      }
      const std::size_t got = read_some(buf_.get() + avail, chunk);
      avail += got;
      tail_ = avail;
      if (got < chunk) {
        if (consumed_ == 0 && avail == 0) fail<checkpoint_error>("nestla: ", what_, ": the checkpoint stream is empty");
        fail<checkpoint_error>("nestla: ", what_, ": checkpoint truncated while reading '", field, "' at byte ",
                               consumed_, " (", n, " bytes needed, the stream ended after ", avail, ")");
      }
    }
  }
  std::size_t read_some(char* dst, std::size_t n) {
    if (!is_.good() && !is_.eof())
      fail<checkpoint_error>("nestla: ", what_, ": reading the checkpoint stream failed (the stream is in a failed state)");
    std::streamsize got = 0;
    try {
      is_.read(dst, static_cast<std::streamsize>(n));
      got = is_.gcount();
    } catch (const std::ios_base::failure&) {
      // Streams with exceptions() set throw at the end of data, or on an error.
      if (!is_.eof() || is_.bad()) fail<checkpoint_error>("nestla: ", what_, ": reading the checkpoint stream failed");
      got = is_.gcount();
    }
    if (is_.bad()) fail<checkpoint_error>("nestla: ", what_, ": reading the checkpoint stream failed");
    return static_cast<std::size_t>(got);
  }

  std::istream& is_;
  std::string what_;
  std::string_view field_;
  std::uint64_t max_bytes_;
  std::unique_ptr<char[]> buf_;
  std::size_t cap_ = 0, head_ = 0, tail_ = 0;
  std::uint64_t consumed_ = 0;
  std::uint32_t crc_ = 0;
  std::uint32_t version_ = 0;
};

}  // namespace nestla::detail
