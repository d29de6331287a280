// Runtime of the CUDA emulator (what it models: cuda_emu.h): fibers and their scheduler, the
// block barrier, warp collectives, shared memory, cp.async and the launch loop.
//
// Fibers switch with a few lines of assembly (x86-64, AArch64; ucontext elsewhere, much slower:
// glibc's swapcontext makes a system call per switch). A fiber is created once, with its own
// mmap'ed stack under a guard page, and reused for every block and launch: its entry function runs
// the current kernel body and then parks in thread_exit until the next block needs it. Everything
// runs on the OS thread that launches, so the fibers never race. Under AddressSanitizer and
// ThreadSanitizer every switch is announced to the sanitizer.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "tests/emu/cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#define ZT_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZT_EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define ZT_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ZT_EMU_TSAN 1
#endif
#endif
#ifdef ZT_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef ZT_EMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if !defined(__x86_64__) && !defined(__aarch64__)
#define ZT_EMU_UCONTEXT 1
#include <ucontext.h>
#endif

// zt_emu_switch(save, load): saves the callee-saved registers on the current stack, stores the
// stack pointer to *save, switches to the stack `load` and restores what it holds.
#if defined(__x86_64__)
extern "C" void zt_emu_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .globl zt_emu_switch
  .hidden zt_emu_switch
  .type zt_emu_switch, @function
zt_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size zt_emu_switch, .-zt_emu_switch
)");
#elif defined(__aarch64__)
extern "C" void zt_emu_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .globl zt_emu_switch
  .hidden zt_emu_switch
  .type zt_emu_switch, %function
zt_emu_switch:
  sub sp, sp, #160
  stp x19, x20, [sp, #0]
  stp x21, x22, [sp, #16]
  stp x23, x24, [sp, #32]
  stp x25, x26, [sp, #48]
  stp x27, x28, [sp, #64]
  stp x29, x30, [sp, #80]
  stp d8, d9, [sp, #96]
  stp d10, d11, [sp, #112]
  stp d12, d13, [sp, #128]
  stp d14, d15, [sp, #144]
  mov x9, sp
  str x9, [x0]
  mov sp, x1
  ldp x19, x20, [sp, #0]
  ldp x21, x22, [sp, #16]
  ldp x23, x24, [sp, #32]
  ldp x25, x26, [sp, #48]
  ldp x27, x28, [sp, #64]
  ldp x29, x30, [sp, #80]
  ldp d8, d9, [sp, #96]
  ldp d10, d11, [sp, #112]
  ldp d12, d13, [sp, #128]
  ldp d14, d15, [sp, #144]
  add sp, sp, #160
  ret
  .size zt_emu_switch, .-zt_emu_switch
)");
#endif

namespace zt_emu {
namespace {

using detail::Coll;
using detail::LaneOp;

#ifdef ZT_EMU_ASAN
constexpr size_t kStackSize = 1024 * 1024;  // instrumented frames are much larger
#else
constexpr size_t kStackSize = 256 * 1024;
#endif
constexpr size_t kStaticLimit = 48 * 1024;  // static __shared__ per block
constexpr size_t kStaticArena = 64 * 1024;  // the limit plus guards and alignment offsets
constexpr size_t kDefaultDynamic = 48 * 1024;
constexpr size_t kDynOffset = 128;  // the dynamic region is 128-byte (not 256-byte) aligned
constexpr size_t kGuard = 32;       // canary bytes after every shared region
constexpr unsigned char kFill = 0xFF;
constexpr unsigned char kCanary = 0x5A;
constexpr uint64_t kMaxBlocks = uint64_t{1} << 22;

enum class State { kReady, kBarrier, kWarp, kDone };

struct AsyncCopy {
  void* dst;
  const void* src;
  size_t n, zfill;
};

struct Fiber {
  void* sp = nullptr;
#ifdef ZT_EMU_UCONTEXT
  ucontext_t uc;
#endif
  char* stack = nullptr;  // lowest usable address
  size_t stack_size = 0;
  void* asan_fake = nullptr;
  void* tsan = nullptr;
  int tid = 0;
  uint3 idx{};
  State state = State::kDone;
  LaneOp* op = nullptr;  // while in State::kWarp
  std::vector<AsyncCopy> open;
  std::deque<std::vector<AsyncCopy>> committed;
};

struct StaticVar {
  size_t offset, size;
  const char* name;
};

struct Runtime {
  Options options;
  Stats stats;
  cudaError_t error = cudaSuccess;
  std::unordered_map<const void*, int> max_dynamic;

  Fiber main;
  std::vector<std::unique_ptr<Fiber>> pool;
  Fiber* cur = &main;
  void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
  uint64_t initial_fp_state = 0;

  // The running launch and block.
  const detail::KernelLaunch* launch = nullptr;
  int nthreads = 0;
  int exited = 0;
  int bar_waiting = 0;
  int bar_kind = 0;
  int bar_acc = 0;
  int bar_result = 0;
  uint64_t ready[16] = {};  // bit t: thread t is ready to run (and not running)
  int nready = 0;
  std::mt19937_64 rng;

  // Shared memory of the block.
  unsigned char* dyn = nullptr;
  size_t dyn_capacity = 0;
  size_t dyn_bytes = 0;
  unsigned char* stat = nullptr;
  size_t stat_used = 0;    // bytes of the arena in use
  size_t stat_packed = 0;  // bytes the variables take on a GPU
  std::unordered_map<const void*, StaticVar> stat_vars;

  ~Runtime() {
    std::free(dyn);
    std::free(stat);
  }
};

Runtime& rt() {
  static Runtime r;
  return r;
}

const char* coll_name(Coll k) {
  switch (k) {
    case Coll::kSyncwarp:
      return "__syncwarp";
    case Coll::kShfl:
      return "__shfl_sync";
    case Coll::kShflUp:
      return "__shfl_up_sync";
    case Coll::kShflDown:
      return "__shfl_down_sync";
    case Coll::kShflXor:
      return "__shfl_xor_sync";
    case Coll::kBallot:
      return "__ballot_sync";
    case Coll::kAny:
      return "__any_sync";
    case Coll::kAll:
      return "__all_sync";
    case Coll::kMatchAny:
      return "__match_any_sync";
    case Coll::kMatchAll:
      return "__match_all_sync";
    case Coll::kReduceAdd:
      return "__reduce_add_sync";
    case Coll::kReduceMin:
      return "__reduce_min_sync";
    case Coll::kReduceMax:
      return "__reduce_max_sync";
    case Coll::kReduceAnd:
      return "__reduce_and_sync";
    case Coll::kReduceOr:
      return "__reduce_or_sync";
    case Coll::kReduceXor:
      return "__reduce_xor_sync";
    case Coll::kCustom:
      return "a wmma::*_sync operation";
  }
  return "?";
}

void* map_pages(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) detail::fail("mmap of %zu bytes failed", bytes);
  return p;
}

// ---- fibers ----

void thread_exit();

[[noreturn]] void fiber_entry() {
#ifdef ZT_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  for (;;) {
    Runtime& r = rt();
    r.launch->invoke(r.launch->ctx);
    thread_exit();  // returns when the fiber runs a thread of a later block
  }
}

#ifdef ZT_EMU_UCONTEXT
void fiber_trampoline() { fiber_entry(); }
#endif

Fiber* new_fiber() {
  Runtime& r = rt();
  auto f = std::make_unique<Fiber>();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  char* base = static_cast<char*>(map_pages(kStackSize + page));
  if (mprotect(base, page, PROT_NONE) != 0) detail::fail("mprotect of a stack guard page failed");
  f->stack = base + page;
  f->stack_size = kStackSize;
  const uintptr_t top = (reinterpret_cast<uintptr_t>(f->stack) + f->stack_size) & ~uintptr_t{15};
#if defined(__x86_64__)
  // The frame zt_emu_switch pops: [mxcsr | x87 control word] r15 r14 r13 r12 rbx rbp, the return
  // address (fiber_entry, entered with rsp = 8 mod 16 as after a call), a null return address.
  auto* sp = reinterpret_cast<uint64_t*>(top - 8 - 8 * 8);
  sp[0] = r.initial_fp_state;
  for (int i = 1; i < 7; ++i) sp[i] = 0;
  sp[7] = reinterpret_cast<uint64_t>(&fiber_entry);
  sp[8] = 0;
  f->sp = sp;
#elif defined(__aarch64__)
  auto* sp = reinterpret_cast<uint64_t*>(top - 160);
  for (int i = 0; i < 20; ++i) sp[i] = 0;
  sp[11] = reinterpret_cast<uint64_t>(&fiber_entry);  // x30 (the link register) at [sp, #88]
  f->sp = sp;
#else
  if (getcontext(&f->uc) != 0) detail::fail("getcontext failed");
  f->uc.uc_stack.ss_sp = f->stack;
  f->uc.uc_stack.ss_size = f->stack_size;
  f->uc.uc_link = nullptr;
  makecontext(&f->uc, &fiber_trampoline, 0);
  (void)top;
#endif
#ifdef ZT_EMU_TSAN
  f->tsan = __tsan_create_fiber(0);
#endif
  r.pool.push_back(std::move(f));
  return r.pool.back().get();
}

void init_main() {
  Runtime& r = rt();
  static bool done = false;
  if (done) return;
  done = true;
#if defined(__x86_64__)
  uint32_t mxcsr = 0;
  uint16_t fpucw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  r.initial_fp_state = mxcsr | (static_cast<uint64_t>(fpucw) << 32);
#endif
#ifdef ZT_EMU_ASAN
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &r.main_stack_bottom, &r.main_stack_size);
    pthread_attr_destroy(&attr);
  }
#endif
#ifdef ZT_EMU_TSAN
  r.main.tsan = __tsan_get_current_fiber();
#endif
}

void switch_to(Fiber* to) {
  Runtime& r = rt();
  Fiber* from = r.cur;
  if (to == from) return;
  r.cur = to;
  if (to != &r.main) threadIdx = to->idx;
  ++r.stats.switches;
#ifdef ZT_EMU_ASAN
  if (to == &r.main) {
    __sanitizer_start_switch_fiber(&from->asan_fake, r.main_stack_bottom, r.main_stack_size);
  } else {
    __sanitizer_start_switch_fiber(&from->asan_fake, to->stack, to->stack_size);
  }
#endif
#ifdef ZT_EMU_TSAN
  __tsan_switch_to_fiber(to->tsan, 0);
#endif
#ifdef ZT_EMU_UCONTEXT
  if (swapcontext(&from->uc, &to->uc) != 0) detail::fail("swapcontext failed");
#else
  zt_emu_switch(&from->sp, to->sp);
#endif
#ifdef ZT_EMU_ASAN
  __sanitizer_finish_switch_fiber(from->asan_fake, nullptr, nullptr);
#endif
}

// The ready thread to run next: the lowest (Order::kForward) or highest (kReverse) thread index,
// or a random one. Lowest-first runs warp 0 until all of it waits at a block barrier, then warp 1,
// ...: a warp runs as far ahead of the others as the synchronisation allows, which is what turns a
// missing __syncthreads into a wrong result; highest-first does the same the other way round.
int pick_ready() {
  Runtime& r = rt();
  const int words = (r.nthreads + 63) / 64;
  switch (r.options.thread_order) {
    case Order::kForward:
      for (int w = 0; w < words; ++w) {
        if (r.ready[w] != 0) return 64 * w + __builtin_ctzll(r.ready[w]);
      }
      break;
    case Order::kReverse:
      for (int w = words - 1; w >= 0; --w) {
        if (r.ready[w] != 0) return 64 * w + 63 - __builtin_clzll(r.ready[w]);
      }
      break;
    case Order::kRandom: {
      int k = static_cast<int>(r.rng() % static_cast<uint64_t>(r.nready));
      for (int w = 0; w < words; ++w) {
        const int c = __builtin_popcountll(r.ready[w]);
        if (k < c) {
          uint64_t m = r.ready[w];
          for (; k > 0; --k) m &= m - 1;
          return 64 * w + __builtin_ctzll(m);
        }
        k -= c;
      }
      break;
    }
  }
  detail::fail("internal error: no ready thread among %d", r.nready);
}

// Runs the next ready fiber, or returns to the launching context when there is none.
void schedule_away() {
  Runtime& r = rt();
  Fiber* next = &r.main;
  if (r.nready > 0) {
    const int t = pick_ready();
    r.ready[t / 64] &= ~(uint64_t{1} << (t % 64));
    --r.nready;
    next = r.pool[t].get();
  }
  switch_to(next);
}

// Marks the fibers ready to run.
void make_ready(const std::vector<Fiber*>& list) {
  Runtime& r = rt();
  for (Fiber* f : list) {
    f->state = State::kReady;
    f->op = nullptr;
    r.ready[f->tid / 64] |= uint64_t{1} << (f->tid % 64);
    ++r.nready;
  }
}

Fiber* current_thread(const char* what) {
  Runtime& r = rt();
  if (r.launch == nullptr || r.cur == &r.main) detail::fail("%s called outside a kernel", what);
  return r.cur;
}

// ---- warp collectives ----

bool lane_live(int base, int lane) {
  Runtime& r = rt();
  const int t = base + lane;
  return t < r.nthreads && r.pool[t]->state != State::kDone;
}

uint64_t bits_of_size(uint64_t v, int size) {
  return size >= 8 ? v : (v & ((uint64_t{1} << (8 * size)) - 1));
}

// Computes the results of a complete collective: lanes[l] is lane l's op (l in `part`, the live
// lanes of the mask).
void compute(LaneOp* const* lanes, unsigned part, int base) {
  LaneOp* any = nullptr;
  for (int l = 0; l < 32; ++l) {
    if ((part >> l) & 1u) {
      any = lanes[l];
      break;
    }
  }
  const Coll kind = any->kind;
  auto for_lanes = [&](auto&& fn) {
    for (unsigned m = part; m != 0; m &= m - 1) fn(__builtin_ctz(m));
  };
  switch (kind) {
    case Coll::kSyncwarp:
      return;
    case Coll::kShfl:
    case Coll::kShflUp:
    case Coll::kShflDown:
    case Coll::kShflXor:
      for_lanes([&](int l) {
        LaneOp& op = *lanes[l];
        const int w = op.width;
        if (w < 1 || w > 32 || (w & (w - 1)) != 0)
          detail::fail("%s: width %d is not a power of two in [1, 32]", coll_name(kind), w);
        const int seg = l & ~(w - 1), pos = l & (w - 1);
        int src = l;
        if (kind == Coll::kShfl) {
          src = seg + (op.arg & (w - 1));
        } else if (kind == Coll::kShflUp) {
          if (op.arg < 0 || op.arg > 32) detail::fail("__shfl_up_sync: delta %d", op.arg);
          if (pos >= op.arg) src = l - op.arg;
        } else if (kind == Coll::kShflDown) {
          if (op.arg < 0 || op.arg > 32) detail::fail("__shfl_down_sync: delta %d", op.arg);
          if (pos + op.arg < w) src = l + op.arg;
        } else {
          const int s = l ^ (op.arg & 31);
          if ((s & ~(w - 1)) <= seg) src = s;  // later segments: the lane's own value
        }
        if (src != l && !((part >> src) & 1u)) {
          detail::fail(
              "%s: lane %d (thread %d) reads lane %d, which is not a live lane of the mask "
              "%08x (undefined value)",
              coll_name(kind), l, base + l, src, op.mask);
        }
        op.out = src == l ? op.in : lanes[src]->in;
      });
      return;
    case Coll::kBallot:
    case Coll::kAny:
    case Coll::kAll: {
      unsigned ballot = 0;
      for_lanes([&](int l) {
        if (lanes[l]->in != 0) ballot |= 1u << l;
      });
      const uint64_t r = kind == Coll::kBallot ? ballot
                         : kind == Coll::kAny  ? (ballot != 0 ? 1 : 0)
                                               : (ballot == part ? 1 : 0);
      for_lanes([&](int l) { lanes[l]->out = r; });
      return;
    }
    case Coll::kMatchAny:
      for_lanes([&](int l) {
        unsigned same = 0;
        const uint64_t v = bits_of_size(lanes[l]->in, lanes[l]->size);
        for_lanes([&](int k) {
          if (bits_of_size(lanes[k]->in, lanes[k]->size) == v) same |= 1u << k;
        });
        lanes[l]->out = same;
      });
      return;
    case Coll::kMatchAll: {
      bool all = true;
      const uint64_t v = bits_of_size(any->in, any->size);
      for_lanes([&](int l) { all = all && bits_of_size(lanes[l]->in, lanes[l]->size) == v; });
      for_lanes([&](int l) {
        lanes[l]->out = all ? part : 0;
        lanes[l]->pred_out = all ? 1 : 0;
      });
      return;
    }
    case Coll::kReduceAdd:
    case Coll::kReduceMin:
    case Coll::kReduceMax:
    case Coll::kReduceAnd:
    case Coll::kReduceOr:
    case Coll::kReduceXor: {
      const bool sgn = any->is_signed;
      uint32_t acc = static_cast<uint32_t>(any->in);
      bool first = true;
      for_lanes([&](int l) {
        const uint32_t v = static_cast<uint32_t>(lanes[l]->in);
        if (first) {
          acc = v;
          first = false;
          return;
        }
        switch (kind) {
          case Coll::kReduceAdd:
            acc += v;
            break;
          case Coll::kReduceMin:
            acc = sgn ? (static_cast<int32_t>(v) < static_cast<int32_t>(acc) ? v : acc)
                      : std::min(acc, v);
            break;
          case Coll::kReduceMax:
            acc = sgn ? (static_cast<int32_t>(v) > static_cast<int32_t>(acc) ? v : acc)
                      : std::max(acc, v);
            break;
          case Coll::kReduceAnd:
            acc &= v;
            break;
          case Coll::kReduceOr:
            acc |= v;
            break;
          default:
            acc ^= v;
            break;
        }
      });
      for_lanes([&](int l) { lanes[l]->out = acc; });
      return;
    }
    case Coll::kCustom:
      if (part != 0xFFFFFFFFu) {
        detail::fail("%s needs all 32 lanes of the warp; live lanes of the mask: %08x",
                     coll_name(kind), part);
      }
      any->custom(lanes);
      return;
  }
}

// If every live lane of `mask` in the warp at `base` waits in a collective with that mask,
// computes it and makes those lanes ready (except `self`, which continues). Returns whether it did.
bool try_complete(int base, unsigned mask, Fiber* self) {
  Runtime& r = rt();
  LaneOp* lanes[32] = {};
  unsigned part = 0;
  Coll kind = Coll::kSyncwarp;
  int first = -1;
  for (unsigned m = mask; m != 0; m &= m - 1) {
    const int l = __builtin_ctz(m);
    if (!lane_live(base, l)) continue;
    Fiber* g = r.pool[base + l].get();
    if (g->state != State::kWarp || g->op->mask != mask) return false;
    if (first < 0) {
      first = l;
      kind = g->op->kind;
    } else if (g->op->kind != kind || g->op->custom != r.pool[base + first]->op->custom) {
      detail::fail(
          "lanes %d and %d of warp %d meet with mask %08x in different collectives (%s "
          "and %s): undefined behaviour (a hang on a GPU)",
          first, l, base / 32, mask, coll_name(kind), coll_name(g->op->kind));
    }
    lanes[l] = g->op;
    part |= 1u << l;
  }
  if (part == 0) return false;
  compute(lanes, part, base);
  std::vector<Fiber*> others;
  for (unsigned m = part; m != 0; m &= m - 1) {
    Fiber* g = r.pool[base + __builtin_ctz(m)].get();
    if (g == self) {
      g->state = State::kReady;
      g->op = nullptr;
    } else {
      others.push_back(g);
    }
  }
  make_ready(others);
  return true;
}

// ---- shared memory ----

void fill_guard(unsigned char* p) { std::memset(p, kCanary, kGuard); }
bool guard_intact(const unsigned char* p) {
  for (size_t i = 0; i < kGuard; ++i) {
    if (p[i] != kCanary) return false;
  }
  return true;
}

void check_guards() {
  Runtime& r = rt();
  if (!guard_intact(r.dyn + kDynOffset - kGuard)) {
    detail::fail("a write before the start of dynamic shared memory");
  }
  if (!guard_intact(r.dyn + kDynOffset + r.dyn_bytes)) {
    detail::fail("a write past the end of dynamic shared memory (%zu bytes)", r.dyn_bytes);
  }
  for (const auto& [key, v] : r.stat_vars) {
    if (!guard_intact(r.stat + v.offset + v.size)) {
      detail::fail("a write past the end of __shared__ %s (%zu bytes)", v.name, v.size);
    }
  }
}

// ---- cp.async ----

void apply(const AsyncCopy& c) {
  std::memcpy(c.dst, c.src, c.n - c.zfill);
  if (c.zfill != 0) std::memset(static_cast<char*>(c.dst) + (c.n - c.zfill), 0, c.zfill);
}

void flush_async(Fiber* f) {
  if (!f->open.empty()) {
    f->committed.push_back(std::move(f->open));
    f->open.clear();
  }
  for (const auto& group : f->committed) {
    for (const AsyncCopy& c : group) apply(c);
  }
  f->committed.clear();
}

void thread_exit() {
  Runtime& r = rt();
  Fiber* f = r.cur;
  flush_async(f);  // copies still in flight land before the thread is gone
  if (r.bar_waiting > 0) {
    detail::fail(
        "the thread exits while %d thread(s) of the block wait at __syncthreads (a "
        "barrier in non-uniform control flow: undefined behaviour, a hang on a GPU)",
        r.bar_waiting);
  }
  f->state = State::kDone;
  f->op = nullptr;
  ++r.exited;
  // A collective waiting for this lane may now be complete (exited lanes are not waited for).
  const int base = f->tid & ~31, lane = f->tid & 31;
  for (int l = 0; l < 32 && base + l < r.nthreads; ++l) {
    Fiber* g = r.pool[base + l].get();
    if (g->state == State::kWarp && ((g->op->mask >> lane) & 1u)) {
      try_complete(base, g->op->mask, nullptr);
    }
  }
  schedule_away();
}

void describe_deadlock() {
  Runtime& r = rt();
  std::string msg;
  int at_barrier = 0;
  for (int t = 0; t < r.nthreads; ++t) {
    const Fiber* f = r.pool[t].get();
    if (f->state == State::kBarrier) ++at_barrier;
    if (f->state == State::kWarp) {
      char line[160];
      std::snprintf(line, sizeof line, "\n  thread %d (warp %d lane %d) waits in %s, mask %08x", t,
                    t / 32, t % 32, coll_name(f->op->kind), f->op->mask);
      msg += line;
    }
  }
  detail::fail("deadlock: %d of %d thread(s) wait at __syncthreads, the others below:%s",
               at_barrier, r.nthreads, msg.c_str());
}

}  // namespace

Options& options() { return rt().options; }
const Stats& stats() { return rt().stats; }

void reset() {
  Runtime& r = rt();
  r.options = Options{};
  r.stats = Stats{};
  r.error = cudaSuccess;
  r.max_dynamic.clear();
}

namespace detail {

void fail(const char* fmt, ...) {
  Runtime& r = rt();
  std::fflush(stdout);
  if (r.launch != nullptr) {
    if (r.cur != &r.main) {
      std::fprintf(
          stderr,
          "zt_emu: FAILURE in kernel %s, block (%u,%u,%u) of (%u,%u,%u), thread (%u,%u,%u) "
          "of (%u,%u,%u): ",
          r.launch->name, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z,
          threadIdx.x, threadIdx.y, threadIdx.z, blockDim.x, blockDim.y, blockDim.z);
    } else {
      std::fprintf(stderr, "zt_emu: FAILURE in kernel %s, block (%u,%u,%u): ", r.launch->name,
                   blockIdx.x, blockIdx.y, blockIdx.z);
    }
  } else {
    std::fprintf(stderr, "zt_emu: FAILURE: ");
  }
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::abort();
}

void warp_collective(LaneOp& op) {
  Runtime& r = rt();
  Fiber* f = current_thread(coll_name(op.kind));
  const int lane = f->tid & 31, base = f->tid & ~31;
  if (((op.mask >> lane) & 1u) == 0) {
    fail("%s: the mask %08x leaves out the calling lane %d (undefined behaviour)",
         coll_name(op.kind), op.mask, lane);
  }
  f->op = &op;
  f->state = State::kWarp;
  if (!try_complete(base, op.mask, f)) schedule_away();
  (void)r;
}

int block_barrier(int kind, int pred) {
  Runtime& r = rt();
  Fiber* f = current_thread("__syncthreads");
  if (r.exited > 0) {
    fail(
        "__syncthreads reached after %d thread(s) of the block exited (a barrier in non-uniform "
        "control flow: undefined behaviour per the CUDA programming guide)",
        r.exited);
  }
  if (r.bar_waiting == 0) {
    r.bar_kind = kind;
    r.bar_acc = kind == 2 ? 1 : 0;
  } else if (kind != r.bar_kind) {
    fail("threads meet in different __syncthreads variants");
  }
  const int p = pred != 0 ? 1 : 0;
  if (kind == 1) r.bar_acc += p;
  if (kind == 2) r.bar_acc &= p;
  if (kind == 3) r.bar_acc |= p;
  f->state = State::kBarrier;
  if (++r.bar_waiting == r.nthreads) {
    r.bar_result = r.bar_acc;
    r.bar_waiting = 0;
    std::vector<Fiber*> others;
    others.reserve(static_cast<size_t>(r.nthreads));
    for (int t = 0; t < r.nthreads; ++t) {
      Fiber* g = r.pool[t].get();
      if (g != f) others.push_back(g);
    }
    make_ready(others);
    f->state = State::kReady;
    return r.bar_result;
  }
  schedule_away();
  return r.bar_result;
}

void* dynamic_smem(size_t align) {
  Runtime& r = rt();
  current_thread("extern __shared__");
  if (align > kDynOffset) fail("extern __shared__ aligned to %zu (the emulator gives 128)", align);
  return r.dyn + kDynOffset;
}

void* static_shared(const void* key, size_t size, size_t align, const char* name) {
  Runtime& r = rt();
  current_thread("__shared__");
  const auto it = r.stat_vars.find(key);
  if (it != r.stat_vars.end()) return r.stat + it->second.offset;
  if (align == 0 || (align & (align - 1)) != 0) fail("__shared__ %s: alignment %zu", name, align);
  // What the block would use on a GPU (the variables packed at their alignment) is what counts
  // against the limits; the arena also holds a guard after each variable and the extra offset
  // that keeps each one exactly as aligned as declared.
  r.stat_packed = (r.stat_packed + align - 1) / align * align + size;
  if (r.stat_packed > kStaticLimit) {
    fail("static shared memory exceeds 48 KiB (%zu bytes) with __shared__ %s (%zu bytes)",
         r.stat_packed, name, size);
  }
  if (r.stat_packed + r.dyn_bytes > static_cast<size_t>(r.options.smem_optin)) {
    fail("static (%zu) + dynamic (%zu) shared memory exceed the opt-in limit %d", r.stat_packed,
         r.dyn_bytes, r.options.smem_optin);
  }
  size_t off = (r.stat_used + align - 1) / align * align;
  if (align < 4096 && off % (2 * align) == 0) off += align;  // exactly as aligned as declared
  const size_t end = off + size;
  if (end + kGuard > kStaticArena) fail("__shared__ %s: the emulator's arena is full", name);
  std::memset(r.stat + off, kFill, size);
  fill_guard(r.stat + end);
  r.stat_vars.emplace(key, StaticVar{off, size, name});
  r.stat_used = end + kGuard;
  return r.stat + off;
}

bool in_shared(const void* p, size_t n) {
  Runtime& r = rt();
  const auto* c = static_cast<const unsigned char*>(p);
  const unsigned char* d = r.dyn + kDynOffset;
  if (r.dyn != nullptr && c >= d && c + n <= d + r.dyn_bytes) return true;
  return r.stat != nullptr && c >= r.stat && c + n <= r.stat + r.stat_used;
}

void async_copy(void* dst, const void* src, size_t n, size_t zfill) {
  Runtime& r = rt();
  Fiber* f = current_thread("__pipeline_memcpy_async");
  if (n != 4 && n != 8 && n != 16) fail("cp.async of %zu bytes (4, 8 or 16)", n);
  if (zfill > n) fail("cp.async zero-fill %zu > size %zu", zfill, n);
  if (reinterpret_cast<uintptr_t>(dst) % n != 0 || reinterpret_cast<uintptr_t>(src) % n != 0) {
    fail("cp.async of %zu bytes from %p to %p: addresses not aligned to the size", n, src, dst);
  }
  if (!in_shared(dst, n)) fail("cp.async destination %p is not in shared memory", dst);
  if (in_shared(src, n)) fail("cp.async source %p is in shared memory", src);
  const AsyncCopy c{dst, src, n, zfill};
  if (r.options.late_async_copies) {
    f->open.push_back(c);
  } else {
    apply(c);
  }
}

void async_commit() {
  Fiber* f = current_thread("__pipeline_commit");
  f->committed.push_back(std::move(f->open));
  f->open.clear();
}

void async_wait_prior(size_t n) {
  Fiber* f = current_thread("__pipeline_wait_prior");
  while (f->committed.size() > n) {
    for (const AsyncCopy& c : f->committed.front()) apply(c);
    f->committed.pop_front();
  }
}

void set_max_dynamic_smem(const void* kernel, int bytes) { rt().max_dynamic[kernel] = bytes; }

void set_error(cudaError_t e) { rt().error = e; }

cudaError_t get_error(bool clear) {
  Runtime& r = rt();
  const cudaError_t e = r.error;
  if (clear) r.error = cudaSuccess;
  return e;
}

void run(const KernelLaunch& l) {
  Runtime& r = rt();
  if (r.launch != nullptr) {
    fail("kernel %s launched from inside a kernel (dynamic parallelism is not emulated)", l.name);
  }
  init_main();
  const dim3 g = l.grid, b = l.block;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > 1024 ||
      g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7FFFFFFFu || g.y > 65535 || g.z > 65535) {
    set_error(cudaErrorInvalidConfiguration);
    return;
  }
  if (threads > static_cast<uint64_t>(l.max_threads)) {
    set_error(cudaErrorLaunchOutOfResources);  // more threads than __launch_bounds__ allows
    return;
  }
  size_t dyn_limit = kDefaultDynamic;
  const auto attr = r.max_dynamic.find(l.fn);
  if (attr != r.max_dynamic.end())
    dyn_limit = std::max(dyn_limit, static_cast<size_t>(attr->second));
  if (l.smem > dyn_limit) {
    set_error(cudaErrorInvalidValue);
    return;
  }
  const uint64_t nblocks = uint64_t{g.x} * g.y * g.z;
  if (nblocks > kMaxBlocks)
    fail("kernel %s: %llu blocks, too many to emulate", l.name,
         static_cast<unsigned long long>(nblocks));
  ++r.stats.launches;
  r.stats.kernels.emplace_back(l.name);
  static const bool verbose = std::getenv("ZT_EMU_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "zt_emu: %s<<<(%u,%u,%u), (%u,%u,%u), %zu>>>\n", l.name, g.x, g.y, g.z,
                 b.x, b.y, b.z, l.smem);
  }

  const int n = static_cast<int>(threads);
  while (static_cast<int>(r.pool.size()) < n) new_fiber();
  const size_t dyn_need = kDynOffset + l.smem + kGuard;
  if (r.dyn_capacity < dyn_need) {
    std::free(r.dyn);
    r.dyn_capacity = std::max<size_t>(dyn_need, 64 * 1024);
    r.dyn = static_cast<unsigned char*>(
        std::aligned_alloc(4096, (r.dyn_capacity + 4095) / 4096 * 4096));
    if (r.dyn == nullptr) fail("out of memory for shared memory");
  }
  if (r.stat == nullptr) {
    r.stat = static_cast<unsigned char*>(std::aligned_alloc(4096, kStaticArena));
    if (r.stat == nullptr) fail("out of memory for shared memory");
  }
  r.dyn_bytes = l.smem;

  std::vector<uint64_t> order(nblocks);
  for (uint64_t i = 0; i < nblocks; ++i) order[i] = i;
  r.rng.seed(r.options.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(r.stats.launches));
  if (r.options.block_order == Order::kReverse) std::reverse(order.begin(), order.end());
  if (r.options.block_order == Order::kRandom) std::shuffle(order.begin(), order.end(), r.rng);

  r.launch = &l;
  r.nthreads = n;
  blockDim = b;
  gridDim = g;
  std::vector<Fiber*> all(static_cast<size_t>(n));
  for (const uint64_t blk : order) {
    blockIdx = uint3{static_cast<unsigned>(blk % g.x), static_cast<unsigned>((blk / g.x) % g.y),
                     static_cast<unsigned>(blk / (uint64_t{g.x} * g.y))};
    r.exited = 0;
    r.bar_waiting = 0;
    std::memset(r.ready, 0, sizeof r.ready);
    r.nready = 0;
    r.stat_vars.clear();
    r.stat_used = 0;
    r.stat_packed = 0;
    fill_guard(r.dyn + kDynOffset - kGuard);
    std::memset(r.dyn + kDynOffset, kFill, l.smem);
    fill_guard(r.dyn + kDynOffset + l.smem);
    for (int t = 0; t < n; ++t) {
      Fiber* f = r.pool[t].get();
      f->tid = t;
      f->idx = uint3{static_cast<unsigned>(t % b.x), static_cast<unsigned>((t / b.x) % b.y),
                     static_cast<unsigned>(t / (b.x * b.y))};
      f->open.clear();
      f->committed.clear();
      all[t] = f;
    }
    make_ready(all);
    schedule_away();  // runs the block's threads; returns when none is ready
    for (int t = 0; t < n; ++t) {
      if (r.pool[t]->state != State::kDone) describe_deadlock();
    }
    check_guards();
    ++r.stats.blocks;
    r.stats.threads += n;
  }
  r.launch = nullptr;
}

}  // namespace detail
}  // namespace zt_emu
