// AtomicFile, MetricsWriter and ProgressBar: POSIX file handling and terminal output for the trainer.
#include "util.hpp"

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace resnet18 {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

// Writes everything, retrying on EINTR and short writes; returns errno or 0.
int write_all(int fd, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return 0;
}

}  // namespace

// ---------------------------------------------------------------- AtomicFile

AtomicFile::AtomicFile(fs::path target) : target_(std::move(target)) {
  if (target_.filename().empty()) throw std::invalid_argument("AtomicFile: '" + target_.string() + "' names no file");
  static std::atomic<unsigned> counter{0};
  const fs::path dir = target_.parent_path();
  // Same directory as the target: rename(2) is atomic only within one file system. The
  // name is unique per process and call, and O_EXCL never reuses someone else's file.
  for (int attempt = 0;; ++attempt) {
    const std::string name = "." + target_.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                             std::to_string(counter.fetch_add(1));
    temp_ = dir.empty() ? fs::path(name) : dir / name;
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) break;
    if (errno != EEXIST || attempt > 100) {
      throw_errno(errno, "cannot create temporary file " + temp_.string() + " for " + target_.string());
    }
  }
}

AtomicFile::~AtomicFile() { discard(); }

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_.c_str());
  }
}

void AtomicFile::write(const void* data, std::size_t size) {
  if (fd_ < 0) throw std::logic_error("AtomicFile: write to " + target_.string() + " after commit");
  if (const int err = write_all(fd_, data, size); err != 0) {
    discard();
    throw_errno(err, "cannot write " + temp_.string() + " (for " + target_.string() + ")");
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw std::logic_error("AtomicFile: " + target_.string() + " committed twice");
  if (::fsync(fd_) != 0) {
    const int err = errno;
    discard();
    throw_errno(err, "cannot fsync " + temp_.string() + " (for " + target_.string() + ")");
  }
  // close() can report a deferred write error (NFS): it counts as a failed write.
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    throw_errno(err, "cannot close " + temp_.string() + " (for " + target_.string() + ")");
  }
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    throw_errno(err, "cannot rename " + temp_.string() + " to " + target_.string());
  }
  // The new directory entry is durable only once the directory itself is synced. Some
  // file systems refuse fsync on a directory (EINVAL); the data is in place regardless.
  const fs::path dir = target_.parent_path().empty() ? fs::path(".") : target_.parent_path();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    const int rc = ::fsync(dfd);
    const int err = errno;
    ::close(dfd);
    if (rc != 0 && err != EINVAL && err != EROFS) throw_errno(err, "cannot fsync directory " + dir.string());
  }
}

void write_file_atomic(const fs::path& target, std::string_view contents) {
  AtomicFile f(target);
  f.write(contents);
  f.commit();
}

void write_file_atomic(const fs::path& target, const std::function<void(AtomicFile&)>& produce) {
  AtomicFile f(target);
  produce(f);
  f.commit();
}

// ---------------------------------------------------------------- MetricsWriter

MetricsWriter::MetricsWriter(fs::path path, bool truncate) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0666);
  if (fd_ < 0) throw_errno(errno, "cannot open metrics file " + path_.string());
}

MetricsWriter::~MetricsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsWriter::write_line(std::string line) {
  line.push_back('\n');
  if (const int err = write_all(fd_, line.data(), line.size()); err != 0) {
    throw_errno(err, "cannot write metrics file " + path_.string());
  }
}

void MetricsWriter::write(const nlohmann::json& record) {
  // error_handler replace: a non-UTF-8 string in a label must not lose the whole line.
  write_line(record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void MetricsWriter::write(const EpochMetrics& m) {
  // ordered_json keeps the fields in this order, which is easier to read than sorted.
  nlohmann::ordered_json j;
  j["epoch"] = m.epoch;
  j["step"] = m.step;
  j["train_loss"] = m.train_loss;
  j["train_acc"] = m.train_acc;
  if (m.test_loss) j["test_loss"] = *m.test_loss;
  if (m.test_acc) j["test_acc"] = *m.test_acc;
  j["lr"] = m.lr;
  j["seconds"] = m.seconds;
  j["images_per_s"] = m.images_per_s;
  for (const auto& [key, value] : m.extra) j[key] = value;
  write_line(j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

// ---------------------------------------------------------------- ProgressBar

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<long long>(std::llround(seconds));
  const long long h = s / 3600;
  s %= 3600;
  char buf[48];
  if (h > 0) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", h, s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  }
  return buf;
}

ProgressBar::ProgressBar(std::string label, std::size_t total_batches)
    : ProgressBar(std::move(label), total_batches, Options{}) {}

ProgressBar::ProgressBar(std::string label, std::size_t total_batches, const Options& options)
    : label_(std::move(label)), total_(total_batches), options_(options) {
  switch (options_.mode) {
    case Mode::terminal: terminal_ = true; break;
    case Mode::plain: terminal_ = false; break;
    case Mode::automatic: terminal_ = ::isatty(::fileno(options_.out)) == 1; break;
  }
  start_ = std::chrono::steady_clock::now();
  last_draw_ = start_;
}

ProgressBar::~ProgressBar() {
  if (!finished_ && terminal_ && batches_ > 0) {
    std::fputc('\n', options_.out);
    std::fflush(options_.out);
  }
}

void ProgressBar::update(std::size_t batches_done, std::size_t images_done, double loss, double accuracy) {
  batches_ = batches_done;
  images_ = images_done;
  loss_ = loss;
  accuracy_ = accuracy;
  const auto now = std::chrono::steady_clock::now();
  const auto interval = terminal_ ? options_.refresh : options_.log_every;
  if (now - last_draw_ >= interval) {
    last_draw_ = now;
    render(false);
  }
}

void ProgressBar::finish(std::string_view suffix) {
  if (finished_) return;
  finished_ = true;
  render(true);
  if (!suffix.empty()) {
    std::fputs("  ", options_.out);
    std::fwrite(suffix.data(), 1, suffix.size(), options_.out);
    line_ += "  ";
    line_ += suffix;
  }
  std::fputc('\n', options_.out);
  std::fflush(options_.out);
}

void ProgressBar::render(bool final) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(images_) / elapsed : 0.0;
  std::string bar;
  if (terminal_ && options_.width > 0) {
    const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(batches_) / static_cast<double>(total_)) : 0.0;
    const auto filled = static_cast<std::size_t>(frac * options_.width);
    bar = "[" + std::string(filled, '#') + std::string(static_cast<std::size_t>(options_.width) - filled, '.') + "] ";
  }
  std::string time_part;
  if (final) {
    time_part = format_duration(elapsed);
  } else if (batches_ > 0 && total_ > batches_) {
    time_part = "ETA " + format_duration(elapsed / static_cast<double>(batches_) * static_cast<double>(total_ - batches_));
  } else {
    time_part = "ETA ?";
  }
  char stats[160];
  std::snprintf(stats, sizeof stats, "%zu/%zu  loss %.4f  acc %5.1f%%  %.0f img/s  %s", batches_, total_, loss_,
                100.0 * accuracy_, rate, time_part.c_str());
  line_ = label_ + " " + bar + stats;

  if (terminal_) {
    // A line wider than the terminal wraps, and \r then redraws only its last part.
    std::string shown = line_;
    winsize ws{};
    if (::ioctl(::fileno(options_.out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && shown.size() >= ws.ws_col) {
      shown.resize(ws.ws_col - 1u);
    }
    // \x1b[K clears what a longer previous line left behind.
    std::fprintf(options_.out, "\r%s\x1b[K", shown.c_str());
  } else if (!final) {
    std::fprintf(options_.out, "%s\n", line_.c_str());
  } else {
    std::fputs(line_.c_str(), options_.out);
  }
  std::fflush(options_.out);
}

}  // namespace resnet18
