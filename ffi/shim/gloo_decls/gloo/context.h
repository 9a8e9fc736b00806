// Declarations only. PyTorch's wheel ships ProcessGroupGloo.hpp but not the Gloo headers it includes, so
// these files give that header the names it mentions and nothing more. Every Gloo type appears in
// ProcessGroupGloo's data members only behind shared_ptr/unique_ptr, so the class layout we compile against
// is libtorch's own; the shim only calls ProcessGroupGloo's constructor, Options and device factories, which
// live in libtorch_cpu.so, and never uses a Gloo type itself.
#pragma once

#include <chrono>

namespace gloo {
class Context {
 public:
  // Used by an inline method of ProcessGroupGloo.hpp; defined in libtorch_cpu.so (Gloo is linked into it).
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
