// Trainer utilities: crash-safe file replacement, JSON-lines metrics, and a terminal progress bar.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace resnet18 {

// ---------------------------------------------------------------- atomic file writes

// Writes a file so that readers (and a run killed half-way) see either the old content
// or the complete new one: the data goes to a temporary file in the target's directory
// (rename is atomic only within one file system), is flushed and fsync'ed, and is then
// renamed over the target; the directory is fsync'ed too, so the rename survives a
// power loss. Errors are std::system_error naming the path and the errno text.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path target);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  // Without commit(), the temporary file is removed and the target left untouched.
  ~AtomicFile();

  void write(const void* data, std::size_t size);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // fsync, rename over the target, fsync the directory. Once only.
  void commit();

  [[nodiscard]] const std::filesystem::path& target() const noexcept { return target_; }
  [[nodiscard]] const std::filesystem::path& temp_path() const noexcept { return temp_; }

 private:
  void discard() noexcept;

  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
};

void write_file_atomic(const std::filesystem::path& target, std::string_view contents);

// For large files (checkpoints): `produce` streams the content into the AtomicFile; if it
// throws, the target is left as it was and the exception propagates.
void write_file_atomic(const std::filesystem::path& target, const std::function<void(AtomicFile&)>& produce);

// ---------------------------------------------------------------- metrics

struct EpochMetrics {
  int epoch = 0;
  std::int64_t step = 0;  // optimizer steps so far
  double train_loss = 0;
  double train_acc = 0;  // fraction in [0, 1]
  std::optional<double> test_loss;  // absent when this epoch was not evaluated
  std::optional<double> test_acc;
  double lr = 0;
  double seconds = 0;  // wall time of the epoch
  double images_per_s = 0;
  // Anything else worth plotting (e.g. "lookahead_alpha"), written as extra fields.
  std::vector<std::pair<std::string, double>> extra;
};

// Appends one JSON object per line. Each line goes out in a single write() on an
// O_APPEND descriptor, so a killed run leaves whole lines and `tail -f` shows them as
// they come. NaN and infinity are written as null (JSON has no such numbers).
class MetricsWriter {
 public:
  // truncate = true starts a fresh file; otherwise lines are appended (a resumed run).
  explicit MetricsWriter(std::filesystem::path path, bool truncate = false);
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  ~MetricsWriter();

  void write(const EpochMetrics& m);
  // Any JSON object (a run header with the options, a final summary...).
  void write(const nlohmann::json& record);

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void write_line(std::string line);

  std::filesystem::path path_;
  int fd_ = -1;
};

// ---------------------------------------------------------------- progress

// One line per epoch on stderr: batch i/n, running loss and accuracy, images/s, ETA.
// On a terminal the line is redrawn in place (\r) at most every `refresh`; when the
// stream is not a terminal (a log file, CI) it prints a plain line every `log_every`
// instead, so logs stay readable.
class ProgressBar {
 public:
  enum class Mode { automatic, terminal, plain };
  struct Options {
    std::FILE* out = stderr;
    Mode mode = Mode::automatic;
    std::chrono::duration<double> refresh{0.1};
    std::chrono::duration<double> log_every{30.0};
    int width = 24;  // characters of the bar itself
  };

  ProgressBar(std::string label, std::size_t total_batches);
  ProgressBar(std::string label, std::size_t total_batches, const Options& options);
  // Finishes the line if finish() was not called, so the next output starts on its own.
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Call after each batch: batches and images done so far this epoch, and the running
  // (mean) loss and accuracy (fraction) over them.
  void update(std::size_t batches_done, std::size_t images_done, double loss, double accuracy);
  // Draws the final state and ends the line; `suffix` (e.g. test results) is appended.
  void finish(std::string_view suffix = {});

  [[nodiscard]] bool is_terminal() const noexcept { return terminal_; }
  // The text of the status line for the last update (without \r or colours); for tests.
  [[nodiscard]] const std::string& last_line() const noexcept { return line_; }

 private:
  void render(bool final);

  std::string label_;
  std::size_t total_;
  Options options_;
  bool terminal_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  std::size_t batches_ = 0;
  std::size_t images_ = 0;
  double loss_ = 0;
  double accuracy_ = 0;
  std::string line_;
};

// "1:02:03" / "4:05" for durations of progress bars and logs.
std::string format_duration(double seconds);

}  // namespace resnet18
