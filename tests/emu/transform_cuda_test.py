#!/usr/bin/env python3
"""Tests of transform_cuda.py (ctest emu.transform_cuda): the forms of launches and shared-memory
declarations it rewrites, line numbers kept, and the loud failures on what it cannot rewrite."""

import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import transform_cuda as tc  # noqa: E402


def body(src, **kw):
    out, _ = tc.transform(src, "/x/k.cu", 900, **kw)
    return out.split('#line 1 "/x/k.cu"\n', 1)[1]


class TransformTest(unittest.TestCase):
    def test_launch_forms(self):
        src = ("template <typename T, int N>\n"
               "__global__ void __launch_bounds__(kThreads, f(N)) tk(T* p, int n) {}\n"
               "__global__ void k(int* p) {}\n"
               "__global__ void e() {}\n"
               "void host() {\n"
               "  tk<float, 4>\n      <<<grid, kThreads, bytes, stream>>>(p, n);\n"
               "  k<<<1, dim3(32, 2)>>>(\n      p);\n"
               "  e<<<g, b, 0>>>();\n"
               "  tk<<<g, b>>>(q, m);\n"
               "}\n")
        out = body(src)
        self.assertEqual(out.count("\n"), src.count("\n"))
        self.assertIn('::zt_emu::launch("tk<float, 4>", kThreads, tk<float, 4>\n      , '
                      "::zt_emu::LaunchConfig{grid, kThreads, bytes, stream}, p, n)", out)
        self.assertIn('::zt_emu::launch("k", 1024, k, ::zt_emu::LaunchConfig{1, dim3(32, 2)}, \n'
                      "      p)", out)
        self.assertIn('::zt_emu::launch("e", 1024, e, ::zt_emu::LaunchConfig{g, b, 0})', out)
        self.assertIn('::zt_emu::launch_deduced("tk", kThreads, ::zt_emu::LaunchConfig{g, b}, '
                      "[](auto... zt_emu_args) { tk(zt_emu_args...); }, q, m)", out)

    def test_shared_forms(self):
        src = ("__global__ void k() {\n"
               "  extern __shared__ __align__(128) unsigned char dyn[];\n"
               "  extern __shared__ float fdyn[];\n"
               "  __shared__ float2 red[2][kWarpSize];\n"
               "  __shared__ __align__(16) uint32_t a[kW], b[kW];\n"
               "  __shared__ int32_t s_prev,\n      s_next;  // comment with __shared__ and <<<\n"
               "  const char* s = \"__shared__ <<<\";\n"
               "}\n")
        out = body(src)
        self.assertEqual(out.count("\n"), src.count("\n"))
        self.assertIn("unsigned char* dyn = static_cast<unsigned char*>("
                      "::zt_emu::detail::dynamic_smem(128));", out)
        self.assertIn("float* fdyn = static_cast<float*>(::zt_emu::detail::dynamic_smem("
                      "alignof(float)));", out)
        self.assertRegex(out, r'auto& red = ::zt_emu::shared_var<float2\[2\]\[kWarpSize\], \d+>'
                              r'\("red"\);')
        self.assertRegex(out, r'auto& a = ::zt_emu::shared_var<uint32_t\[kW\], \d+, 16>\("a"\); '
                              r'auto& b = ::zt_emu::shared_var<uint32_t\[kW\], \d+, 16>\("b"\);')
        self.assertRegex(out, r'auto& s_prev = ::zt_emu::shared_var<int32_t, \d+>\("s_prev"\); '
                              r'auto& s_next = ')
        self.assertIn('"__shared__ <<<"', out)  # string literals and comments untouched
        self.assertIn("// comment with __shared__ and <<<", out)

    def test_fails_loudly(self):
        bad = {
            "initialised shared": "__global__ void k() { __shared__ int x = 0; }\n",
            "unsized static shared": "__global__ void k() { __shared__ float x[]; }\n",
            "extern shared of a fixed size":
                "__global__ void k() { extern __shared__ float x[4]; }\n",
            "launch without arguments": "void h() { k<<<1, 2>>>; }\n",
            "launch without >>>": "void h() { k<<<1, 2(x); }\n",
            "empty configuration": "void h() { k<<<>>>(x); }\n",
            "no kernel name": "void h() { (<<<1, 2>>>(x)); }\n",
        }
        for what, src in bad.items():
            with self.subTest(what):
                with self.assertRaises(tc.TransformError):
                    tc.transform(src, "/x/k.cu", 900)

    def test_set_constants(self):
        src = "constexpr size_t kMaxGrid = 4096;\nconstexpr int kOther = kMaxGrid / 2;\n"
        out = body(src, sets=["kMaxGrid=3"])
        self.assertIn("constexpr size_t kMaxGrid = 3;", out)
        self.assertIn("kOther = kMaxGrid / 2;", out)
        with self.assertRaises(tc.TransformError):
            tc.transform(src, "/x/k.cu", 900, sets=["kMissing=1"])

    def test_command_line_exit_status(self):
        with tempfile.TemporaryDirectory() as d:
            good, bad, out = (os.path.join(d, n) for n in ("good.cu", "bad.cu", "out.cpp"))
            with open(good, "w") as f:
                f.write("__global__ void k(int* p) {}\nvoid h(int* p) { k<<<1, 32>>>(p); }\n")
            with open(bad, "w") as f:
                f.write("__global__ void k() { __shared__ int x = 1; }\n")
            script = os.path.join(HERE, "transform_cuda.py")
            ok = subprocess.run([sys.executable, script, good, out], capture_output=True, text=True)
            self.assertEqual(ok.returncode, 0, ok.stderr)
            with open(out) as f:
                text = f.read()
            self.assertIn("#define __CUDA_ARCH__ 900", text)
            self.assertIn('#line 1 "%s"' % good, text)
            fail = subprocess.run([sys.executable, script, bad, out], capture_output=True,
                                  text=True)
            self.assertEqual(fail.returncode, 1)
            self.assertIn("line 1", fail.stderr)

    def test_every_kernel_file(self):
        kernels = os.path.join(HERE, "..", "..", "kernels", "cuda")
        for name in sorted(os.listdir(kernels)):
            if name.endswith(".cu"):
                with self.subTest(name):
                    with open(os.path.join(kernels, name)) as f:
                        tc.transform(f.read(), name, 900)


if __name__ == "__main__":
    unittest.main()
