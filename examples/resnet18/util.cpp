// AtomicFile, guarded reads, MetricsWriter, ProgressBar and interrupt handling: POSIX file and terminal work for the trainer.
#include "util.hpp"

#include <atomic>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <signal.h>
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

// The prefix of AtomicFile's temporary names for a target: ".<name>.tmp.", then
// "<pid>.<counter>". remove_stale_temporaries() matches exactly this.
std::string temp_prefix(const fs::path& target) { return "." + target.filename().string() + ".tmp."; }

// "<what> <path>", with " (a link to <resolved>)" when links were followed.
std::string named(const std::string& what, const fs::path& given, const fs::path& resolved) {
  std::string s = what.empty() ? given.string() : what + " " + given.string();
  if (resolved != given) s += " (a link to " + resolved.string() + ")";
  return s;
}

// Why `resolved` may not be replaced, or "" when it is missing or a regular file we may
// write. `mode` gets its st_mode when it exists.
std::string replace_refusal(const fs::path& resolved, mode_t* mode) {
  struct stat st {};
  if (::lstat(resolved.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return {};
    return std::string("cannot inspect it: ") + std::strerror(err);
  }
  if (mode) *mode = st.st_mode;
  if (S_ISLNK(st.st_mode)) return "is a symbolic link chain longer than 40 links (or a loop)";
  if (!S_ISREG(st.st_mode))
    return "is " + describe_file_type(st.st_mode) + ", not a regular file: the trainer replaces only regular files";
  if (::access(resolved.c_str(), W_OK) != 0 && errno == EACCES)
    return "is read-only: the trainer does not replace files it may not write";
  return {};
}

// Set from a signal handler: only lock-free atomics are async-signal-safe.
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free);
std::atomic<int> g_interrupt{0};
std::atomic<bool> g_handlers_installed{false};

void on_interrupt(int sig) {
  int expected = 0;
  if (g_interrupt.compare_exchange_strong(expected, sig)) {
    static const char msg[] =
        "\nresnet18_train: interrupt received: stopping after the current step (a second one stops at once)\n";
    const ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    return;
  }
  // The second: the default action, now (async-signal-safe calls only).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
}

struct sigaction g_old_int {}, g_old_term {};

}  // namespace

// ---------------------------------------------------------------- guarded file access

fs::path resolve_link_chain(const fs::path& path) {
  fs::path p = path;
  for (int hops = 0; hops < 40; ++hops) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;
    std::string buf(PATH_MAX, '\0');
    const ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size());
    if (n < 0) return p;
    buf.resize(static_cast<std::size_t>(n));
    const fs::path link(buf);
    p = link.is_absolute() ? link : p.parent_path() / link;
  }
  return p;  // still a link: replace_refusal() names the loop
}

std::string describe_file_type(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFIFO: return "a FIFO (named pipe)";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    default: return "a special file";
  }
}

fs::path check_replaceable(const fs::path& path, const std::string& what) {
  if (path.filename().empty() || path.filename() == "." || path.filename() == "..")
    throw RefusedError(named(what, path, path) + ": names a directory, not a file");
  const fs::path resolved = resolve_link_chain(path);
  if (const std::string why = replace_refusal(resolved, nullptr); !why.empty())
    throw RefusedError(named(what, path, resolved) + ": " + why);
  return resolved;
}

void check_writable_location(const fs::path& path, const std::string& what) {
  const fs::path resolved = check_replaceable(path, what);
  const fs::path dir = resolved.parent_path().empty() ? fs::path(".") : resolved.parent_path();
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    const int err = errno;
    throw RefusedError(named(what, path, resolved) + ": its directory " + dir.string() + " " +
                       (err == ENOENT ? std::string("does not exist") : std::strerror(err)));
  }
  if (!S_ISDIR(st.st_mode))
    throw RefusedError(named(what, path, resolved) + ": " + dir.string() + " is not a directory");
  try {
    AtomicFile probe(resolved);  // created, then removed uncommitted
  } catch (const std::system_error& e) {
    throw RefusedError(named(what, path, resolved) + ": cannot create a file in " + dir.string() + " (" +
                       e.code().message() + ")");
  }
}

std::vector<fs::path> remove_stale_temporaries(const fs::path& target) {
  std::vector<fs::path> removed;
  const fs::path resolved = resolve_link_chain(target);
  if (resolved.filename().empty()) return removed;
  const fs::path dir = resolved.parent_path().empty() ? fs::path(".") : resolved.parent_path();
  const std::string prefix = temp_prefix(resolved);
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    // "<pid>.<counter>", digits only.
    const char* p = name.data() + prefix.size();
    const char* end_of_name = name.data() + name.size();
    long pid = 0;
    unsigned long counter = 0;
    auto [after_pid, e1] = std::from_chars(p, end_of_name, pid);
    if (e1 != std::errc() || after_pid == p || after_pid == end_of_name || *after_pid != '.' || pid <= 0) continue;
    auto [after_counter, e2] = std::from_chars(after_pid + 1, end_of_name, counter);
    if (e2 != std::errc() || after_counter == after_pid + 1 || after_counter != end_of_name) continue;
    // A running process (ours included) may still rename it into place.
    if (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlink(it->path().c_str()) == 0) removed.push_back(it->path());
  }
  return removed;
}

BoundedReader::BoundedReader(const fs::path& path, const std::string& what, std::uint64_t max_bytes)
    : path_(path), what_(what) {
  auto refuse = [&](const std::string& why) { throw RefusedError(what_ + " " + path_.string() + ": " + why); };
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    const int err = errno;
    refuse(std::string("cannot open: ") + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) refuse("is " + describe_file_type(st.st_mode) + ", not a regular file");
  // Non-blocking: a FIFO swapped in after the stat must not block the open.
  fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd_ < 0) {
    const int err = errno;
    refuse(std::string("cannot open: ") + std::strerror(err));
  }
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    refuse("is not a regular file");
  }
  size_ = static_cast<std::uint64_t>(st.st_size);
  if (size_ > max_bytes) {
    ::close(fd_);
    fd_ = -1;
    refuse("is " + std::to_string(size_) + " bytes, more than the " + std::to_string(max_bytes) +
           " bytes it can be at most");
  }
}

BoundedReader::~BoundedReader() {
  if (fd_ >= 0) ::close(fd_);
}

bool BoundedReader::read(void* data, std::size_t n) {
  // Never more than the size seen at open (plus the byte that tells it grew).
  if (n > size_ + 1 - done_) return false;
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t got = ::read(fd_, p, n);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "cannot read " + what_ + " " + path_.string());
    }
    if (got == 0) return false;
    p += got;
    n -= static_cast<std::size_t>(got);
    done_ += static_cast<std::uint64_t>(got);
  }
  return true;
}

std::string BoundedReader::read_rest() {
  std::string out(static_cast<std::size_t>(size_ - std::min(size_, done_)), '\0');
  if (!out.empty() && !read(out.data(), out.size()))
    throw RefusedError(what_ + " " + path_.string() + ": shrank while being read");
  if (!at_end()) throw RefusedError(what_ + " " + path_.string() + ": grew while being read");
  return out;
}

bool BoundedReader::at_end() {
  char c;
  for (;;) {
    const ssize_t got = ::read(fd_, &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      throw std::system_error(errno, std::generic_category(), "cannot read " + what_ + " " + path_.string());
    if (got > 0) ++done_;
    return got == 0;
  }
}

// ---------------------------------------------------------------- AtomicFile

AtomicFile::AtomicFile(fs::path target) {
  if (target.filename().empty()) throw std::invalid_argument("AtomicFile: '" + target.string() + "' names no file");
  target_ = resolve_link_chain(target);
  mode_t old_mode = 0;
  if (const std::string why = replace_refusal(target_, &old_mode); !why.empty())
    throw RefusedError(named("cannot write", target, target_) + ": " + why);
  static std::atomic<unsigned> counter{0};
  const fs::path dir = target_.parent_path();
  // Same directory as the target: rename(2) is atomic only within one file system. The
  // name is unique per process and call, and O_EXCL never reuses someone else's file.
  for (int attempt = 0;; ++attempt) {
    const std::string name =
        temp_prefix(target_) + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
    temp_ = dir.empty() ? fs::path(name) : dir / name;
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) break;
    if (errno != EEXIST || attempt > 100) {
      throw_errno(errno, "cannot create temporary file " + temp_.string() + " for " + target_.string());
    }
  }
  // A checkpoint the user made private (0600) stays private.
  if (S_ISREG(old_mode)) (void)::fchmod(fd_, old_mode & 07777);
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
  // Checked again: something else may have been put there while the data was written.
  if (const std::string why = replace_refusal(target_, nullptr); !why.empty()) {
    ::unlink(temp_.c_str());
    throw RefusedError("cannot write " + target_.string() + ": " + why);
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
  // Checked before the open: opening a FIFO for writing blocks, opening a device may act.
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw RefusedError("metrics file " + path_.string() + ": is " + describe_file_type(st.st_mode) +
                       ", not a regular file");
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0666);
  if (fd_ < 0) throw_errno(errno, "cannot open metrics file " + path_.string());
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw RefusedError("metrics file " + path_.string() + ": is not a regular file");
  }
  (void)::fcntl(fd_, F_SETFL, O_APPEND);  // blocking again
  if (truncate && ::ftruncate(fd_, 0) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw_errno(err, "cannot truncate metrics file " + path_.string());
  }
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

// ---------------------------------------------------------------- interrupts

InterruptHandlers::InterruptHandlers() {
  if (g_handlers_installed.exchange(true)) throw std::logic_error("InterruptHandlers: already installed");
  g_interrupt.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  ::sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, &g_old_int);
  ::sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptHandlers::~InterruptHandlers() {
  ::sigaction(SIGINT, &g_old_int, nullptr);
  ::sigaction(SIGTERM, &g_old_term, nullptr);
  g_interrupt.store(0);
  g_handlers_installed.store(false);
}

const std::atomic<int>& InterruptHandlers::flag() noexcept { return g_interrupt; }

std::string signal_name(int sig) {
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

}  // namespace resnet18
