// The one translation unit that instantiates every nestla optimizer type the CPU trainer can build.
#include "optimizer_factory.hpp"

namespace resnet18 {

const char* to_string(BaseKind b) noexcept {
  switch (b) {
    case BaseKind::sgd: return "sgd";
    case BaseKind::adam: return "adam";
    case BaseKind::adamw: return "adamw";
  }
  return "?";
}

template std::unique_ptr<AnyOptimizer<EigenParams>> make_optimizer<EigenParams, float, nestla::host>(
    const OptimizerSpec&);

}  // namespace resnet18
