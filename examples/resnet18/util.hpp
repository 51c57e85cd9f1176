// Trainer utilities: crash-safe file replacement, guarded file access, JSON-lines metrics, a progress bar, interrupts.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace resnet18 {

// A file or value the run refuses before it changes anything (a device node given as a
// checkpoint, an unwritable directory, a checkpoint of another model, a size that cannot
// be allocated). resnet18_train exits with status 2 on it.
class RefusedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------- guarded file access

// Follows the symbolic links of the last component of `path` (up to 40) and returns the
// entry they end at, existing or not: writing "through" a link replaces the file it names
// and keeps the link. Only the last component matters: a linked directory already leads
// the temporary file and the rename into the same real directory.
std::filesystem::path resolve_link_chain(const std::filesystem::path& path);

// "a character device", "a FIFO", "a directory"... for messages.
std::string describe_file_type(unsigned mode);

// Throws RefusedError ("<what> <path>: ...") unless `path` is missing or, after its
// links, a regular file we may write: never a device node, FIFO, socket or directory.
// Returns the resolved path.
std::filesystem::path check_replaceable(const std::filesystem::path& path, const std::string& what);

// That, and that a file can be created next to the target (the directory exists and is
// writable): creates and removes an AtomicFile temporary there. RefusedError otherwise.
void check_writable_location(const std::filesystem::path& path, const std::string& what);

// Removes temporary files that an AtomicFile for `target` (links resolved) left behind
// when its process was killed: only entries named ".<name>.tmp.<pid>.<n>", only regular
// files, only when process <pid> no longer runs. Returns the paths removed.
std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& target);

// An open regular file for reading, refused (RefusedError naming `what` and the path)
// when it is anything else or larger than `max_bytes`: a device or FIFO is never opened
// (stat first, then open non-blocking and fstat again, against a swap in between).
class BoundedReader {
 public:
  BoundedReader(const std::filesystem::path& path, const std::string& what, std::uint64_t max_bytes);
  BoundedReader(const BoundedReader&) = delete;
  BoundedReader& operator=(const BoundedReader&) = delete;
  ~BoundedReader();

  // The size when opened.
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  // Reads n bytes; false when the file ends first. Never reads past size() + 1 in all.
  bool read(void* data, std::size_t n);
  // Everything up to the end (at most size()); RefusedError if the file grew since opened.
  std::string read_rest();
  // True when nothing follows what was read.
  bool at_end();

 private:
  std::filesystem::path path_;
  std::string what_;
  int fd_ = -1;
  std::uint64_t size_ = 0, done_ = 0;
};

// ---------------------------------------------------------------- atomic file writes

// Writes a file so that readers (and a run killed half-way) see either the old content
// or the complete new one: the data goes to a temporary file in the target's directory
// (rename is atomic only within one file system), is flushed and fsync'ed, and is then
// renamed over the target; the directory is fsync'ed too, so the rename survives a
// power loss. A symbolic link is followed (the file it names is replaced, the link
// stays); a target that is not a regular file, or a read-only one, is refused
// (RefusedError) when constructed and again just before the rename; the new file keeps
// the old one's permission bits. I/O errors are std::system_error naming the path and
// the errno text.
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

  // The file replaced: the given path with its links followed.
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
  // Anything but a regular file (after links) is refused with RefusedError, unopened.
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

// ---------------------------------------------------------------- interrupts

// While alive, SIGINT and SIGTERM are caught: the first sets flag() to the signal number
// (and says so on stderr), so the training loop stops after its current step and saves;
// a second one restores the default action and re-raises it, ending the process at once
// (a checkpoint being written is then left as a temporary file, removed on the next start).
// The previous handlers come back on destruction. One at a time.
class InterruptHandlers {
 public:
  InterruptHandlers();
  ~InterruptHandlers();
  InterruptHandlers(const InterruptHandlers&) = delete;
  InterruptHandlers& operator=(const InterruptHandlers&) = delete;

  [[nodiscard]] static const std::atomic<int>& flag() noexcept;
};

// "SIGINT", "SIGTERM", or "signal N".
std::string signal_name(int sig);

}  // namespace resnet18
