#include "runtime/backend/cuda/cublaslt_matmul.h"

#include "runtime/backend/cuda/cuda_check.h"
#include "runtime/core/check.h"

namespace zt::cuda {

// Note [row-major GEMMs]
// A row-major (R, C) matrix in memory is the column-major (C, R) matrix: its transpose. So for the
// model's row-major tensors, out (N,OC) = inp (N,C) W^T (W is (OC,C)) is, column-major,
// out^T (OC,N) = W (as stored: column-major (C,OC), transposed) x inp^T (as stored, (C,N)):
// m = OC, n = N, k = C, trans_a, not trans_b. The bias epilogue adds a vector of length m to every
// column of D, i.e. bias[oc] to every row of out. The backward products follow the same rule.

namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
  }
  return CUDA_R_32F;
}

// The largest power of two (up to 16) dividing the address: cuBLASLt's kernels need to know how
// aligned the operands are, and Tensor slices may start anywhere.
int alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (int al = 16; al > 1; al /= 2)
    if (a % static_cast<uintptr_t>(al) == 0) return al;
  return 1;
}

}  // namespace

struct LtMatmul::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};

LtMatmul::LtMatmul(void* workspace, size_t workspace_bytes)
    : workspace_(workspace), workspace_bytes_(workspace_bytes) {
  ZT_CUBLAS(cublasLtCreate(&handle_));
}

LtMatmul::~LtMatmul() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

LtMatmul::Plan& LtMatmul::plan(const Key& key, DType dtype, bool trans_a, bool trans_b, int m,
                               int n, int k, bool bias, float beta, int align_a, int align_b,
                               int align_d, int align_bias) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  const cudaDataType_t t = cuda_type(dtype);
  ZT_CUBLAS(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  ZT_CUBLAS(
      cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  ZT_CUBLAS(
      cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    ZT_CUBLAS(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    ZT_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t,
                                             sizeof(t)));
  }
  // Stored shapes (column-major): A is (k, m) when transposed else (m, k); likewise B.
  ZT_CUBLAS(
      cublasLtMatrixLayoutCreate(&p->a, t, trans_a ? k : m, trans_a ? m : k, trans_a ? k : m));
  ZT_CUBLAS(
      cublasLtMatrixLayoutCreate(&p->b, t, trans_b ? n : k, trans_b ? k : n, trans_b ? n : k));
  ZT_CUBLAS(cublasLtMatrixLayoutCreate(&p->d, t, m, n, m));

  cublasLtMatmulPreference_t pref = nullptr;
  ZT_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  const uint32_t aa = static_cast<uint32_t>(align_a), ab = static_cast<uint32_t>(align_b),
                 ad = static_cast<uint32_t>(align_d);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa,
                                       sizeof(aa));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab,
                                       sizeof(ab));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad,
                                       sizeof(ad));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad,
                                       sizeof(ad));
  (void)align_bias;  // part of the key: the bias pointer's alignment picks the epilogue variant
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p->desc, p->a, p->b, p->d, p->d,
                                                           pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    throw StatusError(make_error(
        StatusCode::kUnsupported,
        "cuBLASLt has no algorithm for {} GEMM m={} n={} k={} trans_a={} trans_b={} bias={} "
        "beta={} (operand alignment {}/{}/{} bytes): {}",
        dtype_name(dtype), m, n, k, trans_a, trans_b, bias, beta, align_a, align_b, align_d,
        st == CUBLAS_STATUS_SUCCESS ? "no result" : cublasLtGetStatusName(st)));
  p->algo = result.algo;
  return *plans_.emplace(key, std::move(p)).first->second;
}

void LtMatmul::gemm(DType dtype, bool trans_a, bool trans_b, int m, int n, int k, const void* a,
                    const void* b, void* d, float beta, const void* bias, cudaStream_t stream) {
  ZT_CHECK(m > 0 && n > 0 && k > 0, "gemm of an empty matrix m={} n={} k={}", m, n, k);
  const int aa = alignment(a), ab = alignment(b), ad = alignment(d);
  const int abias = bias ? alignment(bias) : 0;
  const Key key{static_cast<int>(dtype), trans_a, trans_b, m,  n,  k,
                bias != nullptr,         beta,    aa,      ab, ad, abias};
  Plan& p = plan(key, dtype, trans_a, trans_b, m, n, k, bias != nullptr, beta, aa, ab, ad, abias);
  if (bias)
    ZT_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                             sizeof(bias)));
  const float alpha = 1.0f;
  ZT_CUBLAS(cublasLtMatmul(handle_, p.desc, &alpha, a, p.a, b, p.b, &beta, d, p.d, d, p.d, &p.algo,
                           workspace_, workspace_bytes_, stream));
}

}  // namespace zt::cuda
