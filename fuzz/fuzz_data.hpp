// Shared by the dataset-loader fuzz targets: a scratch directory for the files they write, and checks of a loaded Dataset.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include <unistd.h>

#include "data.hpp"
#include "data_test_files.hpp"

namespace nestla_fuzz {

[[noreturn]] inline void data_finding(const char* target, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", target, what.c_str());
  std::abort();
}

// Where the loaders' files are written: one directory per process, removed at
// exit. In memory (/dev/shm) where there is one: rewriting a file on ext4
// waits for the disk (its truncate-then-write heuristic), 100 times slower.
inline std::filesystem::path scratch_base() {
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  return std::filesystem::temp_directory_path();
}

inline const resnet18::testing::TempDir& scratch() {
  static const resnet18::testing::TempDir dir(scratch_base());
  return dir;
}

// What every successful load promises: consistent shapes, labels in range, pixels in [0, 1].
inline void check_dataset(const char* target, const resnet18::Dataset& d, std::size_t limit) {
  if (d.size() == 0) data_finding(target, "a load succeeded with no images");
  if (limit != 0 && d.size() > limit) data_finding(target, "more images than the limit");
  if (d.channels < 1 || d.height < 1 || d.width < 1) data_finding(target, "implausible image shape");
  if (d.images.size() != d.size() * d.image_size()) data_finding(target, "image buffer does not match the count");
  if (d.mean.size() != static_cast<std::size_t>(d.channels) || d.stddev.size() != d.mean.size())
    data_finding(target, "normalization constants do not match the channels");
  for (auto l : d.labels)
    if (l >= d.num_classes) data_finding(target, "label out of range");
  for (float x : d.images)
    if (!(x >= 0.0f && x <= 1.0f)) data_finding(target, "pixel outside [0, 1]");
}

}  // namespace nestla_fuzz
