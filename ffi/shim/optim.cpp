#include "optim.h"

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <c10/core/GradMode.h>

namespace distrinews {

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return at::zeros({}, params.empty() ? at::TensorOptions() : params[0].options());
  // The norm of the per-tensor norms is the norm of all gradients together.
  auto total = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
  // Multiplying by a clamped coefficient (rather than branching on it) avoids a device sync on GPUs.
  auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
  at::_foreach_mul_(grads, coef);
  return total;
}

AdamW::AdamW(std::vector<Group> groups, double beta1, double beta2, double eps)
    : groups_(std::move(groups)), beta1_(beta1), beta2_(beta2), eps_(eps) {}

void AdamW::step(double lr) {
  for (auto& g : groups_) {
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    for (size_t i = 0; i < g.params.size(); ++i) {
      const auto& p = g.params[i];
      if (!p.grad().defined()) continue;  // as PyTorch: parameters without a gradient are left alone
      if (!g.exp_avgs[i].defined()) {
        // State is created on first use, like torch.optim's lazy state.
        g.exp_avgs[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
        g.exp_avg_sqs[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
        g.steps[i] = at::zeros({}, p.options().dtype(at::kFloat));
      }
      params.push_back(p);
      grads.push_back(p.grad());
      exp_avgs.push_back(g.exp_avgs[i]);
      exp_avg_sqs.push_back(g.exp_avg_sqs[i]);
      steps.push_back(g.steps[i]);
    }
    if (params.empty()) continue;
    // torch.optim.AdamW increments the step counters before calling the fused kernel.
    at::_foreach_add_(steps, 1);
    c10::NoGradGuard no_grad;
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr, beta1_, beta2_,
                      g.weight_decay, eps_, /*amsgrad=*/false, /*maximize=*/false);
  }
}

AdamW::Slots AdamW::slots_for(const at::Tensor& param) {
  for (auto& g : groups_) {
    for (size_t i = 0; i < g.params.size(); ++i) {
      if (!g.params[i].is_same(param)) continue;
      if (!g.exp_avgs[i].defined()) {
        g.exp_avgs[i] = at::zeros_like(param, at::MemoryFormat::Preserve);
        g.exp_avg_sqs[i] = at::zeros_like(param, at::MemoryFormat::Preserve);
        g.steps[i] = at::zeros({}, param.options().dtype(at::kFloat));
      }
      return {&g.exp_avgs[i], &g.exp_avg_sqs[i], &g.steps[i]};
    }
  }
  TORCH_CHECK(false, "parameter not managed by this optimizer");
}

void AdamW::zero_grad() {
  // set_to_none, PyTorch's default: the next backward allocates fresh gradients instead of adding.
  for (auto& g : groups_)
    for (auto& p : g.params) p.mutable_grad().reset();
}

}  // namespace distrinews
