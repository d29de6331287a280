// Charts as inline SVG for `ztctl report`: line charts with several series, stacked bars and
// stacked areas, plus the axis arithmetic they share (nice tick values, tick labels, byte units).
// Pure functions from data to an SVG string, so tests pin the structure without a browser.
//
// Every chart is one <svg class="zt-chart" data-series="S" data-points="P"> with a viewBox (it
// scales to its container): S is the number of series (layers) drawn, P the number of data values
// drawn. Data elements carry the classes the report's self-check looks for: `zt-series` (one
// <path> per line series), `zt-area` (one <path> per stacked layer), `zt-bar` (one <rect> per bar
// segment). A chart without data is a placeholder: class "zt-chart zt-placeholder",
// data-series="0", data-points="0", and a sentence saying why. Tooltips are <title> elements.
// Colours come from the Okabe–Ito palette, which stays distinguishable with the common forms of
// colour blindness.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace zt::ctl::svg {

// Escapes &, <, >, " and ' for HTML/SVG text and attribute values.
std::string html_escape(std::string_view text);

// The i-th colour of the palette (wraps around).
const char* palette_colour(size_t i);

// Axis ticks: every value in [lo, hi] is a multiple of `step`, a 1, 2, 2.5 or 5 times a power of
// ten; lo <= the data's minimum and hi >= its maximum. `values` runs from lo to hi inclusive.
struct Ticks {
  double lo = 0;
  double hi = 1;
  double step = 1;
  std::vector<double> values;
};

// About `target` ticks (at least 2) covering [min, max]. A degenerate or non-finite range is
// widened first (a constant v gets a range around v; nothing finite gets [0, 1]). `integer`
// keeps the step at 1 or more (steps, ranks).
Ticks nice_ticks(double min, double max, int target = 5, bool integer = false);

// Ticks for a log axis over [min, max] (both > 0): powers of ten, with 2 and 5 times them when
// the range spans few decades; lo/hi are the outermost ticks. Falls back to the decades around
// a constant value.
Ticks log_ticks(double min, double max);

// A tick label: as many decimals as `step` needs, SI suffixes (k, M, G, T) from 10^4 up,
// scientific notation below 10^-3. "-0" never appears.
std::string format_tick(double value, double step);

// A value for a tooltip: 4 significant digits, the same notation rules as format_tick.
std::string format_value(double value);

// How to show a quantity of bytes on an axis: divide by `divisor` and label with `unit`
// ("B", "KiB", "MiB", "GiB", "TiB"), chosen so the largest value is below 1024 units.
struct ByteUnit {
  double divisor = 1;
  const char* unit = "B";
};
ByteUnit byte_unit(double max_bytes);
// "12.3 MiB".
std::string format_bytes(double bytes);

struct Series {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;  // non-finite values are gaps in the line
};

struct LineChart {
  std::string id;       // the svg's id attribute
  std::string title;    // the svg's <title> (its accessible name)
  std::string x_label;  // e.g. "step"
  std::string y_label;  // e.g. "loss (nats/token)"
  std::vector<Series> series;
  bool log_y = false;         // ignored (linear) when some finite y is <= 0
  bool integer_x = true;      // x is a step or a rank
  bool y_from_zero = false;   // include 0 in the y range (throughput, memory)
  double y_divisor = 1;       // y values are divided by this before drawing (byte units)
  std::string y_unit;         // appended to values in tooltips, e.g. "MiB", "tok/s"
  std::vector<double> marks;  // x positions marked with a vertical line (skipped steps)
  std::string marks_label;    // what a mark means, for its legend entry and tooltip
  int width = 640;
  int height = 300;
};

// One <path class="zt-series"> per series that has a finite point (M/L commands, a new M after a
// gap, one command per finite point), a legend when there is more than one series or marks, and
// a transparent hover column per x bucket whose <title> lists every series' value there. More
// than kMaxPathPoints points in a series are thinned (every k-th point plus each bucket's
// extremes are kept); data-points counts the input's finite points.
inline constexpr size_t kMaxPathPoints = 4000;
std::string line_chart(const LineChart& chart);

struct StackedBars {
  std::string id;
  std::string title;
  std::string x_label;                      // e.g. "rank"
  std::string y_label;                      // e.g. "peak memory"
  std::vector<std::string> groups;          // one bar per group, left to right ("rank 0", ...)
  std::vector<std::string> layers;          // stack order, bottom first ("parameters", ...)
  std::vector<std::vector<double>> values;  // values[layer][group], >= 0 (negative drawn as 0)
  bool bytes = false;                       // the values are bytes: axis in a byte unit
  std::string unit;                         // unit for tooltips when not bytes, e.g. "ms"
  std::vector<size_t> colours;              // palette index per layer; empty: 0, 1, 2, ...
  int width = 640;
  int height = 300;
};

// One <rect class="zt-bar"> per non-zero segment, a legend of the layers, the total above each
// bar. Group labels longer than the bar are rotated.
std::string stacked_bar_chart(const StackedBars& chart);

struct StackedArea {
  std::string id;
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<double> x;                    // increasing
  std::vector<std::string> layers;          // bottom first
  std::vector<std::vector<double>> values;  // values[layer][i]; non-finite or negative counts as 0
  std::string unit;                         // for the axis label and tooltips, e.g. "ms"
  std::vector<size_t> colours;
  int width = 640;
  int height = 300;
};

// One <path class="zt-area"> per layer with a non-zero value, a legend, hover columns with the
// layers' values and the total.
std::string stacked_area_chart(const StackedArea& chart);

// The placeholder for a chart with nothing to draw: its title and `note` in a framed box.
std::string placeholder_chart(const std::string& id, const std::string& title,
                              const std::string& note, int width = 640, int height = 120);

}  // namespace zt::ctl::svg
