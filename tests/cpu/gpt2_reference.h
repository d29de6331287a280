// An fp64 GPT-2 built from the reference kernels (kernels/reference): plain loops, no
// checkpointing, no shared buffers. It is the oracle the fast model's gradients are checked
// against, and is itself checked against central finite differences.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kernels/reference/attention.h"
#include "kernels/reference/crossentropy.h"
#include "kernels/reference/encoder.h"
#include "kernels/reference/gelu.h"
#include "kernels/reference/layernorm.h"
#include "kernels/reference/matmul.h"
#include "kernels/reference/residual.h"
#include "runtime/model/gpt2_params.h"

namespace zt::testing {

class Gpt2Reference {
 public:
  Gpt2Reference(const ModelConfig& cfg, int B, int T)
      : cfg_(cfg), layout_(make_param_layout(gpt2_param_inventory(cfg))), B_(B), T_(T) {}

  const ParamLayout& layout() const { return layout_; }

  // Mean cross-entropy over the B*T targets; with `grads` non-null, also its gradient (=) in the
  // flat layout.
  double loss(const std::vector<double>& params, const int32_t* in, const int32_t* tgt,
              std::vector<double>* grads) const {
    namespace r = kernels::ref;
    const int B = B_, T = T_, C = cfg_.n_embd, NH = cfg_.n_head, L = cfg_.n_layer,
              V = cfg_.vocab_size, N = B * T;
    auto P = [&](const std::string& n) { return params.data() + layout_.find(n)->offset; };
    auto vec = [](size_t n) { return std::vector<double>(n, 0.0); };
    const size_t NC = static_cast<size_t>(N) * C;
    struct Acts {
      std::vector<double> x, ln1, m1, r1, qkv, atty, lse, attp, res2, ln2, m2, r2, fch, gel, fcp;
    };
    std::vector<Acts> acts(static_cast<size_t>(L));
    std::vector<double> x0 = vec(NC);
    r::encoder_fwd(x0.data(), in, P("wte.weight"), P("wpe.weight"), B, T, C);
    std::vector<double> x = x0;
    for (int l = 0; l < L; ++l) {
      const std::string h = fmt::format("h.{}.", l);
      Acts& a = acts[static_cast<size_t>(l)];
      a.x = x;
      a.ln1 = vec(NC), a.m1 = vec(N), a.r1 = vec(N), a.qkv = vec(3 * NC), a.atty = vec(NC);
      a.lse = vec(static_cast<size_t>(B) * NH * T), a.attp = vec(NC), a.res2 = vec(NC);
      a.ln2 = vec(NC), a.m2 = vec(N), a.r2 = vec(N), a.fch = vec(4 * NC), a.gel = vec(4 * NC);
      a.fcp = vec(NC);
      r::layernorm_fwd(a.ln1.data(), a.m1.data(), a.r1.data(), a.x.data(), P(h + "ln_1.weight"),
                       P(h + "ln_1.bias"), N, C, 1e-5);
      r::matmul_fwd(a.qkv.data(), a.ln1.data(), P(h + "attn.c_attn.weight"),
                    P(h + "attn.c_attn.bias"), N, C, 3 * C);
      r::attention_fwd(a.atty.data(), a.lse.data(), a.qkv.data(), B, T, C, NH);
      r::matmul_fwd(a.attp.data(), a.atty.data(), P(h + "attn.c_proj.weight"),
                    P(h + "attn.c_proj.bias"), N, C, C);
      r::residual_fwd(a.res2.data(), a.x.data(), a.attp.data(), NC);
      r::layernorm_fwd(a.ln2.data(), a.m2.data(), a.r2.data(), a.res2.data(),
                       P(h + "ln_2.weight"), P(h + "ln_2.bias"), N, C, 1e-5);
      r::matmul_fwd(a.fch.data(), a.ln2.data(), P(h + "mlp.c_fc.weight"), P(h + "mlp.c_fc.bias"),
                    N, C, 4 * C);
      r::gelu_fwd(a.gel.data(), a.fch.data(), 4 * NC);
      r::matmul_fwd(a.fcp.data(), a.gel.data(), P(h + "mlp.c_proj.weight"),
                    P(h + "mlp.c_proj.bias"), N, 4 * C, C);
      r::residual_fwd(x.data(), a.res2.data(), a.fcp.data(), NC);
    }
    std::vector<double> lnf = vec(NC), mf = vec(N), rf = vec(N),
                        logits = vec(static_cast<size_t>(N) * V), losses = vec(N);
    r::layernorm_fwd(lnf.data(), mf.data(), rf.data(), x.data(), P("ln_f.weight"), P("ln_f.bias"),
                     N, C, 1e-5);
    r::matmul_fwd(logits.data(), lnf.data(), P("wte.weight"), nullptr, N, C, V);
    std::vector<double> dlogits = vec(logits.size());
    r::softmax_crossentropy_fwd_bwd(losses.data(), dlogits.data(), logits.data(), tgt, N, V,
                                    1.0 / N);
    double loss = 0;
    for (double l : losses) loss += l;
    loss /= N;
    if (!grads) return loss;

    grads->assign(params.size(), 0.0);
    auto G = [&](const std::string& n) { return grads->data() + layout_.find(n)->offset; };
    std::vector<double> dlnf = vec(NC), dx = vec(NC);
    r::matmul_bwd(dlnf.data(), G("wte.weight"), nullptr, dlogits.data(), lnf.data(),
                  P("wte.weight"), N, C, V);
    r::layernorm_bwd(dx.data(), G("ln_f.weight"), G("ln_f.bias"), dlnf.data(), x.data(),
                     P("ln_f.weight"), mf.data(), rf.data(), N, C);
    for (int l = L - 1; l >= 0; --l) {
      const std::string h = fmt::format("h.{}.", l);
      Acts& a = acts[static_cast<size_t>(l)];
      std::vector<double> dgel = vec(4 * NC), dfch = vec(4 * NC), dln2 = vec(NC),
                          datty = vec(NC), dqkv = vec(3 * NC), dln1 = vec(NC);
      r::matmul_bwd(dgel.data(), G(h + "mlp.c_proj.weight"), G(h + "mlp.c_proj.bias"), dx.data(),
                    a.gel.data(), P(h + "mlp.c_proj.weight"), N, 4 * C, C);
      r::gelu_bwd(dfch.data(), a.fch.data(), dgel.data(), 4 * NC);
      r::matmul_bwd(dln2.data(), G(h + "mlp.c_fc.weight"), G(h + "mlp.c_fc.bias"), dfch.data(),
                    a.ln2.data(), P(h + "mlp.c_fc.weight"), N, C, 4 * C);
      r::layernorm_bwd(dx.data(), G(h + "ln_2.weight"), G(h + "ln_2.bias"), dln2.data(),
                       a.res2.data(), P(h + "ln_2.weight"), a.m2.data(), a.r2.data(), N, C);
      r::matmul_bwd(datty.data(), G(h + "attn.c_proj.weight"), G(h + "attn.c_proj.bias"),
                    dx.data(), a.atty.data(), P(h + "attn.c_proj.weight"), N, C, C);
      r::attention_bwd(dqkv.data(), datty.data(), a.qkv.data(), B, T, C, NH);
      r::matmul_bwd(dln1.data(), G(h + "attn.c_attn.weight"), G(h + "attn.c_attn.bias"),
                    dqkv.data(), a.ln1.data(), P(h + "attn.c_attn.weight"), N, C, 3 * C);
      r::layernorm_bwd(dx.data(), G(h + "ln_1.weight"), G(h + "ln_1.bias"), dln1.data(),
                       a.x.data(), P(h + "ln_1.weight"), a.m1.data(), a.r1.data(), N, C);
    }
    r::encoder_bwd(G("wte.weight"), G("wpe.weight"), dx.data(), in, B, T, C);
    return loss;
  }

 private:
  ModelConfig cfg_;
  ParamLayout layout_;
  int B_, T_;
};

}  // namespace zt::testing
