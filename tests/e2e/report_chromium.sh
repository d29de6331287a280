#!/usr/bin/env bash
# `ztctl report` end to end, looked at by a real browser:
#  1. a real job (mpirun -np 2 zt-worker, configs/tiny.yaml, 20 steps) and `ztctl report` on its
#     run directory: exit 0, one HTML file with no external resources;
#  2. headless Chromium screenshots it at 1280x2400: the PNG is not blank and shows the charts'
#     colours (decoded here with zlib; numpy only speeds it up);
#  3. headless Chromium runs the page's self-check (every svg.zt-chart has data elements inside its
#     frame, or is a deliberate "not recorded" placeholder) and --dump-dom shows its verdict on
#     <body data-zt-check>: "ok", with the chart count the file declares and the seven charts a
#     plain CPU run always has;
#  4. the page logs nothing to the console (no uncaught error, no failed self-check);
#  5. the checks can fail: a copy with one chart emptied must fail the self-check, and a copy with
#     a script error must show an "Uncaught" line;
#  6. bad input: a malformed metrics line is an error naming file and line, and writes nothing.
# Skips (77) only when chromium is not installed (tools/setup.sh installs it with ZT_TEST_TOOLS=1).
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
SRC=${ZT_SOURCE_DIR:?}
ZTCTL=$BUILD/bin/ztctl
WORKER=$BUILD/bin/zt-worker
PY=/usr/bin/python3
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $CHROMIUM ]]; then
  echo "SKIP: chromium not installed (tools/setup.sh installs it with ZT_TEST_TOOLS=1)"
  exit 77
fi
for b in "$ZTCTL" "$WORKER"; do [[ -x $b ]] || { echo "FAIL: $b not built" >&2; exit 1; }; done
[[ -f $BUILD/data/corpus.tok ]] || { echo "FAIL: $BUILD/data/corpus.tok not built" >&2; exit 1; }
command -v mpirun > /dev/null || { echo "FAIL: mpirun not installed" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
T=$(mktemp -d /tmp/zt_e2e_report_XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$T"/*.txt; do [[ -f $f ]] && { echo "--- $f"; tail -8 "$f"; }; done >&2
  for f in "$T"/*.log; do  # Chromium's logs, less its D-Bus and GPU noise
    [[ -f $f ]] && { echo "--- $f"; grep -E 'CONSOLE|Uncaught|FATAL' "$f" | tail -8; }
  done >&2
  exit 1
}
SECONDS=0

# As root Chromium needs --no-sandbox; its own D-Bus and GPU complaints go to stderr and are
# ignored. A fresh profile per run keeps runs independent.
chromium() {  # name, extra args...
  local name=$1
  shift
  timeout 60 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
    --no-first-run --user-data-dir="$T/profile-$name" --enable-logging=stderr --v=0 "$@"
}

# 1. A real job: the tiny config with its data path pointed at this build.
sed "s|^\(\s*path:\).*corpus.tok.*|\1 $BUILD/data/corpus.tok|" "$SRC/configs/tiny.yaml" \
  > "$T/tiny.yaml"
grep -q "path: $BUILD/data/corpus.tok" "$T/tiny.yaml" ||
  fail "could not point tiny.yaml at the corpus"
mpirun -np 2 --oversubscribe "$WORKER" --config "$T/tiny.yaml" --run-dir "$T/run" --steps 20 \
  > "$T/job.txt" 2>&1 || fail "the job failed"
[[ $(wc -l < "$T/run/metrics.jsonl") -eq 20 ]] || fail "expected 20 metrics lines"
echo "job: 20 steps in ${SECONDS}s"

"$ZTCTL" report --run-dir "$T/run" -o "$T/report.html" > "$T/report.txt" 2>&1 ||
  fail "ztctl report exited non-zero"
grep -q "wrote $T/report.html (20 steps, " "$T/report.txt" || fail "unexpected output"
[[ -s $T/report.html ]] || fail "no report written"
for f in "$T"/report.html.tmp.*; do [[ -e $f ]] && fail "temporary file left behind: $f"; done
# Self-contained: no scripts, styles, fonts or images from elsewhere.
external='<(script|link|img|iframe)[^>]+(src|href)=|@import|url\('
external+='|https?://[^"]*\.(js|css|woff2?|ttf|png)'
if grep -Eiq "$external" "$T/report.html"; then
  fail "the report refers to an external resource"
fi

# 2. Screenshot: decoded here (PNG = zlib + per-row filters), so no imaging library is needed.
chromium shot --screenshot="$T/shot.png" --window-size=1280,2400 "file://$T/report.html" \
  > "$T/shot.log" 2>&1 || fail "chromium --screenshot failed"
"$PY" - "$T/shot.png" <<'PY' || fail "the screenshot looks wrong"
import struct, sys, zlib

def decode_png(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    assert depth == 8 and interlace == 0 and ctype in (2, 6), (depth, ctype, interlace)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    prev = bytearray(stride)
    out = bytearray()
    for y in range(h):
        f = raw[y * (stride + 1)]
        cur = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride): cur[i] = (cur[i] + cur[i - bpp]) & 255
        elif f == 2:
            for i in range(stride): cur[i] = (cur[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                cur[i] = (cur[i] + ((a + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += cur
        prev = cur
    return w, h, bpp, bytes(out)

w, h, bpp, px = decode_png(sys.argv[1])
assert (w, h) == (1280, 2400), f"screenshot is {w}x{h}"
pixels = [tuple(px[i:i + 3]) for i in range(0, len(px), bpp * 2)]  # every other pixel
non_white = sum(1 for p in pixels if min(p) < 240) / len(pixels)
colours = len(set(pixels))
def share(rgb):
    return sum(1 for p in pixels if all(abs(p[k] - rgb[k]) <= 4 for k in range(3))) / len(pixels)
activations = share((0xCC, 0x79, 0xA7))  # the peak-memory bars' largest category
blue = share((0x00, 0x72, 0xB2))         # the first series of every line chart
print(f"screenshot {w}x{h}: {non_white:.1%} non-white, {colours} colours, "
      f"activations bars {activations:.2%}, blue {blue:.2%}")
assert non_white > 0.03, "almost blank"
assert colours > 100, "too few colours for charts"
assert activations > 0.002, "no peak-memory bars visible"
assert blue > 0.0005, "no chart lines visible"
PY

# 3 and 4. The page's own check, run by the browser, and its console.
# dom FILE NAME: the DOM after the inline script ran, and Chromium's log.
dom() {
  chromium "$2" --dump-dom "file://$1" > "$T/$2.dom" 2> "$T/$2.log" ||
    fail "chromium --dump-dom $1 failed"
  sed -n 's/.*<body[^>]* data-zt-check="\([^"]*\)".*/\1/p' "$T/$2.dom" | head -1
}
console_lines() {  # the page's console output and uncaught errors; Chromium's own noise is not
  grep -E ':CONSOLE[(:]|Uncaught' "$T/$1.log" || true
}
# grep finds nothing when the run recorded everything (no placeholder): not an error here.
declared=$({ grep -o 'class="zt-chart"' "$T/report.html" || true; } | wc -l)
placeholders=$({ grep -o 'class="zt-chart zt-placeholder"' "$T/report.html" || true; } | wc -l)
verdict=$(dom "$T/report.html" page)
echo "self-check: $verdict"
[[ $verdict == "ok charts=$declared placeholders=$placeholders" ]] ||
  fail "self-check says '$verdict'; the file has $declared charts, $placeholders placeholders"
[[ $declared -ge 7 ]] || fail "only $declared charts with data"
for id in chart-loss chart-lr chart-grad-norm chart-loss-scale chart-throughput chart-memory-peak \
  chart-memory-timeline; do
  grep -q "class=\"zt-chart\" id=\"$id\"" "$T/page.dom" || fail "$id is missing or has no data"
done
grep -q "<td class=\"text\">finished 20 steps</td>" "$T/page.dom" || fail "events.log not shown"
grep -q '<pre class="config">' "$T/page.dom" || fail "config not shown"
[[ -z $(console_lines page) ]] || fail "the page wrote to the console: $(console_lines page)"

# 5. The checks catch a broken page: the loss chart's line removed, then a script error.
"$PY" - "$T/report.html" "$T/broken.html" <<'PY'
import re, sys
html = open(sys.argv[1]).read()
start = html.index('id="chart-loss"')
path = re.compile(r'<path class="zt-series"[^>]*>.*?</path>', re.S)
m = path.search(html, start)
assert m, "no series path in chart-loss"
open(sys.argv[2], "w").write(html[:m.start()] + html[m.end():])
PY
verdict=$(dom "$T/broken.html" broken)
[[ $verdict == fail*chart-loss* ]] ||
  fail "a chart without its line passed the self-check: '$verdict'"
console_lines broken | grep -q "self-check" || fail "a failed self-check logged nothing"
sed 's|<script>|<script>undefined_function_zt();</script><script>|' "$T/report.html" \
  > "$T/jserror.html"
dom "$T/jserror.html" jserror > /dev/null
console_lines jserror | grep -q "Uncaught" || fail "a script error was not seen in the log"
echo "negative checks: an emptied chart and a script error are both caught"

# 6. Bad input: an error naming the line, nothing written; a cut-off last line is only a note.
mkdir "$T/bad"
head -3 "$T/run/metrics.jsonl" > "$T/bad/metrics.jsonl"
echo '{"step": 4, "loss": oops}' >> "$T/bad/metrics.jsonl"
if "$ZTCTL" report --run-dir "$T/bad" -o "$T/bad.html" > "$T/bad.txt" 2>&1; then
  fail "a malformed metrics line was accepted"
fi
grep -q "metrics.jsonl:4: not valid JSON" "$T/bad.txt" || fail "error does not name the line"
[[ ! -e $T/bad.html ]] || fail "a failed report left a file"
head -3 "$T/run/metrics.jsonl" > "$T/bad/metrics.jsonl"
printf '{"step": 4, "lo' >> "$T/bad/metrics.jsonl"
"$ZTCTL" report --run-dir "$T/bad" -o "$T/partial.html" > "$T/partial.txt" 2>&1 ||
  fail "a cut-off last line made the report fail"
grep -q "is incomplete" "$T/partial.html" || fail "no note about the cut-off line"
echo "report_chromium: all checks passed in ${SECONDS}s"
