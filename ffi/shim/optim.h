// The optimizer side of a training step: gradient clipping and AdamW, each a handful of multi-tensor
// kernels instead of a loop over parameters (PyTorch's foreach/fused implementations, same math as
// torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace distrinews {

// Scales gradients so that their total L2 norm is at most max_norm, as torch.nn.utils.clip_grad_norm_
// (coefficient max_norm / (norm + 1e-6), clamped to 1). Returns the norm before clipping.
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

// torch.optim.AdamW with fused=True: one kernel updates every parameter of a group. Parameters are split
// into a decayed and a non-decayed group, as Hugging Face's Trainer does.
class AdamW {
 public:
  struct Group {
    std::vector<at::Tensor> params, exp_avgs, exp_avg_sqs, steps;
    double weight_decay = 0.0;
  };

  AdamW(std::vector<Group> groups, double beta1, double beta2, double eps);
  void step(double lr);
  void zero_grad();

  // The state of one parameter, created (as zeros, which is what the first step would create) if absent,
  // so that it can be saved and restored for resuming: exp_avg, exp_avg_sq, step.
  struct Slots {
    at::Tensor *exp_avg, *exp_avg_sq, *step;
  };
  Slots slots_for(const at::Tensor& param);

 private:
  std::vector<Group> groups_;
  double beta1_, beta2_, eps_;
};

}  // namespace distrinews
