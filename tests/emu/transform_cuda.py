#!/usr/bin/env python3
"""Rewrites a CUDA source (.cu) into host C++ for the CPU emulator of tests/emu (cuda_emu.h).

  transform_cuda.py INPUT.cu OUTPUT.cpp [--arch 900] [--set NAME=VALUE ...]

Rewrites, keeping every line where it was (a #line directive maps diagnostics to INPUT):
  - kernel<<<grid, block[, smem[, stream]]>>>(args)
      -> ::zt_emu::launch("kernel", MAX_THREADS, kernel, ::zt_emu::LaunchConfig{grid, block, ...},
                          args)
    with MAX_THREADS the first argument of the kernel's __launch_bounds__ (1024 without); a
    template kernel launched without template arguments (deduced from the arguments) becomes
      -> ::zt_emu::launch_deduced("kernel", MAX_THREADS, ::zt_emu::LaunchConfig{...},
                                  [](auto... a) { kernel(a...); }, args)
  - extern __shared__ [__align__(N)] T name[];
      -> T* name = static_cast<T*>(::zt_emu::detail::dynamic_smem(N));
  - __shared__ [__align__(N)] T a[X][Y], b;   (inside a function)
      -> auto& a = ::zt_emu::shared_var<T[X][Y], ID, N>("a"); auto& b = ...;
and prepends `#define __CUDA_ARCH__ <arch>` and the emulator header. --set NAME=VALUE replaces the
initialiser of the constant `constexpr T NAME = ...;` (test variants: a grid limit of 3 blocks makes
the grid-stride loops of small inputs run several rounds). Comments and string literals
are left alone. Fails (exit status 1, naming the line) when a launch or a __shared__ declaration
has a form it does not know, or when any `<<<` or `__shared__` is left in the code afterwards.
"""

import argparse
import os
import re
import sys
import zlib


class TransformError(Exception):
    pass


def code_mask(src):
    """src with comments and string/character literals blanked (same length, newlines kept)."""
    out = list(src)
    i, n = 0, len(src)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            if j < 0:
                raise TransformError("unterminated comment")
            blank(i, j + 2)
            i = j + 2
        elif (c == "R" and src.startswith('R"', i)
              and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_"))):
            m = re.match(r'R"([^(\s]*)\(', src[i:])
            if not m:
                raise TransformError("malformed raw string literal")
            end = src.find(")" + m.group(1) + '"', i)
            if end < 0:
                raise TransformError("unterminated raw string literal")
            end += len(m.group(1)) + 2
            blank(i, end)
            i = end
        elif c == '"' or (c == "'" and not (i > 0 and src[i - 1].isalnum())):
            # A character literal, unless it is a digit separator (1'000).
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        else:
            i += 1
    return "".join(out)


def line_of(src, pos):
    return src.count("\n", 0, pos) + 1


def match_forward(mask, pos, open_ch, close_ch):
    """Index of the bracket closing the one at mask[pos]."""
    depth = 0
    for k in range(pos, len(mask)):
        if mask[k] == open_ch:
            depth += 1
        elif mask[k] == close_ch:
            depth -= 1
            if depth == 0:
                return k
    raise TransformError("unbalanced %s%s" % (open_ch, close_ch))


def split_top_level(text):
    """Splits at commas outside (), [], {} and <>."""
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    parts.append(text[start:])
    return parts


IDENT = re.compile(r"[A-Za-z_]\w*")
GLOBAL_DECL = re.compile(
    r"__global__\s+(?:void\s+)?"
    r"(?:__launch_bounds__\s*\((?P<lb>[^()]*(?:\([^()]*\)[^()]*)*)\)\s*)?"
    r"(?:void\s+)?(?P<name>[A-Za-z_]\w*)\s*\(")
ALIGN = re.compile(r"__align__\s*\(\s*([^()]*?)\s*\)")
DIMS = r"(?P<dims>(?:\[[^\]]*\]\s*)*)"


def kernel_decls(mask):
    """Kernel name -> (expression of its __launch_bounds__ maximum, whether it is a template), for
    the kernels declared in this file."""
    kernels = {}
    for m in GLOBAL_DECL.finditer(mask):
        name = m.group("name")
        is_template = re.search(r"template\s*<[^;{}]*>\s*$", mask[:m.start()]) is not None
        if m.group("lb") is not None:
            kernels[name] = (split_top_level(m.group("lb"))[0].strip(), is_template)
        else:
            kernels.setdefault(name, ("1024", is_template))
    return kernels


def kernel_start(mask, end):
    """Start of the kernel expression ending just before mask[end] (a name, maybe qualified, maybe
    with template arguments)."""
    i = end - 1
    while i >= 0 and mask[i].isspace():
        i -= 1
    while True:
        if mask[i] == ">":  # template arguments
            depth = 0
            while i >= 0:
                if mask[i] == ">":
                    depth += 1
                elif mask[i] == "<":
                    depth -= 1
                    if depth == 0:
                        break
                i -= 1
            i -= 1
            while i >= 0 and mask[i].isspace():
                i -= 1
        j = i
        while j >= 0 and (mask[j].isalnum() or mask[j] == "_"):
            j -= 1
        if j == i:
            raise TransformError("cannot find the kernel name before <<<")
        k = j
        while k >= 0 and mask[k].isspace():
            k -= 1
        if k >= 1 and mask[k - 1:k + 1] == "::":
            i = k - 2
            while i >= 0 and mask[i].isspace():
                i -= 1
            continue
        return j + 1


def transform_launches(src, kernels, warnings):
    mask = code_mask(src)
    pieces, pos = [], 0
    for m in re.finditer(r"<<<", mask):
        if m.start() < pos:
            raise TransformError("line %d: nested <<<" % line_of(src, m.start()))
        lt = m.start()
        gt = mask.find(">>>", lt + 3)
        if gt < 0:
            raise TransformError("line %d: <<< without >>>" % line_of(src, lt))
        start = kernel_start(mask, lt)
        name_end = lt
        while mask[name_end - 1].isspace():
            name_end -= 1
        after = gt + 3
        k = after
        while k < len(mask) and mask[k].isspace():
            k += 1
        if k >= len(mask) or mask[k] != "(":
            raise TransformError("line %d: no argument list after >>>" % line_of(src, lt))
        close = match_forward(mask, k, "(", ")")
        name = src[start:name_end]
        base = re.sub(r"<.*", "", re.sub(r"\s+", "", name)).split("::")[-1]
        if base not in kernels:
            warnings.append("line %d: kernel %s is not declared in this file; assuming a "
                            "non-template kernel without __launch_bounds__"
                            % (line_of(src, lt), base))
        max_threads, is_template = kernels.get(base, ("1024", False))
        cfg = src[lt + 3:gt]
        if not cfg.strip():
            raise TransformError("line %d: empty launch configuration" % line_of(src, lt))
        args = src[k + 1:close]
        label = re.sub(r"\s+", " ", name).replace("\\", "\\\\").replace('"', '\\"')
        if is_template and "<" not in name:
            # Template arguments deduced from the kernel arguments, as a call would deduce them.
            text = ('::zt_emu::launch_deduced("%s", %s, ::zt_emu::LaunchConfig{%s}%s, '
                    '[](auto... zt_emu_args) { %s%s(zt_emu_args...); }') % (
                label, max_threads, cfg, src[after:k], name, src[name_end:lt])
        else:
            text = '::zt_emu::launch("%s", %s, %s%s, ::zt_emu::LaunchConfig{%s}%s' % (
                label, max_threads, name, src[name_end:lt], cfg, src[after:k])
        text += (", " + args if args.strip() else args) + ")"
        pieces.append(src[pos:start])
        pieces.append(text)
        pos = close + 1
    pieces.append(src[pos:])
    return "".join(pieces)


def parse_align(decl):
    aligns = ALIGN.findall(decl)
    if len(aligns) > 1:
        raise TransformError("two __align__ in one declaration")
    return (aligns[0] if aligns else None), ALIGN.sub(" ", decl)


def transform_shared(src, file_id, counter):
    mask = code_mask(src)
    out, pos = [], 0
    for m in re.finditer(r"(\bextern\s+)?__shared__\b", mask):
        if m.start() < pos:
            continue
        semi = mask.find(";", m.end())
        if semi < 0:
            raise TransformError("line %d: __shared__ without ;" % line_of(src, m.start()))
        line = line_of(src, m.start())
        decl = src[m.end():semi]
        newlines = decl.count("\n")
        align, decl = parse_align(decl)
        decl = " ".join(decl.split())
        if m.group(1):  # extern __shared__: the dynamic shared memory
            d = re.fullmatch(r"(?P<type>.+?)\s*\b(?P<name>[A-Za-z_]\w*)\s*\[\s*\]", decl)
            if not d:
                raise TransformError("line %d: extern __shared__ of an unknown form: %s"
                                     % (line, decl))
            t = d.group("type").strip()
            text = "%s* %s = static_cast<%s*>(::zt_emu::detail::dynamic_smem(%s));" % (
                t, d.group("name"), t, align if align else "alignof(%s)" % t)
        else:
            if "=" in decl:
                raise TransformError("line %d: __shared__ with an initialiser or of an unknown "
                                     "form: %s" % (line, decl))
            parts = [p.strip() for p in split_top_level(decl)]
            first = re.fullmatch(r"(?P<type>.+?)\s*\b(?P<name>[A-Za-z_]\w*)\s*" + DIMS, parts[0])
            if not first or not first.group("type").strip():
                raise TransformError("line %d: __shared__ of an unknown form: %s" % (line, decl))
            base_type = first.group("type").strip().rstrip("*").strip()
            decls = [(first.group("type").strip(), first.group("name"), first.group("dims"))]
            for p in parts[1:]:
                d = re.fullmatch(r"(?P<ptr>\**)\s*(?P<name>[A-Za-z_]\w*)\s*" + DIMS, p)
                if not d:
                    raise TransformError("line %d: __shared__ declarator of an unknown form: %s"
                                         % (line, p))
                decls.append((base_type + d.group("ptr"), d.group("name"), d.group("dims")))
            texts = []
            for t, name, dims in decls:
                counter[0] += 1
                dims = "".join(dims.split())
                if "[]" in dims:
                    raise TransformError("line %d: __shared__ %s has no size (only extern "
                                         "__shared__ arrays may be unsized)" % (line, name))
                texts.append('auto& %s = ::zt_emu::shared_var<%s%s, %d%s>("%s");' % (
                    name, t, dims, file_id + counter[0], (", " + align) if align else "", name))
            text = " ".join(texts)
        out.append(src[pos:m.start()])
        out.append(text + "\n" * newlines)
        pos = semi + 1
    out.append(src[pos:])
    return "".join(out)


def override_constants(src, sets):
    """Replaces the initialiser of `constexpr T NAME = ...;` for each NAME=VALUE of sets."""
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or not IDENT.fullmatch(name) or not value.strip():
            raise TransformError("--set %s: expected NAME=VALUE" % item)
        mask = code_mask(src)
        found = list(re.finditer(r"\bconstexpr\s+[^;=(){}]*?\b%s\s*=\s*([^;]*);" % name, mask))
        if len(found) != 1:
            raise TransformError("--set %s: %d constexpr definitions of %s (want 1)" %
                                 (item, len(found), name))
        m = found[0]
        src = src[:m.start(1)] + value.strip() + src[m.end(1):]
    return src


def transform(src, path, arch, sets=()):
    warnings = []
    src = override_constants(src, sets)
    kernels = kernel_decls(code_mask(src))
    file_id = (zlib.crc32(os.path.basename(path).encode()) % 100000) * 1000
    body = transform_shared(src, file_id, [0])
    body = transform_launches(body, kernels, warnings)
    mask = code_mask(body)
    left = [line_of(body, m.start()) for m in re.finditer(r"<<<|\b__shared__\b", mask)]
    if left:
        raise TransformError("untransformed <<< or __shared__ left on line(s) %s" %
                             ", ".join(map(str, left)))
    if body.count("\n") != src.count("\n"):
        raise TransformError("internal error: the line count changed")
    header = ("// Generated by tests/emu/transform_cuda.py from %s: do not edit.\n"
              "#define __CUDA_ARCH__ %d\n"
              '#include "tests/emu/cuda_emu.h"\n'
              '#line 1 "%s"\n') % (path, arch, path)
    return header + body, warnings


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--arch", type=int, default=900, help="__CUDA_ARCH__ of the emulated device")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="replace the value of the constexpr constant NAME (a test variant, e.g. "
                    "a small grid limit so that grid-stride loops run several rounds)")
    a = ap.parse_args()
    with open(a.input, encoding="utf-8") as f:
        src = f.read()
    try:
        out, warnings = transform(src, os.path.abspath(a.input), a.arch, a.set)
    except TransformError as e:
        sys.stderr.write("transform_cuda.py: %s: %s\n" % (a.input, e))
        return 1
    for w in warnings:
        sys.stderr.write("transform_cuda.py: %s: warning: %s\n" % (a.input, w))
    tmp = a.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(out)
    os.replace(tmp, a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
