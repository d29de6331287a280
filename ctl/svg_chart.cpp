#include "ctl/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <utility>

#include <fmt/format.h>

namespace zt::ctl::svg {
namespace {

constexpr double kCharWidth = 6.6;  // average advance of a 12 px sans-serif glyph
constexpr double kLegendRow = 18;
constexpr int kMaxHoverColumns = 240;
constexpr const char* kFont = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";
constexpr const char* kAxisColour = "#6b7280";
constexpr const char* kGridColour = "#e5e7eb";
constexpr const char* kTextColour = "#1f2937";
constexpr const char* kMarkColour = "#D55E00";

double text_width(std::string_view s) { return static_cast<double>(s.size()) * kCharWidth; }

// Trims "1.2500" to "1.25" and "3.000" to "3"; keeps integers as they are.
std::string strip_zeros(std::string s) {
  const size_t e = s.find_first_of("eE");
  std::string exponent = e == std::string::npos ? "" : s.substr(e);
  if (e != std::string::npos) s.resize(e);
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  return s + exponent;
}

std::string no_negative_zero(std::string s) {
  if (!s.empty() && s[0] == '-' && s.find_first_of("123456789") == std::string::npos) s.erase(0, 1);
  return s;
}

// Fewest decimals (up to 12) that show `step` exactly: 0.25 -> 2, 2.5 -> 1, 20 -> 0.
int decimals_for(double step) {
  for (int d = 0; d < 12; ++d) {
    const double scaled = step * std::pow(10.0, d);
    if (std::abs(scaled - std::round(scaled)) < 1e-6 * std::max(1.0, scaled)) return d;
  }
  return 12;
}

// Compact "1.5e-4" from a value and the decimals its mantissa needs.
std::string scientific(double value, int mantissa_decimals) {
  std::string s = fmt::format("{:.{}e}", value, std::clamp(mantissa_decimals, 0, 6));
  // fmt writes "1.5e-04": drop the exponent's leading zeros and '+'.
  const size_t e = s.find('e');
  std::string mantissa = strip_zeros(s.substr(0, e));
  int exponent = std::stoi(s.substr(e + 1));
  return no_negative_zero(mantissa) + "e" + std::to_string(exponent);
}

struct Si {
  double divisor;
  const char* suffix;
};
Si si_for(double magnitude) {
  if (magnitude >= 1e12) return {1e12, "T"};
  if (magnitude >= 1e9) return {1e9, "G"};
  if (magnitude >= 1e6) return {1e6, "M"};
  return {1e3, "k"};
}

std::string num(double v) {  // coordinates: one decimal is finer than a pixel
  return no_negative_zero(strip_zeros(fmt::format("{:.1f}", v)));
}

// The plot area inside the svg and the legend laid out above it.
struct Frame {
  double width, height;
  double left = 72, right = 20, top = 14, bottom = 46;
  double plot_x() const { return left; }
  double plot_y() const { return top; }
  double plot_w() const { return width - left - right; }
  double plot_h() const { return height - top - bottom; }
};

struct LegendItem {
  std::string name;
  std::string colour;
  bool line;              // a line swatch (series, marks) rather than a filled square (layers)
  std::string dash = "";  // stroke-dasharray of the swatch; empty: solid
  double stroke = 2.5;
};

// Series after the first get a dash pattern as well as a colour, so lines that coincide (ranks
// with identical memory) both stay visible, and colour is not the only cue.
std::string series_dash(size_t s, size_t drawn) {
  static constexpr const char* kDashes[] = {"8 4", "2 3", "10 3 2 3"};
  return drawn < 2 || s == 0 ? "" : kDashes[(s - 1) % 3];
}

// Lays the legend out in rows from the left edge of the plot; grows frame.top to hold them and
// returns the markup.
std::string legend(const std::vector<LegendItem>& items, Frame& frame) {
  if (items.empty()) return "";
  std::string out = "<g class=\"zt-legend\">";
  double x = frame.left, row = 0;
  const double max_x = frame.width - frame.right;
  std::vector<std::pair<double, double>> pos;
  for (const LegendItem& it : items) {
    const double w = 22 + text_width(it.name) + 16;
    if (x + w > max_x && x > frame.left) {
      x = frame.left;
      row += 1;
    }
    pos.emplace_back(x, row);
    x += w;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    const double ix = pos[i].first, iy = 8 + pos[i].second * kLegendRow;
    const LegendItem& it = items[i];
    if (it.line) {
      out += fmt::format(
          "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"{}/>",
          num(ix), num(iy + 6), num(ix + 16), num(iy + 6), it.colour, it.stroke,
          it.dash.empty() ? "" : " stroke-dasharray=\"" + it.dash + "\"");
    } else {
      out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>",
                         num(ix + 2), num(iy), it.colour);
    }
    out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{}\">{}</text>",
                       num(ix + 22), num(iy + 10), kTextColour, html_escape(it.name));
  }
  out += "</g>";
  frame.top = 8 + (pos.back().second + 1) * kLegendRow + 10;
  return out;
}

std::string svg_open(const std::string& id, const std::string& extra_class, double width,
                     double height, size_t series, size_t points, const std::string& title) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"zt-chart{}\" id=\"{}\" "
      "viewBox=\"0 0 {} {}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"xMidYMid meet\" "
      "role=\"img\" data-series=\"{}\" data-points=\"{}\" font-family=\"{}\"><title>{}</title>",
      extra_class, html_escape(id), num(width), num(height), num(width), num(height), series,
      points, kFont, html_escape(title));
}

// Horizontal grid lines and labels for the y ticks; the y axis label rotated on the left.
std::string y_axis(const Frame& f, const std::vector<double>& values,
                   const std::vector<std::string>& labels, const std::function<double(double)>& y,
                   const std::string& label) {
  std::string out = "<g class=\"zt-axis zt-y\">";
  for (size_t i = 0; i < values.size(); ++i) {
    const double py = y(values[i]);
    out += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"1\"/>",
        num(f.plot_x()), num(py), num(f.plot_x() + f.plot_w()), num(py), kGridColour);
    out += fmt::format(
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" fill=\"{}\">{}</text>",
        num(f.plot_x() - 6), num(py + 4), kAxisColour, html_escape(labels[i]));
  }
  const double cy = f.plot_y() + f.plot_h() / 2;
  out += fmt::format(
      "<text x=\"14\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" fill=\"{}\" "
      "transform=\"rotate(-90 14 {})\">{}</text></g>",
      num(cy), kTextColour, num(cy), html_escape(label));
  return out;
}

// The x axis line, ticks with labels and the axis label below.
std::string x_axis(const Frame& f, const std::vector<double>& values,
                   const std::vector<std::string>& labels, const std::function<double(double)>& x,
                   const std::string& label) {
  const double base = f.plot_y() + f.plot_h();
  std::string out = fmt::format(
      "<g class=\"zt-axis zt-x\"><line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" "
      "stroke-width=\"1\"/>",
      num(f.plot_x()), num(base), num(f.plot_x() + f.plot_w()), num(base), kAxisColour);
  for (size_t i = 0; i < values.size(); ++i) {
    const double px = x(values[i]);
    out += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"1\"/>", num(px),
        num(base), num(px), num(base + 4), kAxisColour);
    out += fmt::format(
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{}\">{}</text>",
        num(px), num(base + 17), kAxisColour, html_escape(labels[i]));
  }
  out += fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" fill=\"{}\">{}</text></g>",
      num(f.plot_x() + f.plot_w() / 2), num(f.height - 8), kTextColour, html_escape(label));
  return out;
}

std::vector<std::string> tick_labels(const Ticks& t) {
  std::vector<std::string> out;
  for (double v : t.values) out.push_back(format_tick(v, t.step));
  return out;
}

// Fewer x ticks when the plot is narrow, so labels never overlap.
int x_tick_target(const Frame& f) { return std::clamp(static_cast<int>(f.plot_w() / 80), 2, 10); }

std::string with_unit(const std::string& value, const std::string& unit) {
  return unit.empty() ? value : value + " " + unit;
}

// Transparent columns over the plot, one per x position (or bucket of positions), each with a
// <title>: a tooltip that works without script wherever the pointer is, unlike a title on a
// 2-pixel line.
std::string hover_columns(const Frame& f, const std::vector<double>& xs,
                          const std::function<double(double)>& x,
                          const std::function<std::string(size_t first, size_t last)>& text) {
  if (xs.empty()) return "";
  std::string out = "<g class=\"zt-hover\">";
  const size_t n = xs.size();
  const size_t columns = std::min<size_t>(n, kMaxHoverColumns);
  for (size_t c = 0; c < columns; ++c) {
    const size_t first = c * n / columns, last = (c + 1) * n / columns - 1;
    const double left = first == 0 ? f.plot_x() : (x(xs[first - 1]) + x(xs[first])) / 2;
    const double right =
        last + 1 == n ? f.plot_x() + f.plot_w() : (x(xs[last]) + x(xs[last + 1])) / 2;
    out += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"transparent\" "
        "pointer-events=\"all\"><title>{}</title></rect>",
        num(left), num(f.plot_y()), num(std::max(0.5, right - left)), num(f.plot_h()),
        html_escape(text(first, last)));
  }
  return out + "</g>";
}

std::string x_name(const std::string& x_label, double v) {
  return fmt::format("{} {}", x_label.empty() ? "x" : x_label, format_value(v));
}

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

const char* palette_colour(size_t i) {
  // Okabe & Ito (2008), yellow last: it is the weakest on white.
  static constexpr const char* kPalette[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7",
                                             "#56B4E9", "#D55E00", "#000000", "#F0E442"};
  return kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

Ticks nice_ticks(double min, double max, int target, bool integer) {
  if (!std::isfinite(min) && !std::isfinite(max)) min = 0, max = 1;
  if (!std::isfinite(min)) min = max;
  if (!std::isfinite(max)) max = min;
  if (min > max) std::swap(min, max);
  target = std::max(2, target);
  if (max - min <= 1e-12 * std::max(std::abs(min), std::abs(max))) {
    if (integer) {
      min -= 1, max += 1;
    } else if (max == 0) {
      max = 1;
    } else {
      const double pad = std::abs(max) * 0.05;
      min -= pad, max += pad;
    }
  }
  const double raw = (max - min) / (target - 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * mag;
  for (double m : {1.0, 2.0, 2.5, 5.0}) {
    if (m * mag >= raw * (1 - 1e-9)) {
      step = m * mag;
      break;
    }
  }
  if (integer) {
    step = std::max(1.0, step);
    if (std::abs(step - std::round(step)) > 1e-9) step = 5 * mag;  // 2.5 is no integer step
  }
  Ticks t;
  t.step = step;
  // Division and multiplication each round (0.95 / 0.025 = 37.99...): correct an end the rounded
  // quotient put one step off, to within a billionth of a step, which no pixel shows.
  const double tol = 1e-9 * step;
  t.lo = std::floor(min / step) * step;
  if (t.lo > min + tol) t.lo -= step;
  if (t.lo + step <= min + tol) t.lo += step;
  t.hi = std::ceil(max / step) * step;
  if (t.hi < max - tol) t.hi += step;
  if (t.hi - step >= max - tol) t.hi -= step;
  const long count = std::lround((t.hi - t.lo) / step);
  for (long i = 0; i <= count; ++i) {
    // Index times step rather than a running sum, so rounding errors do not accumulate.
    t.values.push_back(std::round((t.lo / step) + static_cast<double>(i)) * step);
  }
  return t;
}

Ticks log_ticks(double min, double max) {
  if (!(min > 0) || !std::isfinite(min)) min = std::isfinite(max) && max > 0 ? max : 1;
  if (!(max > 0) || !std::isfinite(max)) max = min;
  if (min > max) std::swap(min, max);
  int dmin = static_cast<int>(std::floor(std::log10(min) + 1e-9));
  int dmax = static_cast<int>(std::ceil(std::log10(max) - 1e-9));
  if (dmax <= dmin) {
    dmin -= 1;
    dmax += 1;
  }
  Ticks t;
  t.lo = std::pow(10.0, dmin);
  t.hi = std::pow(10.0, dmax);
  t.step = std::numeric_limits<double>::quiet_NaN();  // no single step: labels use format_value
  const int decades = dmax - dmin;
  const int every = std::max(1, (decades + 7) / 8);
  for (int d = dmin; d <= dmax; d += every) {
    const double p = std::pow(10.0, d);
    t.values.push_back(p);
    if (decades <= 2 && d < dmax) {
      t.values.push_back(2 * p);
      t.values.push_back(5 * p);
    }
  }
  if (t.values.back() < t.hi) t.values.push_back(t.hi);
  return t;
}

std::string format_tick(double value, double step) {
  if (!std::isfinite(step) || step <= 0) return format_value(value);
  if (std::abs(value) < step * 1e-9) return "0";
  if (step >= 1000) {
    const Si si = si_for(step);
    return no_negative_zero(
        fmt::format("{:.{}f}{}", value / si.divisor, decimals_for(step / si.divisor), si.suffix));
  }
  if (step < 1e-3) {
    const int exponent = static_cast<int>(std::floor(std::log10(std::abs(value)) + 1e-9));
    return scientific(value, decimals_for(step / std::pow(10.0, exponent)));
  }
  return no_negative_zero(fmt::format("{:.{}f}", value, decimals_for(step)));
}

std::string format_value(double value) {
  if (std::isnan(value)) return "n/a";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0) return "0";
  const double a = std::abs(value);
  if (a >= 1e4) {
    const Si si = si_for(a);
    const double v = value / si.divisor;
    const int digits = std::abs(v) >= 100 ? 1 : std::abs(v) >= 10 ? 2 : 3;
    return no_negative_zero(strip_zeros(fmt::format("{:.{}f}", v, digits))) + si.suffix;
  }
  if (a < 1e-3) return scientific(value, 3);
  const int decimals = std::max(0, 3 - static_cast<int>(std::floor(std::log10(a))));
  return no_negative_zero(strip_zeros(fmt::format("{:.{}f}", value, decimals)));
}

ByteUnit byte_unit(double max_bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  ByteUnit u;
  for (int i = 0; i < 5; ++i) {
    u.unit = kUnits[i];
    u.divisor = std::pow(1024.0, i);
    if (!(std::abs(max_bytes) >= u.divisor * 1024)) break;
  }
  return u;
}

std::string format_bytes(double bytes) {
  const ByteUnit u = byte_unit(bytes);
  return format_value(bytes / u.divisor) + " " + u.unit;
}

std::string line_chart(const LineChart& c) {
  struct Point {
    double x, y;
  };
  bool log_y = c.log_y;
  std::vector<std::vector<Point>> finite(c.series.size());
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  size_t points = 0;
  for (size_t s = 0; s < c.series.size(); ++s) {
    const Series& se = c.series[s];
    for (size_t i = 0; i < std::min(se.x.size(), se.y.size()); ++i) {
      if (!std::isfinite(se.x[i]) || !std::isfinite(se.y[i])) continue;
      const double y = se.y[i] / c.y_divisor;
      if (y <= 0) log_y = false;
      finite[s].push_back({se.x[i], y});
      xmin = std::min(xmin, se.x[i]), xmax = std::max(xmax, se.x[i]);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
    points += finite[s].size();
  }
  if (points == 0)
    return placeholder_chart(c.id, c.title, "No finite values were recorded.", c.width, 120);
  size_t drawn_series = 0;
  for (const auto& f : finite) drawn_series += f.empty() ? 0 : 1;
  // Log only pays when the values span a factor of ten or more; otherwise it hides the change.
  if (log_y && ymax / ymin < 10) log_y = false;

  Frame f{static_cast<double>(c.width), static_cast<double>(c.height)};
  std::vector<LegendItem> items;
  if (drawn_series > 1 || !c.marks.empty()) {
    for (size_t s = 0; s < c.series.size(); ++s)
      if (!finite[s].empty())
        items.push_back({c.series[s].name, palette_colour(s), true, series_dash(s, drawn_series)});
  }
  if (!c.marks.empty()) items.push_back({c.marks_label, kMarkColour, true, "4 3", 1.5});
  const std::string legend_svg = legend(items, f);

  for (double m : c.marks)
    if (std::isfinite(m)) xmin = std::min(xmin, m), xmax = std::max(xmax, m);
  const Ticks xt = nice_ticks(xmin, xmax, x_tick_target(f), c.integer_x);
  const Ticks yt = log_y ? log_ticks(ymin, ymax)
                         : nice_ticks(c.y_from_zero ? std::min(0.0, ymin) : ymin,
                                      c.y_from_zero ? std::max(0.0, ymax) : ymax, 5, false);
  // The x range is the data's own (ticks inside it), so a line starts at the left edge.
  const double x_lo = xmin == xmax ? xt.lo : xmin, x_hi = xmin == xmax ? xt.hi : xmax;
  auto px = [&](double x) { return f.plot_x() + (x - x_lo) / (x_hi - x_lo) * f.plot_w(); };
  auto py = [&](double y) {
    const double t =
        log_y ? (std::log10(y) - std::log10(yt.lo)) / (std::log10(yt.hi) - std::log10(yt.lo))
              : (y - yt.lo) / (yt.hi - yt.lo);
    return f.plot_y() + (1 - t) * f.plot_h();
  };

  std::string out =
      svg_open(c.id, "", f.width, f.height, drawn_series, points, c.title) + legend_svg;
  out += y_axis(f, yt.values, tick_labels(yt), py,
                c.y_unit.empty() || c.y_label.find('(') != std::string::npos
                    ? c.y_label
                    : c.y_label + " (" + c.y_unit + ")");
  std::vector<double> xv;
  for (double v : xt.values)
    if (v >= x_lo - 1e-9 * std::abs(x_hi - x_lo) && v <= x_hi + 1e-9 * std::abs(x_hi - x_lo))
      xv.push_back(v);
  out += x_axis(f, xv, tick_labels(Ticks{xt.lo, xt.hi, xt.step, xv}), px, c.x_label);

  if (!c.marks.empty()) {
    out += "<g class=\"zt-marks\">";
    for (double m : c.marks) {
      if (!std::isfinite(m)) continue;
      out += fmt::format(
          "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"1.5\" "
          "stroke-dasharray=\"4 3\"><title>{4}: {5}</title></line>",
          num(px(m)), num(f.plot_y()), num(f.plot_y() + f.plot_h()), kMarkColour,
          html_escape(x_name(c.x_label, m)), html_escape(c.marks_label));
    }
    out += "</g>";
  }

  for (size_t s = 0; s < c.series.size(); ++s) {
    const std::vector<Point>& pts = finite[s];
    if (pts.empty()) continue;
    // Gaps: a non-finite y in the input between two finite points breaks the line there.
    const Series& se = c.series[s];
    std::vector<bool> starts(pts.size(), false);
    {
      size_t k = 0;
      bool gap = true;
      for (size_t i = 0; i < std::min(se.x.size(), se.y.size()); ++i) {
        if (!std::isfinite(se.x[i]) || !std::isfinite(se.y[i])) {
          gap = true;
          continue;
        }
        starts[k++] = gap;
        gap = false;
      }
    }
    // Thinning: keep every k-th point and the extremes of each stride so spikes survive.
    std::vector<size_t> keep;
    if (pts.size() <= kMaxPathPoints) {
      keep.resize(pts.size());
      std::iota(keep.begin(), keep.end(), 0);
    } else {
      const size_t stride = (pts.size() + kMaxPathPoints / 3 - 1) / (kMaxPathPoints / 3);
      for (size_t b = 0; b < pts.size(); b += stride) {
        const size_t e = std::min(pts.size(), b + stride);
        size_t lo = b, hi = b;
        for (size_t i = b; i < e; ++i) {
          if (pts[i].y < pts[lo].y) lo = i;
          if (pts[i].y > pts[hi].y) hi = i;
          if (starts[i]) keep.push_back(i);
        }
        keep.push_back(b);
        keep.push_back(lo);
        keep.push_back(hi);
      }
      std::sort(keep.begin(), keep.end());
      keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
    }
    std::string d;
    std::string dots;
    for (size_t j = 0; j < keep.size(); ++j) {
      const size_t i = keep[j];
      d += fmt::format("{}{} {} ", starts[i] ? 'M' : 'L', num(px(pts[i].x)), num(py(pts[i].y)));
      const bool isolated = starts[i] && (i + 1 == pts.size() || starts[i + 1]);
      // A lone point is a zero-length subpath, which draws nothing and has an empty box: a
      // tenth of a pixel gives it a round cap; the dot makes it visible.
      if (isolated) {
        d += "h0.1 ";
        dots += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"{}\"/>",
                            num(px(pts[i].x)), num(py(pts[i].y)), palette_colour(s));
      }
    }
    d.pop_back();
    out += fmt::format(
        "<path class=\"zt-series\" data-name=\"{}\" d=\"{}\" fill=\"none\" stroke=\"{}\" "
        "stroke-width=\"2\" stroke-linejoin=\"round\" stroke-linecap=\"round\"{}><title>{}"
        "</title></path>{}",
        html_escape(se.name), d, palette_colour(s),
        drawn_series > 1 && s > 0 ? " stroke-dasharray=\"" + series_dash(s, drawn_series) + "\""
                                  : "",
        html_escape(se.name), dots);
  }

  // Tooltips: every distinct x, each series' value there.
  std::vector<double> xs;
  for (const auto& pts : finite)
    for (const Point& p : pts) xs.push_back(p.x);
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  std::vector<std::vector<Point>> sorted = finite;
  for (auto& pts : sorted)
    std::sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
  std::vector<double> mark_set = c.marks;
  std::sort(mark_set.begin(), mark_set.end());
  out += hover_columns(f, xs, px, [&](size_t first, size_t last) {
    const double x = xs[(first + last) / 2];
    std::string t = last > first
                        ? fmt::format("{} {}–{} (showing {})", c.x_label, format_value(xs[first]),
                                      format_value(xs[last]), format_value(x))
                        : x_name(c.x_label, x);
    for (size_t s = 0; s < sorted.size(); ++s) {
      auto it = std::lower_bound(sorted[s].begin(), sorted[s].end(), x,
                                 [](const Point& p, double v) { return p.x < v; });
      if (it == sorted[s].end() || it->x != x) continue;
      t += "\n" + c.series[s].name + ": " + with_unit(format_value(it->y), c.y_unit);
    }
    if (std::binary_search(mark_set.begin(), mark_set.end(), x)) t += "\n" + c.marks_label;
    return t;
  });
  return out + "</svg>";
}

std::string stacked_bar_chart(const StackedBars& c) {
  const size_t groups = c.groups.size();
  std::vector<double> totals(groups, 0);
  size_t segments = 0;
  std::vector<bool> layer_used(c.layers.size(), false);
  auto value = [&](size_t l, size_t g) {
    const double v = l < c.values.size() && g < c.values[l].size() ? c.values[l][g] : 0;
    return std::isfinite(v) && v > 0 ? v : 0.0;
  };
  for (size_t l = 0; l < c.layers.size(); ++l)
    for (size_t g = 0; g < groups; ++g)
      if (value(l, g) > 0) {
        totals[g] += value(l, g);
        layer_used[l] = true;
        ++segments;
      }
  if (segments == 0)
    return placeholder_chart(c.id, c.title, "Every value is zero or missing.", c.width, 120);
  const double max_total = *std::max_element(totals.begin(), totals.end());
  const ByteUnit bu = c.bytes ? byte_unit(max_total) : ByteUnit{1, ""};
  const std::string unit = c.bytes ? bu.unit : c.unit;
  auto colour = [&](size_t l) { return palette_colour(l < c.colours.size() ? c.colours[l] : l); };

  Frame f{static_cast<double>(c.width), static_cast<double>(c.height)};
  std::vector<LegendItem> items;
  size_t used = 0;
  for (size_t l = 0; l < c.layers.size(); ++l)
    if (layer_used[l]) {
      items.push_back({c.layers[l], colour(l), false});
      ++used;
    }
  const std::string legend_svg = legend(items, f);
  f.top += 14;  // room for the totals above the tallest bar

  const double slot = f.plot_w() / static_cast<double>(groups);
  size_t longest = 0;
  for (const std::string& g : c.groups) longest = std::max(longest, g.size());
  constexpr size_t kMaxLabel = 28;
  const bool rotate = text_width(c.groups.empty() ? "" : std::string(longest, 'x')) > slot - 4;
  if (rotate) {
    // Rotated labels at -35 degrees need about 0.6 of their length below the axis.
    const double extra = 0.6 * kCharWidth * static_cast<double>(std::min(longest, kMaxLabel));
    f.bottom = 30 + extra;
    f.height += extra - 16;
  }

  const Ticks yt = nice_ticks(0, max_total / bu.divisor, 5, false);
  auto py = [&](double v) { return f.plot_y() + (1 - (v - yt.lo) / (yt.hi - yt.lo)) * f.plot_h(); };
  std::string out = svg_open(c.id, "", f.width, f.height, used, segments, c.title) + legend_svg;
  out += y_axis(f, yt.values, tick_labels(yt), py,
                unit.empty() ? c.y_label : c.y_label + " (" + unit + ")");
  const double base = f.plot_y() + f.plot_h();
  out += fmt::format(
      "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"1\"/>",
      num(f.plot_x()), num(base), num(f.plot_x() + f.plot_w()), num(base), kAxisColour);
  const double bar_w = std::clamp(slot * 0.6, 2.0, 90.0);
  out += "<g class=\"zt-bars\">";
  for (size_t g = 0; g < groups; ++g) {
    const double cx = f.plot_x() + slot * (static_cast<double>(g) + 0.5);
    double acc = 0;
    for (size_t l = 0; l < c.layers.size(); ++l) {
      const double v = value(l, g);
      if (v <= 0) continue;
      const double y0 = py(acc / bu.divisor), y1 = py((acc + v) / bu.divisor);
      acc += v;
      const std::string shown = c.bytes ? format_bytes(v) : with_unit(format_value(v), c.unit);
      out += fmt::format(
          "<rect class=\"zt-bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" "
          "stroke=\"#ffffff\" stroke-width=\"0.5\"><title>{}</title></rect>",
          num(cx - bar_w / 2), num(y1), num(bar_w), num(std::max(0.5, y0 - y1)), colour(l),
          html_escape(fmt::format(
              "{} · {}: {} ({:.1f}% of {})", c.groups[g], c.layers[l], shown, 100.0 * v / totals[g],
              c.bytes ? format_bytes(totals[g]) : with_unit(format_value(totals[g]), c.unit))));
    }
    if (totals[g] > 0 && slot >= 36)
      out += fmt::format(
          "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{}\">{}</text>",
          num(cx), num(py(totals[g] / bu.divisor) - 4), kTextColour,
          html_escape(c.bytes ? format_bytes(totals[g]) : format_value(totals[g])));
    std::string label = c.groups[g];
    if (label.size() > kMaxLabel) label = label.substr(0, kMaxLabel - 1) + "…";
    if (rotate)
      out += fmt::format(
          "<text x=\"{0}\" y=\"{1}\" font-size=\"11\" text-anchor=\"end\" fill=\"{2}\" "
          "transform=\"rotate(-35 {0} {1})\"><title>{3}</title>{4}</text>",
          num(cx), num(base + 12), kAxisColour, html_escape(c.groups[g]), html_escape(label));
    else
      out += fmt::format(
          "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{}\">{}</text>",
          num(cx), num(base + 17), kAxisColour, html_escape(label));
  }
  out += "</g>";
  out += fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" fill=\"{}\">{}</text>",
      num(f.plot_x() + f.plot_w() / 2), num(f.height - 6), kTextColour, html_escape(c.x_label));
  return out + "</svg>";
}

std::string stacked_area_chart(const StackedArea& c) {
  const size_t n = c.x.size();
  auto value = [&](size_t l, size_t i) {
    const double v = l < c.values.size() && i < c.values[l].size() ? c.values[l][i] : 0;
    return std::isfinite(v) && v > 0 ? v : 0.0;
  };
  std::vector<bool> layer_used(c.layers.size(), false);
  for (size_t l = 0; l < c.layers.size(); ++l)
    for (size_t i = 0; i < n; ++i)
      if (value(l, i) > 0) layer_used[l] = true;
  if (n == 0 || std::none_of(layer_used.begin(), layer_used.end(), [](bool b) { return b; }))
    return placeholder_chart(c.id, c.title, "Every value is zero or missing.", c.width, 120);
  if (n == 1) {
    // One x: an area has no width; a single stacked bar says the same.
    StackedBars b;
    b.id = c.id, b.title = c.title, b.x_label = c.x_label, b.y_label = c.y_label;
    b.groups = {x_name(c.x_label, c.x[0])};
    b.layers = c.layers;
    b.unit = c.unit;
    b.colours = c.colours;
    for (size_t l = 0; l < c.layers.size(); ++l) b.values.push_back({value(l, 0)});
    b.width = c.width, b.height = c.height;
    return stacked_bar_chart(b);
  }
  auto colour = [&](size_t l) { return palette_colour(l < c.colours.size() ? c.colours[l] : l); };
  std::vector<double> total(n, 0);
  for (size_t l = 0; l < c.layers.size(); ++l)
    for (size_t i = 0; i < n; ++i) total[i] += value(l, i);
  Frame f{static_cast<double>(c.width), static_cast<double>(c.height)};
  std::vector<LegendItem> items;
  size_t used = 0;
  for (size_t l = 0; l < c.layers.size(); ++l)
    if (layer_used[l]) {
      items.push_back({c.layers[l], colour(l), false});
      ++used;
    }
  const std::string legend_svg = legend(items, f);
  const Ticks xt = nice_ticks(c.x.front(), c.x.back(), x_tick_target(f), true);
  const Ticks yt = nice_ticks(0, *std::max_element(total.begin(), total.end()), 5, false);
  const double x_lo = c.x.front(), x_hi = c.x.back();
  auto px = [&](double x) { return f.plot_x() + (x - x_lo) / (x_hi - x_lo) * f.plot_w(); };
  auto py = [&](double v) { return f.plot_y() + (1 - (v - yt.lo) / (yt.hi - yt.lo)) * f.plot_h(); };

  std::string out = svg_open(c.id, "", f.width, f.height, used, used * n, c.title) + legend_svg;
  out += y_axis(f, yt.values, tick_labels(yt), py,
                c.unit.empty() ? c.y_label : c.y_label + " (" + c.unit + ")");
  std::vector<double> xv;
  for (double v : xt.values)
    if (v >= x_lo && v <= x_hi) xv.push_back(v);
  out += x_axis(f, xv, tick_labels(Ticks{xt.lo, xt.hi, xt.step, xv}), px, c.x_label);

  std::vector<size_t> idx;
  const size_t stride = (n + kMaxPathPoints - 1) / kMaxPathPoints;
  for (size_t i = 0; i < n; i += stride) idx.push_back(i);
  if (idx.back() != n - 1) idx.push_back(n - 1);
  std::vector<double> below(n, 0);
  for (size_t l = 0; l < c.layers.size(); ++l) {
    if (!layer_used[l]) continue;
    std::string d;
    for (size_t j = 0; j < idx.size(); ++j)
      d += fmt::format("{}{} {} ", j == 0 ? 'M' : 'L', num(px(c.x[idx[j]])),
                       num(py(below[idx[j]] + value(l, idx[j]))));
    for (size_t j = idx.size(); j-- > 0;)
      d += fmt::format("L{} {} ", num(px(c.x[idx[j]])), num(py(below[idx[j]])));
    d += "Z";
    for (size_t i = 0; i < n; ++i) below[i] += value(l, i);
    out += fmt::format(
        "<path class=\"zt-area\" data-name=\"{}\" d=\"{}\" fill=\"{}\" fill-opacity=\"0.85\" "
        "stroke=\"{}\" stroke-width=\"0.5\"><title>{}</title></path>",
        html_escape(c.layers[l]), d, colour(l), colour(l), html_escape(c.layers[l]));
  }
  out += hover_columns(f, c.x, px, [&](size_t first, size_t last) {
    const size_t i = (first + last) / 2;
    std::string t = x_name(c.x_label, c.x[i]);
    for (size_t l = 0; l < c.layers.size(); ++l)
      if (layer_used[l])
        t += "\n" + c.layers[l] + ": " + with_unit(format_value(value(l, i)), c.unit);
    t += "\ntotal: " + with_unit(format_value(total[i]), c.unit);
    return t;
  });
  return out + "</svg>";
}

std::string placeholder_chart(const std::string& id, const std::string& title,
                              const std::string& note, int width, int height) {
  std::string out = svg_open(id, " zt-placeholder", width, height, 0, 0, title);
  out += fmt::format(
      "<rect x=\"1\" y=\"1\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"#f9fafb\" "
      "stroke=\"#d1d5db\" stroke-dasharray=\"6 4\"/>",
      width - 2, height - 2);
  out += fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\" fill=\"{}\">{}</text>",
      width / 2, height / 2 + 4, kAxisColour, html_escape(note));
  return out + "</svg>";
}

}  // namespace zt::ctl::svg
