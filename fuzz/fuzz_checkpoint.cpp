// Fuzz target for load(): any input either fails with checkpoint_error and leaves the optimizer byte-identical, or loads a state that steps, saves and reloads to the same bytes.
#include <nestla/nestla.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint_variants.hpp"

namespace {

[[noreturn]] void finding(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "fuzz_checkpoint: %s %s\n", what, detail.c_str());
  std::abort();
}

// The harness steps a loaded optimizer only over tensors it can afford: a
// plain SGD holds no state, so its checkpoint declares sizes without data.
constexpr std::size_t max_step_elements = std::size_t(1) << 16;

template <class O>
void swap_back(O& opt, auto& params) {
  if constexpr (requires { opt.for_each_level([](auto&) {}); })
    opt.for_each_level([&](auto& level) {
      if (level.slow_weights_swapped_in()) level.swap_slow_weights(params);
    });
}

template <class Make>
void check(Make make, bool stepped_target, const std::string& input) {
  using namespace nestla_fuzz;
  auto opt = make_state(make, stepped_target);
  const std::string before = save_bytes(opt);
  std::istringstream is(input);
  try {
    opt.load(is);
  } catch (const nestla::checkpoint_error&) {
    if (save_bytes(opt) != before) finding("a failed load changed the optimizer");
    return;
  } catch (const std::exception& e) {
    finding("load threw something other than checkpoint_error:", e.what());
  }

  // Accepted means canonical: the writer produces exactly the bytes read. An
  // older format that loads is saved in the current one: then the saved state
  // must load back to the same bytes (checked below, after the steps, too).
  const std::string loaded = save_bytes(opt);
  std::uint32_t version = 0;
  if (input.size() >= 12) std::memcpy(&version, input.data() + 8, sizeof version);
  if (version == nestla::detail::checkpoint_version) {
    if (static_cast<std::size_t>(is.tellg()) != loaded.size() || input.compare(0, loaded.size(), loaded) != 0)
      finding("the loaded state does not save to the bytes it was read from");
  } else {
    auto reread = make();
    std::istringstream is1(loaded);
    try {
      reread.load(is1);
    } catch (const std::exception& e) {
      finding("a state loaded from an older format did not load back after saving:", e.what());
    }
    if (save_bytes(reread) != loaded) finding("a state loaded from an older format reloaded to other bytes");
  }

  using T = typename decltype(opt)::scalar_type;
  const auto& base = opt.base();
  const bool init = base.initialized();
  const auto& sizes = init ? base.layout().sizes : default_sizes();
  std::size_t elements = 0;
  for (auto n : sizes) elements += n;
  if (elements <= max_step_elements && base.step_count() + 3 < nestla::detail::max_checkpoint_count) {
    tensors<T> t(sizes);
    try {
      swap_back(opt, t.p);
      t.step(opt, 3);
    } catch (const nestla::layout_error& e) {
      // Groups of a checkpoint taken before the first step are checked at the
      // first step, against the tensors given then (as add_param_group's are).
      if (init) finding("a loaded optimizer refused its own layout:", e.what());
    } catch (const nestla::nonfinite_norm_error& e) {
      // Clipping with error_if_nonfinite refuses a step whose gradient norm is
      // not finite, as promised (any valid norm_type, e.g. a tiny p, can
      // overflow the norm of the harness's gradients); anything else is a finding.
      if (!base.clip_grad().norm.error_if_nonfinite)
        finding("a step threw nonfinite_norm_error without error_if_nonfinite:", e.what());
    } catch (const std::exception& e) {
      finding("a loaded optimizer failed to step:", e.what());
    }
  }
  const std::string saved = save_bytes(opt);
  auto again = make();
  std::istringstream is2(saved);
  try {
    again.load(is2);
  } catch (const std::exception& e) {
    finding("a saved state did not load:", e.what());
  }
  if (save_bytes(again) != saved) finding("a saved state reloaded to other bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace nestla_fuzz;
  if (size < 1) return 0;
  const unsigned selector = data[0];
  std::string input(reinterpret_cast<const char*>(data + 1), size - 1);
  if (!(selector & raw_crc_bit)) {
    const std::uint32_t crc = nestla::detail::crc32(input.data(), input.size());
    input.append(reinterpret_cast<const char*>(&crc), sizeof crc);
  }
  with_variant(selector & 0x0F, [&](auto make) { check(make, (selector & stepped_target_bit) != 0, input); });
  return 0;
}
