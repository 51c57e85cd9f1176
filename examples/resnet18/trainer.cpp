// The training loop and the trainer's checkpoint file.
#include "trainer.hpp"

#include <zlib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <numbers>
#include <sstream>
#include <streambuf>

#include "augment.hpp"

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

json load_train_checkpoint(const fs::path& path, TrainingBackend& backend) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad_checkpoint(path, std::string("cannot open: ") + std::strerror(errno));
  std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) bad_checkpoint(path, "read error");
  const std::size_t header = sizeof kMagic + sizeof(std::uint32_t);
  if (buf.size() < header + sizeof(std::uint32_t))
    bad_checkpoint(path, "truncated (" + std::to_string(buf.size()) + " bytes)");
  if (std::memcmp(buf.data(), kMagic, sizeof kMagic) != 0)
    bad_checkpoint(path, "not a resnet18_train checkpoint (bad magic)");
  std::uint32_t version;
  std::memcpy(&version, buf.data() + sizeof kMagic, sizeof version);
  if (version != kVersion)
    bad_checkpoint(path,
                   "format version " + std::to_string(version) + ", this build reads " + std::to_string(kVersion));
  const std::size_t body = buf.size() - sizeof(std::uint32_t);
  std::uint32_t stored;
  std::memcpy(&stored, buf.data() + body, sizeof stored);
  if (crc_of(buf.data(), body) != stored) bad_checkpoint(path, "checksum mismatch: the file is damaged or truncated");

  std::size_t pos = header;
  const char* names[3] = {"trainer state", "model", "optimizer"};
  std::pair<const char*, std::size_t> sections[3];
  for (int i = 0; i < 3; ++i) {
    std::uint64_t n;
    if (body - pos < sizeof n) bad_checkpoint(path, std::string("truncated before the ") + names[i] + " section");
    std::memcpy(&n, buf.data() + pos, sizeof n);
    pos += sizeof n;
    if (n > body - pos) bad_checkpoint(path, std::string("the ") + names[i] + " section runs past the end of the file");
    sections[i] = {buf.data() + pos, static_cast<std::size_t>(n)};
    pos += n;
  }
  if (pos != body) bad_checkpoint(path, "trailing bytes after the optimizer section");

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
// an epoch's line but before its checkpoint does not leave that epoch twice.
void trim_metrics(const fs::path& path, int epochs_kept) {
  std::ifstream in(path);
  if (!in) return;
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
  in.close();
  write_file_atomic(path, kept);
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

EvalResult evaluate(TrainingBackend& backend, Batcher& batcher, bool slow, ProgressBar* bar) {
  if (slow) backend.swap_slow_weights();
  double loss_sum = 0;
  std::int64_t correct = 0, images = 0;
  std::size_t batches = 0;
  try {
    batcher.start_epoch(0);
    while (batcher.next() != 0) {
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
  if (images == 0) return {};
  return {loss_sum / static_cast<double>(images), static_cast<double>(correct) / static_cast<double>(images)};
}

}  // namespace

TrainSummary train(TrainingBackend& backend, const Dataset& train_set, const Dataset& test_set,
                   const TrainerOptions& o, std::ostream& log) {
  using Clock = std::chrono::steady_clock;
  const auto run_start = Clock::now();

  BatcherOptions bo;
  bo.batch_size = o.batch_size;
  bo.train = true;
  bo.seed = o.seed;
  bo.crop_padding = o.augment ? 4 : 0;
  bo.horizontal_flip = o.augment;
  bo.fill_images = !backend.wants_batch_indices();
  Batcher train_batches(train_set, bo);
  BatcherOptions eo;
  eo.batch_size = o.eval_batch_size ? o.eval_batch_size : o.batch_size;
  eo.train = false;
  eo.fill_images = !backend.wants_batch_indices();
  Batcher test_batches(test_set, eo);
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

  ProgressBar::Options bar_opts;
  if (o.progress == TrainerOptions::Progress::bar) bar_opts.mode = ProgressBar::Mode::terminal;
  if (o.progress == TrainerOptions::Progress::plain) bar_opts.mode = ProgressBar::Mode::plain;
  const bool show_progress = o.progress != TrainerOptions::Progress::none;

  TrainSummary summary;
  const int ew = static_cast<int>(std::to_string(o.epochs).size());
  double lr = scheduled_lr(o.schedule, pos.step, steps_per_epoch, o.epochs);
  const bool limit_reached = o.max_steps > 0 && pos.step >= o.max_steps;
  while (pos.epoch < o.epochs && !limit_reached) {
    train_batches.start_epoch(static_cast<std::uint64_t>(pos.epoch));
    for (std::size_t i = 0; i < pos.batches_done; ++i) train_batches.next();  // resumed mid-epoch

    char label[64];
    std::snprintf(label, sizeof label, "epoch %*d/%d", ew, pos.epoch + 1, o.epochs);
    std::optional<ProgressBar> bar;
    if (show_progress) bar.emplace(label, steps_per_epoch, bar_opts);
    const auto epoch_start = Clock::now();
    std::int64_t images_this_run = 0;
    bool stop = false;
    while (train_batches.next() != 0) {
      lr = scheduled_lr(o.schedule, pos.step, steps_per_epoch, o.epochs);
      backend.set_lr(lr);
      const BatchResult r = backend.train_batch(train_batches);
      ++pos.step;
      ++pos.batches_done;
      pos.loss_sum += r.loss * r.batch;
      pos.correct += r.correct;
      pos.images += r.batch;
      images_this_run += r.batch;
      if (bar)
        bar->update(pos.batches_done, static_cast<std::size_t>(pos.images), pos.loss_sum / double(pos.images),
                    double(pos.correct) / double(pos.images));
      if (!std::isfinite(r.loss)) throw std::runtime_error("training diverged: loss is " + std::to_string(r.loss) +
                                                           " at step " + std::to_string(pos.step) +
                                                           " (lower --lr?)");
      const bool epoch_end = pos.batches_done == steps_per_epoch;
      if (!epoch_end && o.max_steps > 0 && pos.step >= o.max_steps) {
        stop = true;
        break;
      }
      if (!epoch_end && o.checkpoint_every > 0 && pos.step % o.checkpoint_every == 0) save();
    }
    const double train_seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    if (stop) {
      if (bar) bar->finish("stopped at --max-steps");
      save();
      summary.stopped_early = true;
      break;
    }

    EpochMetrics m;
    m.epoch = pos.epoch + 1;
    m.step = pos.step;
    m.train_loss = pos.images ? pos.loss_sum / double(pos.images) : 0.0;
    m.train_acc = pos.images ? double(pos.correct) / double(pos.images) : 0.0;
    m.lr = lr;
    m.images_per_s = train_seconds > 0 ? double(images_this_run) / train_seconds : 0.0;
    const bool slow = o.eval_slow && backend.has_slow_weights();
    std::optional<ProgressBar> eval_bar;
    if (bar) bar->finish();
    if (show_progress && test_set.size() > 0 && (bar && bar->is_terminal()))
      eval_bar.emplace(std::string(label) + (slow ? " test (slow)" : " test"), test_batches.batches_per_epoch(),
                       bar_opts);
    if (test_set.size() > 0) {
      const EvalResult ev = evaluate(backend, test_batches, slow, eval_bar ? &*eval_bar : nullptr);
      if (eval_bar) eval_bar->finish();
      m.test_loss = ev.loss;
      m.test_acc = ev.acc;
      pos.final_test_acc = ev.acc;
      pos.final_test_loss = ev.loss;
      if (!pos.best_test_acc || ev.acc > *pos.best_test_acc) {
        pos.best_test_acc = ev.acc;
        pos.best_epoch = m.epoch;
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

  summary.epochs_done = pos.epoch;
  summary.steps = pos.step;
  summary.best_test_acc = pos.best_test_acc;
  summary.best_epoch = pos.best_epoch;
  summary.final_test_acc = pos.final_test_acc;
  summary.final_test_loss = pos.final_test_loss;
  summary.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (metrics)
    metrics->write(json{{"summary",
                         {{"epochs", summary.epochs_done},
                          {"steps", summary.steps},
                          {"best_test_acc", opt_to_json(summary.best_test_acc)},
                          {"best_epoch", summary.best_epoch},
                          {"final_test_acc", opt_to_json(summary.final_test_acc)},
                          {"final_test_loss", opt_to_json(summary.final_test_loss)},
                          {"stopped_early", summary.stopped_early},
                          {"seconds", summary.seconds}}}});
  return summary;
}

}  // namespace resnet18
