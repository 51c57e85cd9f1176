// The training loop and the trainer's checkpoint file.
#include "trainer.hpp"

#include <zlib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <new>
#include <numbers>
#include <sstream>
#include <streambuf>

#include <sys/stat.h>
#include <unistd.h>

#include "augment.hpp"
#include "resources.hpp"

namespace resnet18 {

namespace fs = std::filesystem;
using json = nlohmann::json;

double scheduled_lr(const ScheduleOptions& s, std::int64_t step, std::size_t steps_per_epoch, int epochs) {
  const double spe = static_cast<double>(std::max<std::size_t>(steps_per_epoch, 1));
  const double t = static_cast<double>(step);
  const double warmup_steps = std::floor(s.warmup * spe);
  if (warmup_steps > 0 && t < warmup_steps) return s.lr * (t + 1) / warmup_steps;
  switch (s.kind) {
    case Schedule::none: return s.lr;
    case Schedule::step: {
      const double epoch = std::floor(t / spe);
      return s.lr * std::pow(s.gamma, std::floor(epoch / s.step_size));
    }
    case Schedule::cosine: {
      const double total = spe * epochs - warmup_steps;
      if (total <= 0) return s.lr;
      const double progress = std::min(1.0, (t - warmup_steps) / total);
      return 0.5 * s.lr * (1 + std::cos(std::numbers::pi * progress));
    }
  }
  return s.lr;
}

// ---------------------------------------------------------------- checkpoint file

namespace {

// Layout: magic, u32 version, then three sections (trainer state as JSON text, the
// model's own format, nestla's own format), each as u64 length + bytes, then a CRC-32 of
// everything before it. Lengths let each loader see exactly its bytes (nestla's reads to
// the end of its stream); the CRC catches damage the model's format would not.
constexpr char kMagic[8] = {'N', 'L', 'R', '1', '8', 'T', 'R', 'N'};
constexpr std::uint32_t kVersion = 1;

// A read-only stream over bytes already in memory, so the sections are not copied again.
class MemoryBuf : public std::streambuf {
 public:
  MemoryBuf(const char* data, std::size_t size) {
    char* p = const_cast<char*>(data);  // get area only: never written through
    setg(p, p, p + size);
  }
};

class CrcWriter {
 public:
  explicit CrcWriter(AtomicFile& f) : f_(f) {}
  void write(const void* data, std::size_t n) {
    const auto* p = static_cast<const Bytef*>(data);
    for (std::size_t done = 0; done < n;) {  // zlib takes uInt lengths
      const auto chunk = static_cast<uInt>(std::min<std::size_t>(n - done, 1u << 30));
      crc_ = crc32(crc_, p + done, chunk);
      done += chunk;
    }
    f_.write(data, n);
  }
  template <class V>
  void put(V v) {
    write(&v, sizeof v);
  }
  void section(const std::string& bytes) {
    put<std::uint64_t>(bytes.size());
    write(bytes.data(), bytes.size());
  }
  [[nodiscard]] std::uint32_t crc() const { return static_cast<std::uint32_t>(crc_); }

 private:
  AtomicFile& f_;
  uLong crc_ = crc32(0L, Z_NULL, 0);
};

std::uint32_t crc_of(const char* data, std::size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (std::size_t done = 0; done < n;) {
    const auto chunk = static_cast<uInt>(std::min<std::size_t>(n - done, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data + done), chunk);
    done += chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

[[noreturn]] void bad_checkpoint(const fs::path& path, const std::string& what) {
  throw TrainCheckpointError("checkpoint " + path.string() + ": " + what);
}

}  // namespace

void save_train_checkpoint(const fs::path& path, const json& trainer_state, const TrainingBackend& backend) {
  std::ostringstream model_out, opt_out;
  backend.save_model(model_out);
  backend.save_optimizer(opt_out);
  const std::string state = trainer_state.dump();
  const std::string model = std::move(model_out).str();
  const std::string opt = std::move(opt_out).str();
  write_file_atomic(path, [&](AtomicFile& f) {
    CrcWriter w(f);
    w.write(kMagic, sizeof kMagic);
    w.put<std::uint32_t>(kVersion);
    w.section(state);
    w.section(model);
    w.section(opt);
    const std::uint32_t crc = w.crc();
    f.write(&crc, sizeof crc);
  });
}

std::size_t TrainingBackend::model_state_bound() const {
  std::ostringstream out;
  save_model(out);
  return out.str().size();
}

std::size_t TrainingBackend::optimizer_state_bound() const {
  const std::size_t model = model_state_bound();
  const std::size_t most = std::numeric_limits<std::size_t>::max();
  return model > (most - (1u << 20)) / 8 ? most : 8 * model + (1u << 20);
}

json load_train_checkpoint(const fs::path& path, TrainingBackend& backend) {
  const char* names[3] = {"trainer state", "model", "optimizer"};
  const std::uint64_t bounds[3] = {max_trainer_state_bytes, backend.model_state_bound(),
                                   backend.optimizer_state_bound()};
  const std::size_t header = sizeof kMagic + sizeof(std::uint32_t);
  std::uint64_t most = header + 3 * sizeof(std::uint64_t) + sizeof(std::uint32_t);
  for (std::uint64_t b : bounds) most = b > ~std::uint64_t(0) - most ? ~std::uint64_t(0) : most + b;
  std::optional<BoundedReader> in;
  try {
    in.emplace(path, "checkpoint", most);
  } catch (const RefusedError& e) {
    throw TrainCheckpointError(std::string(e.what()) + " (for this model and optimizer)");
  }
  // Read section by section, each length checked before its bytes are read; the CRC
  // covers all of it and is checked before anything is parsed.
  std::string buf(header, '\0');
  if (!in->read(buf.data(), header)) bad_checkpoint(path, "truncated (" + std::to_string(in->size()) + " bytes)");
  if (std::memcmp(buf.data(), kMagic, sizeof kMagic) != 0)
    bad_checkpoint(path, "not a resnet18_train checkpoint (bad magic)");
  std::uint32_t version;
  std::memcpy(&version, buf.data() + sizeof kMagic, sizeof version);
  if (version != kVersion)
    bad_checkpoint(path,
                   "format version " + std::to_string(version) + ", this build reads " + std::to_string(kVersion));
  std::size_t offsets[3], lengths[3];
  for (int i = 0; i < 3; ++i) {
    std::uint64_t n;
    if (!in->read(&n, sizeof n)) bad_checkpoint(path, std::string("truncated before the ") + names[i] + " section");
    if (n > bounds[i])
      bad_checkpoint(path, std::string("declares a ") + std::to_string(n) + "-byte " + names[i] +
                               " section; this model and optimizer's is at most " + std::to_string(bounds[i]) +
                               " bytes (a checkpoint of another run, or a damaged one)");
    if (n > in->size() - std::min<std::uint64_t>(in->size(), buf.size() + sizeof n))
      bad_checkpoint(path, std::string("truncated: the ") + names[i] + " section runs past the end of the file");
    buf.append(reinterpret_cast<const char*>(&n), sizeof n);
    offsets[i] = buf.size();
    lengths[i] = static_cast<std::size_t>(n);
    buf.resize(buf.size() + lengths[i]);
    if (!in->read(buf.data() + offsets[i], lengths[i]))
      bad_checkpoint(path, std::string("truncated in the ") + names[i] + " section");
  }
  std::uint32_t stored;
  if (!in->read(&stored, sizeof stored)) bad_checkpoint(path, "truncated before the checksum");
  if (!in->at_end()) bad_checkpoint(path, "trailing bytes after the checksum");
  if (crc_of(buf.data(), buf.size()) != stored)
    bad_checkpoint(path, "checksum mismatch: the file is damaged or truncated");
  std::pair<const char*, std::size_t> sections[3];
  for (int i = 0; i < 3; ++i) sections[i] = {buf.data() + offsets[i], lengths[i]};

  json state;
  try {
    state = json::parse(sections[0].first, sections[0].first + sections[0].second);
  } catch (const json::exception& e) {
    bad_checkpoint(path, std::string("trainer state: ") + e.what());
  }
  if (!state.is_object() || !state.contains("epoch") || !state.contains("step"))
    bad_checkpoint(path, "trainer state lacks epoch/step");

  // The model loads first; should the optimizer then refuse its part, the model goes back.
  std::ostringstream backup;
  backend.save_model(backup);
  try {
    MemoryBuf mb(sections[1].first, sections[1].second);
    std::istream ms(&mb);
    backend.load_model(ms);
  } catch (const std::exception& e) {
    bad_checkpoint(path, std::string("model: ") + e.what());
  }
  try {
    MemoryBuf ob(sections[2].first, sections[2].second);
    std::istream os(&ob);
    backend.load_optimizer(os);
  } catch (const std::exception& e) {
    const std::string old = std::move(backup).str();
    MemoryBuf rb(old.data(), old.size());
    std::istream rs(&rb);
    backend.load_model(rs);
    bad_checkpoint(path, std::string("optimizer: ") + e.what());
  }
  return state;
}

// ---------------------------------------------------------------- the loop

namespace {

// Where the run stands; all of it goes into the checkpoint, so a resumed run continues
// mid-epoch with the same batches and the same running averages.
struct Position {
  int epoch = 0;                 // epochs completed
  std::size_t batches_done = 0;  // in the epoch in progress
  std::int64_t step = 0;
  double loss_sum = 0;  // sum of batch mean loss x batch size, this epoch
  std::int64_t correct = 0, images = 0;
  std::optional<double> best_test_acc;
  int best_epoch = 0;
  std::optional<double> final_test_acc, final_test_loss;
};

json opt_to_json(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }
std::optional<double> opt_from_json(const json& j) {
  return j.is_null() ? std::nullopt : std::optional<double>(j.get<double>());
}

json to_json(const Position& p, const json& signature) {
  return json{{"epoch", p.epoch},
              {"batches_done", p.batches_done},
              {"step", p.step},
              {"loss_sum", p.loss_sum},
              {"correct", p.correct},
              {"images", p.images},
              {"best_test_acc", opt_to_json(p.best_test_acc)},
              {"best_epoch", p.best_epoch},
              {"final_test_acc", opt_to_json(p.final_test_acc)},
              {"final_test_loss", opt_to_json(p.final_test_loss)},
              {"signature", signature}};
}

Position position_from(const json& j, const fs::path& path) {
  try {
    Position p;
    p.epoch = j.at("epoch").get<int>();
    p.batches_done = j.at("batches_done").get<std::size_t>();
    p.step = j.at("step").get<std::int64_t>();
    p.loss_sum = j.at("loss_sum").get<double>();
    p.correct = j.at("correct").get<std::int64_t>();
    p.images = j.at("images").get<std::int64_t>();
    p.best_test_acc = opt_from_json(j.at("best_test_acc"));
    p.best_epoch = j.at("best_epoch").get<int>();
    p.final_test_acc = opt_from_json(j.at("final_test_acc"));
    p.final_test_loss = opt_from_json(j.at("final_test_loss"));
    return p;
  } catch (const json::exception& e) {
    bad_checkpoint(path, std::string("trainer state: ") + e.what());
  }
}

// A resume must continue the same run: every field of the signature must agree.
void check_signature(const json& saved, const json& now, const fs::path& path) {
  for (const auto& [key, value] : now.items()) {
    if (!saved.contains(key))
      bad_checkpoint(path, "was written by a run without '" + key + "' in its signature");
    if (saved.at(key) != value)
      bad_checkpoint(path, "was written by another run: " + key + " is " + saved.at(key).dump() + " there, " +
                               value.dump() + " now");
  }
}

// Keeps the records of the epochs the checkpoint holds, so a run killed after writing
// an epoch's line but before its checkpoint does not leave that epoch twice. The file is
// read only up to a bound: the run header and resume records (64 MiB) plus 4 KiB per
// epoch kept (an epoch's line is a few hundred bytes).
void trim_metrics(const fs::path& path, int epochs_kept) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  const std::uint64_t bound = (std::uint64_t(64) << 20) + std::uint64_t(std::max(epochs_kept, 0)) * 4096;
  BoundedReader reader(path, "--metrics", bound);
  std::istringstream in(reader.read_rest());
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a line cut short by a kill
    if (j.contains("summary")) continue;
    if (j.contains("epoch") && j["epoch"].is_number() && j["epoch"].get<int>() > epochs_kept) continue;
    kept += line;
    kept += '\n';
  }
  write_file_atomic(path, kept);
}

// Whether two paths name the same file (links followed), existing or not.
bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec);
  const fs::path ra = fs::weakly_canonical(fs::absolute(resolve_link_chain(a), ec), ec);
  const fs::path rb = fs::weakly_canonical(fs::absolute(resolve_link_chain(b), ec), ec);
  return ra == rb;
}

std::string percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * v);
  return buf;
}

std::string fixed4(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

struct EvalResult {
  double loss = 0, acc = 0;
};

bool is_set(const std::atomic<int>* flag) { return flag != nullptr && flag->load(std::memory_order_relaxed) != 0; }

// nullopt when `interrupt` was set before the evaluation finished.
std::optional<EvalResult> evaluate(TrainingBackend& backend, Batcher& batcher, bool slow, ProgressBar* bar,
                                   const std::atomic<int>* interrupt) {
  if (slow) backend.swap_slow_weights();
  double loss_sum = 0;
  std::int64_t correct = 0, images = 0;
  std::size_t batches = 0;
  bool interrupted = false;
  try {
    batcher.start_epoch(0);
    while (batcher.next() != 0) {
      if (is_set(interrupt)) {
        interrupted = true;
        break;
      }
      const BatchResult r = backend.evaluate_batch(batcher);
      loss_sum += r.loss * r.batch;
      correct += r.correct;
      images += r.batch;
      ++batches;
      if (bar)
        bar->update(batches, static_cast<std::size_t>(images), loss_sum / double(images),
                    double(correct) / double(images));
    }
  } catch (...) {
    if (slow) backend.swap_slow_weights();
    throw;
  }
  if (slow) backend.swap_slow_weights();
  if (interrupted) return std::nullopt;
  if (images == 0) return EvalResult{};
  return EvalResult{loss_sum / static_cast<double>(images), static_cast<double>(correct) / static_cast<double>(images)};
}

}  // namespace

std::vector<std::string> check_files(const TrainerOptions& o) {
  if (!o.resume.empty()) {
    struct stat st {};
    if (::stat(o.resume.c_str(), &st) != 0) {
      const int err = errno;
      throw RefusedError("--resume " + o.resume.string() + ": cannot open: " + std::strerror(err));
    }
    if (!S_ISREG(st.st_mode))
      throw RefusedError("--resume " + o.resume.string() + ": is " + describe_file_type(st.st_mode) +
                         ", not a checkpoint file");
    if (::access(o.resume.c_str(), R_OK) != 0) {
      const int err = errno;
      throw RefusedError("--resume " + o.resume.string() + ": cannot read it: " + std::strerror(err));
    }
  }
  if (!o.checkpoint.empty()) check_writable_location(o.checkpoint, "--checkpoint");
  if (!o.metrics.empty()) {
    for (const auto& [other, name] : {std::pair{&o.checkpoint, "--checkpoint"}, std::pair{&o.resume, "--resume"}})
      if (!other->empty() && same_file(o.metrics, *other))
        throw RefusedError("--metrics " + o.metrics.string() + ": is also the " + name +
                           " file; give the metrics their own file");
    const fs::path resolved = check_replaceable(o.metrics, "--metrics");
    // A fresh run appends to (or creates) it; a resume rewrites it through a temporary.
    std::error_code ec;
    if (!o.resume.empty() || !fs::exists(resolved, ec)) check_writable_location(o.metrics, "--metrics");
  }
  std::vector<std::string> notes;
  for (const fs::path* target : {&o.checkpoint, &o.metrics})
    if (!target->empty())
      for (const fs::path& p : remove_stale_temporaries(*target))
        notes.push_back("removed " + p.string() + ", a temporary file left by an interrupted save");
  return notes;
}

TrainSummary train(TrainingBackend& backend, const Dataset& train_set, const Dataset& test_set,
                   const TrainerOptions& o, std::ostream& log) {
  using Clock = std::chrono::steady_clock;
  const auto run_start = Clock::now();
  TrainSummary summary;
  if (is_set(o.interrupt)) {  // before anything is read or written
    summary.interrupted = o.interrupt->load();
    summary.stopped_early = true;
    return summary;
  }
  for (const std::string& note : check_files(o)) log << note << "\n";

  BatcherOptions bo;
  bo.batch_size = o.batch_size;
  bo.train = true;
  bo.seed = o.seed;
  bo.crop_padding = o.augment ? 4 : 0;
  bo.horizontal_flip = o.augment;
  bo.fill_images = !backend.wants_batch_indices();
  const WorkerComm* workers = o.workers && o.workers->size() > 1 ? o.workers : nullptr;
  const bool lead = !workers || workers->rank() == 0;
  if (workers) {
    bo.shards = static_cast<std::size_t>(workers->size());
    bo.shard = static_cast<std::size_t>(workers->rank());
    if (o.batch_size < bo.shards)
      throw RefusedError("--batch-size " + std::to_string(o.batch_size) + ": the global batch must give each of the " +
                         std::to_string(bo.shards) + " workers at least one image");
  }
  Batcher train_batches = allocation_for("--batch-size " + std::to_string(o.batch_size),
                                         [&] { return Batcher(train_set, bo); });
  BatcherOptions eo;
  eo.batch_size = o.eval_batch_size ? o.eval_batch_size : o.batch_size;
  eo.train = false;
  eo.fill_images = !backend.wants_batch_indices();
  Batcher test_batches = allocation_for((o.eval_batch_size ? "--eval-batch-size " : "--batch-size ") +
                                            std::to_string(eo.batch_size),
                                        [&] { return Batcher(test_set, eo); });
  const std::size_t steps_per_epoch = train_batches.batches_per_epoch();

  Position pos;
  if (!o.resume.empty()) {
    const json state = load_train_checkpoint(o.resume, backend);
    check_signature(state.value("signature", json::object()), o.signature, o.resume);
    pos = position_from(state, o.resume);
    if (pos.batches_done > steps_per_epoch)
      bad_checkpoint(o.resume, "position " + std::to_string(pos.batches_done) + " is past the epoch's " +
                                   std::to_string(steps_per_epoch) + " batches");
    log << "resumed from " << o.resume.string() << " at epoch " << pos.epoch << ", batch " << pos.batches_done
        << ", step " << pos.step << "\n";
  }

  std::optional<MetricsWriter> metrics;
  if (!o.metrics.empty()) {
    if (o.resume.empty()) {
      metrics.emplace(o.metrics, /*truncate=*/true);
      metrics->write(json{{"run", o.run_info}});
    } else {
      trim_metrics(o.metrics, pos.epoch);
      metrics.emplace(o.metrics, /*truncate=*/false);
      metrics->write(json{{"resume", {{"epoch", pos.epoch}, {"batches_done", pos.batches_done}, {"step", pos.step}}}});
    }
  }

  auto save = [&] {
    if (!o.checkpoint.empty()) save_train_checkpoint(o.checkpoint, to_json(pos, o.signature), backend);
  };
  // Memory a step needs is allocated by its first call (resources.hpp refuses what can
  // never fit before the run starts): say which option asked for it.
  auto out_of_memory = [&](bool evaluation) {
    const std::string option = evaluation && o.eval_batch_size ? "--eval-batch-size" : "--batch-size";
    throw std::runtime_error(option + " " + std::to_string(evaluation ? eo.batch_size : o.batch_size) +
                             ": out of memory in " + (evaluation ? "an evaluation" : "a training step") +
                             " at this batch size; use a smaller " + option + " or --width");
  };

  ProgressBar::Options bar_opts;
  if (o.progress == TrainerOptions::Progress::bar) bar_opts.mode = ProgressBar::Mode::terminal;
  if (o.progress == TrainerOptions::Progress::plain) bar_opts.mode = ProgressBar::Mode::plain;
  const bool show_progress = o.progress != TrainerOptions::Progress::none;

  enum class Stop { none, max_steps, interrupt };
  Stop stop = Stop::none;
  // Distributed: a worker stops only when all do (the others would wait in a collective).
  enum : int { kInterrupted = 1, kDiverged = 2 };
  auto agree = [&](int flags) { return workers ? workers->any(flags) : flags; };
  int signal_seen = 0;  // the signal that stopped the run (another worker's: SIGINT)
  auto note_interrupt = [&](int flags) {
    if (flags & kInterrupted) signal_seen = is_set(o.interrupt) ? o.interrupt->load() : 2;
    return (flags & kInterrupted) != 0;
  };
  const int ew = static_cast<int>(std::to_string(o.epochs).size());
  // The learning rate of the last step taken, as an epoch's record reports it (a resume
  // at an epoch's end takes no step before that epoch's record).
  double lr = scheduled_lr(o.schedule, std::max<std::int64_t>(pos.step - 1, 0), steps_per_epoch, o.epochs);
  const bool limit_reached = o.max_steps > 0 && pos.step >= o.max_steps;
  while (pos.epoch < o.epochs && !limit_reached) {
    // Between epochs: the epoch's end was saved already, nothing more to write.
    if (note_interrupt(agree(is_set(o.interrupt) ? kInterrupted : 0))) {
      stop = Stop::interrupt;
      break;
    }
    train_batches.start_epoch(static_cast<std::uint64_t>(pos.epoch));
    for (std::size_t i = 0; i < pos.batches_done; ++i) train_batches.next();  // resumed mid-epoch

    char label[64];
    std::snprintf(label, sizeof label, "epoch %*d/%d", ew, pos.epoch + 1, o.epochs);
    std::optional<ProgressBar> bar;
    if (show_progress) bar.emplace(label, steps_per_epoch, bar_opts);
    const auto epoch_start = Clock::now();
    std::int64_t images_this_run = 0;
    while (train_batches.next() != 0) {
      lr = scheduled_lr(o.schedule, pos.step, steps_per_epoch, o.epochs);
      backend.set_lr(lr);
      BatchResult r;
      try {
        r = backend.train_batch(train_batches);
      } catch (const std::bad_alloc&) {
        out_of_memory(false);
      }
      ++pos.step;
      ++pos.batches_done;
      ++summary.steps_this_run;
      pos.loss_sum += r.loss * r.batch;
      pos.correct += r.correct;
      pos.images += r.batch;
      images_this_run += r.batch;
      if (bar)
        bar->update(pos.batches_done, static_cast<std::size_t>(pos.images), pos.loss_sum / double(pos.images),
                    double(pos.correct) / double(pos.images));
      const int flags = agree((is_set(o.interrupt) ? kInterrupted : 0) | (std::isfinite(r.loss) ? 0 : kDiverged));
      if (flags & kDiverged)
        throw std::runtime_error("training diverged: loss is " + std::to_string(r.loss) + " at step " +
                                 std::to_string(pos.step) + (std::isfinite(r.loss) ? " on another worker" : "") +
                                 " (lower --lr?)");
      // An interrupt stops after the step in progress, even the epoch's last: the position
      // then says "all batches done, not evaluated", and a resume evaluates.
      if (note_interrupt(flags)) {
        stop = Stop::interrupt;
        break;
      }
      const bool epoch_end = pos.batches_done == steps_per_epoch;
      if (!epoch_end && o.max_steps > 0 && pos.step >= o.max_steps) {
        stop = Stop::max_steps;
        break;
      }
      if (!epoch_end && o.checkpoint_every > 0 && pos.step % o.checkpoint_every == 0) save();
    }
    const double train_seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    if (stop != Stop::none) {
      if (bar) bar->finish(stop == Stop::max_steps ? "stopped at --max-steps" : "interrupted");
      save();
      break;
    }

    // The epoch over every worker's shard.
    double totals[4] = {pos.loss_sum, double(pos.correct), double(pos.images), double(images_this_run)};
    if (workers) workers->sum(totals, 4);
    EpochMetrics m;
    m.epoch = pos.epoch + 1;
    m.step = pos.step;
    m.train_loss = totals[2] > 0 ? totals[0] / totals[2] : 0.0;
    m.train_acc = totals[2] > 0 ? totals[1] / totals[2] : 0.0;
    m.lr = lr;
    m.images_per_s = train_seconds > 0 ? totals[3] / train_seconds : 0.0;
    const bool slow = o.eval_slow && backend.has_slow_weights();
    std::optional<ProgressBar> eval_bar;
    if (bar) bar->finish();
    if (show_progress && test_set.size() > 0 && (bar && bar->is_terminal()))
      eval_bar.emplace(std::string(label) + (slow ? " test (slow)" : " test"), test_batches.batches_per_epoch(),
                       bar_opts);
    if (test_set.size() > 0) {
      std::optional<EvalResult> ev;
      if (lead) {
        try {
          ev = evaluate(backend, test_batches, slow, eval_bar ? &*eval_bar : nullptr, o.interrupt);
        } catch (const std::bad_alloc&) {
          out_of_memory(true);
        }
      }
      // The other workers wait here for worker 0's evaluation, and stop with it.
      bool interrupted = lead && !ev;
      if (workers) interrupted = note_interrupt(agree(interrupted ? kInterrupted : 0));
      if (interrupted) {  // the position is "trained, not evaluated"
        if (eval_bar) eval_bar->finish("interrupted");
        stop = Stop::interrupt;
        save();
        break;
      }
      if (eval_bar) eval_bar->finish();
      if (lead) {
        m.test_loss = ev->loss;
        m.test_acc = ev->acc;
        pos.final_test_acc = ev->acc;
        pos.final_test_loss = ev->loss;
        if (!pos.best_test_acc || ev->acc > *pos.best_test_acc) {
          pos.best_test_acc = ev->acc;
          pos.best_epoch = m.epoch;
        }
      }
    }
    m.seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    m.extra = backend.optimizer_metrics();
    if (slow) m.extra.emplace_back("eval_slow", 1);

    char line[320];
    std::snprintf(
        line, sizeof line, "epoch %*d/%d  train loss %.4f acc %s  test loss %s acc %s  lr %.3g  %.1f s  %.0f img/s", ew,
        m.epoch, o.epochs, m.train_loss, percent(m.train_acc).c_str(), m.test_loss ? fixed4(*m.test_loss).c_str() : "-",
        m.test_acc ? percent(*m.test_acc).c_str() : "-", lr, m.seconds, m.images_per_s);
    log << line << std::endl;
    if (metrics) metrics->write(m);
    summary.epochs.push_back(m);

    ++pos.epoch;
    pos.batches_done = 0;
    pos.loss_sum = 0;
    pos.correct = 0;
    pos.images = 0;
    save();
    if (o.max_steps > 0 && pos.step >= o.max_steps) {
      summary.stopped_early = pos.epoch < o.epochs;
      break;
    }
  }

  if (stop != Stop::none) summary.stopped_early = true;
  if (stop == Stop::interrupt) summary.interrupted = signal_seen ? signal_seen : o.interrupt->load();
  summary.epochs_done = pos.epoch;
  summary.steps = pos.step;
  summary.batches_done = pos.batches_done;
  summary.best_test_acc = pos.best_test_acc;
  summary.best_epoch = pos.best_epoch;
  summary.final_test_acc = pos.final_test_acc;
  summary.final_test_loss = pos.final_test_loss;
  summary.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (metrics) {
    json record = {{"epochs", summary.epochs_done},
                   {"steps", summary.steps},
                   {"best_test_acc", opt_to_json(summary.best_test_acc)},
                   {"best_epoch", summary.best_epoch},
                   {"final_test_acc", opt_to_json(summary.final_test_acc)},
                   {"final_test_loss", opt_to_json(summary.final_test_loss)},
                   {"stopped_early", summary.stopped_early},
                   {"seconds", summary.seconds}};
    if (summary.interrupted) record["interrupted"] = signal_name(summary.interrupted);
    metrics->write(json{{"summary", record}});
  }
  return summary;
}

}  // namespace resnet18
