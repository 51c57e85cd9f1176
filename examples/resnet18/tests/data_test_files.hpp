// Test helpers: a self-deleting temporary directory and writers for CIFAR-10, IDX and gzip files.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

namespace resnet18::testing {

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "resnet18-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A character device to offer where a file is expected. Never the system's /dev/null
// when we run as root: a broken guard would replace it with a regular file for every
// process on the machine (it happened once, while checking that these tests can fail).
// As root, a fresh node (1, 3: what /dev/null is) in `dir`; otherwise /dev/null, whose
// directory an ordinary user cannot change; empty when neither is safe (skip the case).
inline std::filesystem::path scratch_device(const std::filesystem::path& dir) {
  const std::filesystem::path node = dir / "null-device";
  if (::mknod(node.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) return node;
  if (::geteuid() != 0 && ::access("/dev", W_OK) != 0) return "/dev/null";
  return {};
}

// The pid of a process that has exited and been reaped: no process has it (until the
// kernel reuses it, which takes a full turn of the pid space). For stale-file tests.
inline pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

using Bytes = std::vector<std::uint8_t>;

inline void write_bytes(const std::filesystem::path& file, const Bytes& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

inline Bytes read_bytes(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_gzip(const std::filesystem::path& file, const Bytes& bytes) {
  gzFile gz = gzopen(file.c_str(), "wb");
  if (gz == nullptr) throw std::runtime_error("gzopen failed for " + file.string());
  if (!bytes.empty() && gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())) != static_cast<int>(bytes.size())) {
    gzclose(gz);
    throw std::runtime_error("gzwrite failed for " + file.string());
  }
  if (gzclose(gz) != Z_OK) throw std::runtime_error("gzclose failed for " + file.string());
}

// Pixel value of (record, channel, y, x) in the generated files: distinct enough that a
// swapped plane, row or record shows up.
inline std::uint8_t test_pixel(std::size_t record, int c, int y, int x) {
  return static_cast<std::uint8_t>((record * 7 + static_cast<std::size_t>(c) * 101 + static_cast<std::size_t>(y) * 13 +
                                    static_cast<std::size_t>(x) * 3) &
                                   0xff);
}

inline std::uint8_t test_label(std::size_t record, int classes = 10) {
  return static_cast<std::uint8_t>((record * 3 + 1) % static_cast<std::size_t>(classes));
}

// `records` CIFAR-10 records starting at global record number `first`.
inline Bytes cifar_records(std::size_t first, std::size_t records) {
  Bytes b;
  b.reserve(records * 3073);
  for (std::size_t r = first; r < first + records; ++r) {
    b.push_back(test_label(r));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) b.push_back(test_pixel(r, c, y, x));
  }
  return b;
}

inline void put_be32(Bytes& b, std::uint32_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 24));
  b.push_back(static_cast<std::uint8_t>(v >> 16));
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}

inline Bytes idx_images(std::uint32_t count, std::uint32_t rows, std::uint32_t cols, std::uint32_t magic = 0x00000803) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, count);
  put_be32(b, rows);
  put_be32(b, cols);
  for (std::size_t r = 0; r < count; ++r)
    for (std::uint32_t y = 0; y < rows; ++y)
      for (std::uint32_t x = 0; x < cols; ++x) b.push_back(test_pixel(r, 0, static_cast<int>(y), static_cast<int>(x)));
  return b;
}

inline Bytes idx_labels(std::uint32_t count, std::uint32_t magic = 0x00000801) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, count);
  for (std::size_t r = 0; r < count; ++r) b.push_back(test_label(r));
  return b;
}

}  // namespace resnet18::testing
