// Tests of atomic file replacement, guarded file access, the metrics writer, the progress bar and interrupt handling.
#include <doctest/doctest.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "data_test_files.hpp"
#include "util.hpp"

using namespace resnet18;
using namespace resnet18::testing;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t entries(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

std::vector<nlohmann::json> read_json_lines(const fs::path& file) {
  std::ifstream in(file);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string read_stream(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  for (int c; (c = std::fgetc(f)) != EOF;) s.push_back(static_cast<char>(c));
  return s;
}

// Lowers the file-size limit so that write(2) fails with EFBIG, as on a full disk.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = saved_;
    lim.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &lim);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = nullptr;
};

// f() as a user without privileges: as is when not root (root passes every permission
// check), else in a child process switched to nobody (65534). The test directory is
// opened to others for it.
template <class F>
bool unprivileged(const fs::path& dir, F f) {
  if (::geteuid() != 0) return f();
  fs::permissions(dir, fs::perms::all, fs::perm_options::add);
  const pid_t pid = ::fork();
  if (pid == 0) {
    bool ok = false;
    try {
      ok = ::setgid(65534) == 0 && ::setuid(65534) == 0 && f();
    } catch (...) {
    }
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

template <class F>
std::string refusal_of(F f) {
  try {
    f();
  } catch (const RefusedError& e) {
    return e.what();
  }
  return "";
}

// A bound Unix socket at `path`; closed on destruction (the entry stays).
struct Socket {
  int fd = -1;
  explicit Socket(const fs::path& path) {
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~Socket() { ::close(fd); }
};

}  // namespace

TEST_SUITE("atomic write") {
  TEST_CASE("the target is replaced completely, longer or shorter, and no temporary is left") {
    TempDir dir;
    const fs::path target = dir / "checkpoint.bin";
    write_file_atomic(target, "first version, rather long");
    CHECK(slurp(target) == "first version, rather long");
    write_file_atomic(target, "short");
    CHECK(slurp(target) == "short");
    const std::string big(3 << 20, 'x');
    write_file_atomic(target, [&](AtomicFile& f) {
      for (std::size_t i = 0; i < big.size(); i += 65536) f.write(big.data() + i, 65536);
    });
    CHECK(slurp(target) == big);
    write_file_atomic(target, "");
    CHECK(fs::file_size(target) == 0);
    CHECK(entries(dir.path()) == 1);
  }

  TEST_CASE("a producer that throws leaves the old file and no temporary") {
    TempDir dir;
    const fs::path target = dir / "state.json";
    write_file_atomic(target, "old");
    CHECK_THROWS_WITH(write_file_atomic(target,
                                        [](AtomicFile& f) {
                                          f.write("new, but half");
                                          throw std::runtime_error("killed while saving");
                                        }),
                      "killed while saving");
    CHECK(slurp(target) == "old");
    CHECK(entries(dir.path()) == 1);
  }

  TEST_CASE("an uncommitted AtomicFile (a run killed while saving) leaves the old file") {
    TempDir dir;
    const fs::path target = dir / "state.json";
    write_file_atomic(target, "old");
    {
      AtomicFile f(target);
      f.write("partial new content");
      CHECK(fs::exists(f.temp_path()));
      CHECK(f.temp_path().parent_path() == target.parent_path());
      CHECK(slurp(target) == "old");
    }
    CHECK(slurp(target) == "old");
    CHECK(entries(dir.path()) == 1);
  }

  TEST_CASE("a failing write(2) names the path and errno text and leaves the old file") {
    TempDir dir;
    const fs::path target = dir / "weights.bin";
    write_file_atomic(target, "old weights");
    std::string msg;
    {
      const FileSizeLimit limit(4096);
      try {
        write_file_atomic(target, std::string(100000, 'w'));
      } catch (const std::system_error& e) {
        msg = e.what();
        CHECK(e.code().value() == EFBIG);
      }
    }
    CHECK(msg.find("cannot write ") != std::string::npos);
    CHECK(msg.find(target.string()) != std::string::npos);
    CHECK(msg.find("File too large") != std::string::npos);
    CHECK(slurp(target) == "old weights");
    CHECK(entries(dir.path()) == 1);
  }

  TEST_CASE("a missing directory is an error naming the path") {
    TempDir dir;
    const fs::path target = dir / "no" / "such" / "file.txt";
    try {
      write_file_atomic(target, "x");
      FAIL("no exception");
    } catch (const std::system_error& e) {
      const std::string msg = e.what();
      CHECK(msg.find(target.string()) != std::string::npos);
      CHECK(msg.find("No such file or directory") != std::string::npos);
      CHECK(e.code().value() == ENOENT);
    }
  }

  TEST_CASE("a relative path in the working directory works") {
    TempDir dir;
    const fs::path cwd = fs::current_path();
    fs::current_path(dir.path());
    write_file_atomic("relative.txt", "here");
    fs::current_path(cwd);
    CHECK(slurp(dir / "relative.txt") == "here");
  }
}

TEST_SUITE("guarded files") {
  // A checkpoint written through a temporary and a rename would replace whatever the
  // target is: as root, `--checkpoint /dev/null` replaced the device node with a file.
  TEST_CASE("a device node, FIFO, socket or directory is never replaced, and no temporary is left") {
    TempDir dir;
    const fs::path fifo = dir / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const fs::path sub = dir / "sub";
    fs::create_directory(sub);
    const Socket sock(dir / "sock");
    for (const fs::path& target : {fifo, sub, dir / "sock"}) {
      CAPTURE(target);
      CHECK_THROWS_AS(write_file_atomic(target, "data"), RefusedError);
      CHECK_THROWS_AS(check_writable_location(target, "--checkpoint"), RefusedError);
    }
    const fs::path device = scratch_device(dir.path());
    if (device.empty()) {
      MESSAGE("no device node can be made here safely: the device case is skipped");
    } else {
      CHECK_THROWS_WITH_AS(write_file_atomic(device, "data"),
                           ("cannot write " + device.string() +
                            ": is a character device, not a regular file: the trainer replaces only regular files")
                               .c_str(),
                           RefusedError);
      CHECK(fs::is_character_file(device));
    }
    CHECK_THROWS_WITH_AS(write_file_atomic(fifo, "data"), doctest::Contains("is a FIFO (named pipe)"), RefusedError);
    CHECK_THROWS_WITH_AS(write_file_atomic(sub, "data"), doctest::Contains("is a directory"), RefusedError);
    CHECK_THROWS_WITH_AS(write_file_atomic(dir / "sock", "data"), doctest::Contains("is a socket"), RefusedError);
    CHECK(fs::is_fifo(fifo));
    CHECK(fs::is_directory(sub));
    CHECK(fs::is_empty(sub));
    CHECK(fs::is_socket(dir / "sock"));
    CHECK(entries(dir.path()) == (device.empty() || device.parent_path() != dir.path() ? 3u : 4u));
  }

  TEST_CASE("something put in the target's place while the data is written is not replaced either") {
    TempDir dir;
    const fs::path target = dir / "checkpoint.bin";
    AtomicFile f(target);
    f.write("new");
    REQUIRE(::mkfifo(target.c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(f.commit(), doctest::Contains("is a FIFO"), RefusedError);
    CHECK(fs::is_fifo(target));
    CHECK(entries(dir.path()) == 1);  // the temporary is gone
  }

  // Replacing a link by a regular file would silently detach the user's layout (a link
  // into a larger disk); the file the link names is replaced instead, and the link kept.
  TEST_CASE("a symbolic link is followed: the file it names is replaced, the link stays") {
    TempDir dir;
    fs::create_directory(dir / "disk");
    const fs::path real = dir / "disk" / "run.ckpt";
    write_file_atomic(real, "old");
    fs::create_symlink("disk/run.ckpt", dir / "link1");          // relative
    fs::create_symlink(dir / "link1", dir / "link2");            // absolute, to a link
    write_file_atomic(dir / "link2", "new through two links");
    CHECK(fs::is_symlink(dir / "link1"));
    CHECK(fs::is_symlink(dir / "link2"));
    CHECK(slurp(real) == "new through two links");
    CHECK(entries(dir / "disk") == 1);
    CHECK(entries(dir.path()) == 3);
    {
      AtomicFile f(dir / "link2");
      CHECK(f.target() == dir / "disk/run.ckpt");
      CHECK(f.temp_path().parent_path() == dir / "disk");  // same file system as the real target
    }
    // A dangling link: the file is created where it points.
    fs::create_symlink("disk/later.ckpt", dir / "dangling");
    write_file_atomic(dir / "dangling", "created");
    CHECK(fs::is_symlink(dir / "dangling"));
    CHECK(slurp(dir / "disk" / "later.ckpt") == "created");
    // A link to a device, or a loop: refused, links untouched.
    const fs::path device = scratch_device(dir / "disk");
    if (!device.empty()) {
      fs::create_symlink(device, dir / "null");
      CHECK_THROWS_WITH_AS(write_file_atomic(dir / "null", "x"),
                           doctest::Contains(("(a link to " + device.string() + "): is a character device").c_str()),
                           RefusedError);
      CHECK(fs::is_symlink(dir / "null"));
      CHECK(fs::is_character_file(device));
    }
    fs::create_symlink("loop-b", dir / "loop-a");
    fs::create_symlink("loop-a", dir / "loop-b");
    CHECK_THROWS_WITH_AS(write_file_atomic(dir / "loop-a", "x"), doctest::Contains("loop"), RefusedError);
    CHECK(fs::is_symlink(dir / "loop-a"));
  }

  TEST_CASE("the replacement keeps the old file's permission bits, and a read-only file is refused") {
    TempDir dir;
    const fs::path target = dir / "private.ckpt";
    write_file_atomic(target, "old");
    fs::permissions(target, fs::perms::owner_read | fs::perms::owner_write);
    write_file_atomic(target, "new");
    CHECK(slurp(target) == "new");
    CHECK(fs::status(target).permissions() == (fs::perms::owner_read | fs::perms::owner_write));
    fs::permissions(target, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    CHECK(unprivileged(dir.path(), [&] {
      return refusal_of([&] { write_file_atomic(target, "newer"); }).find("is read-only") != std::string::npos;
    }));
    CHECK(slurp(target) == "new");
  }

  TEST_CASE("a location where no file can be created is reported before anything is written") {
    TempDir dir;
    CHECK_NOTHROW(check_writable_location(dir / "new.ckpt", "--checkpoint"));
    CHECK(entries(dir.path()) == 0);  // the probe is removed
    write_file_atomic(dir / "file", "x");
    CHECK_THROWS_WITH_AS(check_writable_location(dir / "missing" / "a.ckpt", "--checkpoint"),
                         ("--checkpoint " + (dir / "missing" / "a.ckpt").string() + ": its directory " +
                          (dir / "missing").string() + " does not exist")
                             .c_str(),
                         RefusedError);
    CHECK_THROWS_WITH_AS(check_writable_location(dir / "file" / "a.ckpt", "--metrics"),
                         doctest::Contains("--metrics"), RefusedError);
    fs::create_directory(dir / "ro");
    fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                                    fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
    CHECK(unprivileged(dir.path(), [&] {
      return refusal_of([&] { check_writable_location(dir / "ro" / "a.ckpt", "--checkpoint"); })
                 .find("cannot create a file in " + (dir / "ro").string() + " (Permission denied)") != std::string::npos;
    }));
    CHECK(fs::is_empty(dir / "ro"));
    fs::remove(dir / "ro");
    // /proc takes no new files, even from root.
    CHECK_THROWS_WITH_AS(check_writable_location("/proc/resnet18-test.ckpt", "--checkpoint"),
                         doctest::Contains("cannot create a file in /proc"), RefusedError);
    CHECK(entries(dir.path()) == 1);
  }

  // A save killed between creating its temporary and the rename leaves
  // ".<name>.tmp.<pid>.<n>"; only exactly those of dead processes are removed.
  TEST_CASE("stale temporaries of a target are removed, and nothing else") {
    TempDir dir;
    const fs::path target = dir / "run.ckpt";
    write_file_atomic(target, "checkpoint");
    const std::string dead = std::to_string(dead_pid());
    const std::string alive = std::to_string(::getppid());
    const std::vector<std::string> stale = {".run.ckpt.tmp." + dead + ".0", ".run.ckpt.tmp." + dead + ".17"};
    const std::vector<std::string> kept = {
        ".run.ckpt.tmp." + alive + ".0",         // its process still runs
        ".run.ckpt.tmp." + dead,                  // not our pattern
        ".run.ckpt.tmp." + dead + ".1x",          // not our pattern
        ".run.ckpt.tmp.x" + dead + ".1",          // not our pattern
        "run.ckpt.tmp." + dead + ".1",            // no leading dot
        ".other.ckpt.tmp." + dead + ".1",         // another target's
        ".run.ckpt.tmp." + dead + ".2.partial",   // not our pattern
    };
    for (const auto& n : stale) write_file_atomic(dir / n, "partial");
    for (const auto& n : kept) write_file_atomic(dir / n, "someone else's");
    fs::create_directory(dir / (".run.ckpt.tmp." + dead + ".3"));             // a directory: kept
    fs::create_symlink("run.ckpt", dir / (".run.ckpt.tmp." + dead + ".4"));  // a link: kept
    const auto removed = remove_stale_temporaries(target);
    CHECK(removed.size() == stale.size());
    for (const auto& n : stale) CHECK_FALSE(fs::exists(fs::symlink_status(dir / n)));
    for (const auto& n : kept) CHECK(slurp(dir / n) == "someone else's");
    CHECK(fs::is_directory(dir / (".run.ckpt.tmp." + dead + ".3")));
    CHECK(fs::is_symlink(dir / (".run.ckpt.tmp." + dead + ".4")));
    CHECK(slurp(target) == "checkpoint");
    // Through a link, the real target's directory is cleaned.
    fs::create_directory(dir / "disk");
    write_file_atomic(dir / "disk" / ("." + std::string("real.ckpt") + ".tmp." + dead + ".5"), "partial");
    fs::create_symlink("disk/real.ckpt", dir / "link.ckpt");
    CHECK(remove_stale_temporaries(dir / "link.ckpt").size() == 1);
    CHECK(entries(dir / "disk") == 0);
  }

  TEST_CASE("a bounded reader never opens a device or FIFO, and refuses files over its bound") {
    TempDir dir;
    const fs::path fifo = dir / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(BoundedReader("/dev/zero", "checkpoint", 100),
                         "checkpoint /dev/zero: is a character device, not a regular file", RefusedError);
    CHECK_THROWS_WITH_AS(BoundedReader(fifo, "checkpoint", 100), doctest::Contains("is a FIFO"), RefusedError);
    CHECK_THROWS_WITH_AS(BoundedReader(dir.path(), "checkpoint", 100), doctest::Contains("is a directory"),
                         RefusedError);
    write_file_atomic(dir / "f", "0123456789");
    CHECK_THROWS_WITH_AS(BoundedReader(dir / "f", "metrics", 9),
                         doctest::Contains("is 10 bytes, more than the 9 bytes it can be at most"), RefusedError);
    // A sparse file of 1 TiB: refused from its size, nothing read.
    {
      const int fd = ::open((dir / "huge").c_str(), O_CREAT | O_WRONLY, 0600);
      REQUIRE(fd >= 0);
      REQUIRE(::ftruncate(fd, off_t(1) << 40) == 0);
      ::close(fd);
    }
    CHECK_THROWS_WITH_AS(BoundedReader(dir / "huge", "metrics", 1 << 20), doctest::Contains("1099511627776 bytes"),
                         RefusedError);
    BoundedReader r(dir / "f", "metrics", 10);
    CHECK(r.size() == 10);
    char head[4];
    REQUIRE(r.read(head, 4));
    CHECK(std::string(head, 4) == "0123");
    CHECK_FALSE(r.read(head, 8));  // more than is left: not even attempted
    CHECK(r.read_rest() == "456789");
    CHECK(r.at_end());
  }
}

TEST_SUITE("metrics") {
  TEST_CASE("epoch records are JSON lines that parse back, appended across writers") {
    TempDir dir;
    const fs::path file = dir / "metrics.jsonl";
    {
      MetricsWriter w(file, true);
      EpochMetrics m;
      m.epoch = 1;
      m.step = 391;
      m.train_loss = 1.5;
      m.train_acc = 0.45;
      m.test_loss = 1.25;
      m.test_acc = 0.55;
      m.lr = 0.1;
      m.seconds = 12.5;
      m.images_per_s = 4000;
      m.extra = {{"lookahead_k", 5}, {"lookahead_alpha", 0.5}};
      w.write(m);
      // Each line is on disk as soon as write returns.
      CHECK(read_json_lines(file).size() == 1);
      EpochMetrics no_test;
      no_test.epoch = 2;
      no_test.train_loss = std::numeric_limits<double>::quiet_NaN();
      w.write(no_test);
    }
    {
      MetricsWriter w(file);  // appends
      w.write(nlohmann::json{{"event", "done"}, {"best_test_acc", 0.9}});
    }
    const auto lines = read_json_lines(file);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0]["epoch"] == 1);
    CHECK(lines[0]["step"] == 391);
    CHECK(lines[0]["train_loss"] == 1.5);
    CHECK(lines[0]["train_acc"] == 0.45);
    CHECK(lines[0]["test_loss"] == 1.25);
    CHECK(lines[0]["test_acc"] == 0.55);
    CHECK(lines[0]["lr"] == 0.1);
    CHECK(lines[0]["seconds"] == 12.5);
    CHECK(lines[0]["images_per_s"] == 4000);
    CHECK(lines[0]["lookahead_k"] == 5);
    CHECK(lines[0]["lookahead_alpha"] == 0.5);
    CHECK(lines[1]["epoch"] == 2);
    CHECK(lines[1]["train_loss"].is_null());  // NaN
    CHECK_FALSE(lines[1].contains("test_loss"));
    CHECK(lines[2]["event"] == "done");
    // Fields in the order written, for people reading the file.
    CHECK(slurp(file).rfind("{\"epoch\":1,\"step\":391,\"train_loss\":1.5,", 0) == 0);

    MetricsWriter fresh(file, true);
    CHECK(fs::file_size(file) == 0);
  }

  TEST_CASE("a FIFO or device as the metrics file is refused unopened (opening a FIFO would block)") {
    TempDir dir;
    const fs::path fifo = dir / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(MetricsWriter(fifo, true), doctest::Contains("is a FIFO"), RefusedError);
    if (const fs::path device = scratch_device(dir.path()); !device.empty())
      CHECK_THROWS_WITH_AS(MetricsWriter(device, true), doctest::Contains("is a character device"), RefusedError);
    CHECK_THROWS_WITH_AS(MetricsWriter(dir.path()), doctest::Contains("is a directory"), RefusedError);
    CHECK(fs::is_fifo(fifo));
  }

  TEST_CASE("an unwritable metrics path is an error naming it") {
    TempDir dir;
    const fs::path file = dir / "missing" / "metrics.jsonl";
    CHECK_THROWS_WITH_AS(MetricsWriter{file},
                         ("cannot open metrics file " + file.string() + ": No such file or directory").c_str(),
                         std::system_error);
  }
}

TEST_SUITE("progress") {
  TEST_CASE("format_duration") {
    CHECK(format_duration(0) == "0:00");
    CHECK(format_duration(65.4) == "1:05");
    CHECK(format_duration(3723) == "1:02:03");
    CHECK(format_duration(-1) == "?");
    CHECK(format_duration(std::numeric_limits<double>::infinity()) == "?");
  }

  TEST_CASE("plain mode prints whole lines, one per interval") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    {
      ProgressBar::Options o;
      o.out = f;
      o.mode = ProgressBar::Mode::plain;
      o.log_every = std::chrono::duration<double>(0);
      ProgressBar bar("epoch 3", 10, o);
      CHECK_FALSE(bar.is_terminal());
      bar.update(3, 96, 1.23456, 0.5);
      CHECK(bar.last_line().find("epoch 3 3/10  loss 1.2346  acc  50.0%") == 0);
      CHECK(bar.last_line().find("ETA ") != std::string::npos);
      bar.update(10, 320, 1.0, 0.625);
      bar.finish("test acc 61.0%");
    }
    const std::string out = read_stream(f);
    std::fclose(f);
    CHECK(out.find('\r') == std::string::npos);
    CHECK(out.find("\x1b") == std::string::npos);
    CHECK(std::count(out.begin(), out.end(), '\n') == 3);
    CHECK(out.find("epoch 3 10/10  loss 1.0000  acc  62.5%") != std::string::npos);
    CHECK(out.substr(out.size() - 17) == "  test acc 61.0%\n");
  }

  TEST_CASE("plain mode stays quiet between intervals") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    {
      ProgressBar::Options o;
      o.out = f;
      o.mode = ProgressBar::Mode::plain;
      o.log_every = std::chrono::duration<double>(3600);
      ProgressBar bar("train", 1000, o);
      for (std::size_t i = 1; i <= 1000; ++i) bar.update(i, i * 32, 0.5, 0.5);
      bar.finish();
    }
    const std::string out = read_stream(f);
    std::fclose(f);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
    CHECK(out.find("train 1000/1000") == 0);
  }

  TEST_CASE("terminal mode redraws one line with \\r and a bar") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    {
      ProgressBar::Options o;
      o.out = f;
      o.mode = ProgressBar::Mode::terminal;
      o.refresh = std::chrono::duration<double>(0);
      o.width = 10;
      ProgressBar bar("epoch 1", 4, o);
      CHECK(bar.is_terminal());
      bar.update(1, 8, 2.0, 0.25);
      CHECK(bar.last_line().find("epoch 1 [##........] 1/4") == 0);
      bar.update(2, 16, 1.5, 0.5);
      // Destroyed without finish(): ends the line anyway.
    }
    const std::string out = read_stream(f);
    std::fclose(f);
    CHECK(std::count(out.begin(), out.end(), '\r') == 2);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
    CHECK(out.back() == '\n');
  }
}

TEST_SUITE("interrupts") {
  TEST_CASE("the first SIGINT or SIGTERM sets the flag, and the handlers before come back") {
    struct sigaction before {};
    ::sigaction(SIGINT, nullptr, &before);
    for (int sig : {SIGINT, SIGTERM}) {
      CAPTURE(sig);
      const InterruptHandlers handlers;
      CHECK(InterruptHandlers::flag().load() == 0);
      ::raise(sig);  // delivered before raise returns
      CHECK(InterruptHandlers::flag().load() == sig);
    }
    struct sigaction after {};
    ::sigaction(SIGINT, nullptr, &after);
    CHECK((after.sa_handler == before.sa_handler));
    CHECK(signal_name(SIGINT) == "SIGINT");
    CHECK(signal_name(SIGTERM) == "SIGTERM");
  }

  // A user who presses Ctrl-C twice wants out now: the default action, so the shell sees
  // "killed by SIGINT". In a child process, which the second signal ends.
  TEST_CASE("a second signal ends the process at once, by that signal") {
    for (int sig : {SIGINT, SIGTERM}) {
      CAPTURE(sig);
      const pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        ::close(STDERR_FILENO);  // the handler's notice
        const InterruptHandlers handlers;
        ::raise(sig);
        if (InterruptHandlers::flag().load() != sig) ::_exit(3);
        ::raise(sig);
        ::_exit(4);  // survived the second
      }
      int status = 0;
      REQUIRE(::waitpid(pid, &status, 0) == pid);
      CHECK(WIFSIGNALED(status));
      if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == sig);
      if (WIFEXITED(status)) CHECK(WEXITSTATUS(status) == 0);  // 3 or 4 names the failure
    }
  }
}
