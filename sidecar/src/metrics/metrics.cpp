// Metrics: see metrics.hpp.
#include "metrics/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <variant>

namespace shapesync::metrics {

// ---------------------------------------------------------------------------
// Text format helpers

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that reads back the same
  return std::string(buf, r.ptr);
}

static bool name_char(char c, bool first, bool colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, true)) return false;
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, false)) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Histograms

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> duration_buckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}

RecentWindow::RecentWindow(size_t buckets) : buckets_(buckets) {
  for (auto& s : slots_) {
    s.counts = std::make_unique<std::atomic<uint64_t>[]>(buckets_);
    for (size_t i = 0; i < buckets_; ++i) s.counts[i].store(0, std::memory_order_relaxed);
  }
}

void RecentWindow::observe(size_t bucket, int64_t second) {
  Slot& s = slots_[static_cast<size_t>(((second % kSeconds) + kSeconds) % kSeconds)];
  if (s.second.load(std::memory_order_acquire) != second) {
    std::lock_guard lk(roll_);
    int64_t was = s.second.load(std::memory_order_acquire);
    if (was > second) return;  // a late observation of a second already gone: drop it
    if (was != second) {
      for (size_t i = 0; i < buckets_; ++i) s.counts[i].store(0, std::memory_order_relaxed);
      s.second.store(second, std::memory_order_release);
    }
  }
  s.counts[bucket].fetch_add(1, std::memory_order_relaxed);
}

std::vector<uint64_t> RecentWindow::counts(int64_t now) const {
  std::vector<uint64_t> out(buckets_, 0);
  for (const auto& s : slots_) {
    int64_t sec = s.second.load(std::memory_order_acquire);
    if (sec <= now - kSeconds || sec > now) continue;
    for (size_t i = 0; i < buckets_; ++i) out[i] += s.counts[i].load(std::memory_order_relaxed);
  }
  return out;
}

Histogram::Histogram(std::vector<double> bounds, bool keep_last_minute) : bounds_(std::move(bounds)) {
  if (bounds_.empty()) throw std::invalid_argument("a histogram needs at least one bucket bound");
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i])) throw std::invalid_argument("histogram bounds must be finite (+Inf is implicit)");
    if (i > 0 && !(bounds_[i] > bounds_[i - 1])) throw std::invalid_argument("histogram bounds must be ascending");
  }
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
  if (keep_last_minute) window_ = std::make_unique<RecentWindow>(bounds_.size() + 1);
}

int64_t Histogram::now_second() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

size_t Histogram::bucket_of(double v) const {
  // the first bound >= v (le: "less than or equal")
  return static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
}

void Histogram::observe(double v) { observe_at(v, window_ ? now_second() : 0); }

void Histogram::observe_at(double v, int64_t second) {
  size_t b = std::isnan(v) ? bounds_.size() : bucket_of(v);
  counts_[b].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
  if (window_) window_->observe(b, second);
}

std::vector<uint64_t> Histogram::bucket_counts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

uint64_t Histogram::count() const {
  uint64_t n = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) n += counts_[i].load(std::memory_order_relaxed);
  return n;
}

std::optional<double> Histogram::quantile_last_minute(double q) const {
  return quantile_last_minute_at(q, now_second());
}

std::optional<double> Histogram::quantile_last_minute_at(double q, int64_t now) const {
  if (!window_ || !(q > 0 && q < 1)) return std::nullopt;
  std::vector<uint64_t> c = window_->counts(now);
  uint64_t total = 0;
  for (uint64_t n : c) total += n;
  if (total == 0) return std::nullopt;
  double rank = q * static_cast<double>(total);
  uint64_t below = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    if (static_cast<double>(below + c[i]) >= rank && c[i] > 0) {
      if (i == bounds_.size()) return bounds_.back();  // in +Inf: the largest bound is all we know
      double lo = i == 0 ? 0.0 : bounds_[i - 1];
      double hi = bounds_[i];
      return lo + (hi - lo) * (rank - static_cast<double>(below)) / static_cast<double>(c[i]);
    }
    below += c[i];
  }
  return bounds_.back();
}

// ---------------------------------------------------------------------------
// Families

template <typename T>
T& Family<T>::labels(const LabelValues& values) {
  if (values.size() != label_names_.size())
    throw std::invalid_argument("expected " + std::to_string(label_names_.size()) + " label values, got " +
                                std::to_string(values.size()));
  std::lock_guard lk(mu_);
  auto& slot = children_[values];
  if (!slot) slot = make_();
  return *slot;
}

template <typename T>
std::vector<std::pair<LabelValues, const T*>> Family<T>::children() const {
  std::lock_guard lk(mu_);
  std::vector<std::pair<LabelValues, const T*>> out;
  out.reserve(children_.size());
  for (const auto& [k, v] : children_) out.emplace_back(k, v.get());
  return out;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---------------------------------------------------------------------------
// Registry

struct Registry::Entry {
  std::string name;
  std::string help;
  const char* type;
  std::vector<std::string> label_names;
  std::variant<std::monostate, std::unique_ptr<Counter>, std::unique_ptr<Gauge>, std::function<double()>,
               std::unique_ptr<Histogram>, std::unique_ptr<Family<Counter>>, std::unique_ptr<Family<Gauge>>,
               std::unique_ptr<Family<Histogram>>>
      metric;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Entry& Registry::add(const std::string& name, const std::string& help, const char* type,
                               const std::vector<std::string>& label_names) {
  if (!valid_metric_name(name)) throw std::invalid_argument("invalid metric name \"" + name + "\"");
  std::string_view t(type);
  if (t == "counter" && !name.ends_with("_total"))
    throw std::invalid_argument("counter \"" + name + "\" must end in _total");
  if (t != "counter" && name.ends_with("_total"))
    throw std::invalid_argument("only counters end in _total: \"" + name + "\"");
  for (size_t i = 0; i < label_names.size(); ++i) {
    const auto& l = label_names[i];
    if (!valid_label_name(l)) throw std::invalid_argument("invalid label name \"" + l + "\"");
    if (t == "histogram" && l == "le") throw std::invalid_argument("\"le\" is reserved for histogram buckets");
    if (std::find(label_names.begin(), label_names.begin() + static_cast<long>(i), l) !=
        label_names.begin() + static_cast<long>(i))
      throw std::invalid_argument("label \"" + l + "\" given twice");
  }
  std::lock_guard lk(mu_);
  for (const auto& e : entries_)
    if (e->name == name) throw std::invalid_argument("metric \"" + name + "\" registered twice");
  entries_.push_back(std::make_unique<Entry>(Entry{name, help, type, label_names, {}}));
  return *entries_.back();
}

Counter& Registry::counter(const std::string& name, const std::string& help) {
  auto& e = add(name, help, "counter", {});
  auto p = std::make_unique<Counter>();
  Counter& r = *p;
  e.metric = std::move(p);
  return r;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help) {
  auto& e = add(name, help, "gauge", {});
  auto p = std::make_unique<Gauge>();
  Gauge& r = *p;
  e.metric = std::move(p);
  return r;
}

void Registry::callback_gauge(const std::string& name, const std::string& help, std::function<double()> read) {
  if (!read) throw std::invalid_argument("callback gauge \"" + name + "\" without a callback");
  auto& e = add(name, help, "gauge", {});
  e.metric = std::move(read);
}

Histogram& Registry::histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                               bool keep_last_minute) {
  auto p = std::make_unique<Histogram>(std::move(bounds), keep_last_minute);  // validates before registering
  auto& e = add(name, help, "histogram", {});
  Histogram& r = *p;
  e.metric = std::move(p);
  return r;
}

Family<Counter>& Registry::counter_family(const std::string& name, const std::string& help,
                                          std::vector<std::string> label_names) {
  auto& e = add(name, help, "counter", label_names);
  std::unique_ptr<Family<Counter>> f(
      new Family<Counter>(std::move(label_names), [] { return std::make_unique<Counter>(); }));
  auto& r = *f;
  e.metric = std::move(f);
  return r;
}

Family<Gauge>& Registry::gauge_family(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  auto& e = add(name, help, "gauge", label_names);
  std::unique_ptr<Family<Gauge>> f(
      new Family<Gauge>(std::move(label_names), [] { return std::make_unique<Gauge>(); }));
  auto& r = *f;
  e.metric = std::move(f);
  return r;
}

Family<Histogram>& Registry::histogram_family(const std::string& name, const std::string& help,
                                              std::vector<std::string> label_names, std::vector<double> bounds) {
  Histogram probe(bounds);  // validates the bounds before registering
  auto& e = add(name, help, "histogram", label_names);
  std::unique_ptr<Family<Histogram>> f(new Family<Histogram>(
      std::move(label_names), [bounds] { return std::make_unique<Histogram>(bounds); }));
  auto& r = *f;
  e.metric = std::move(f);
  return r;
}

// {a="x",b="y"} (with an extra label such as le appended), or "" without labels.
static std::string label_set(const std::vector<std::string>& names, const LabelValues& values,
                             std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ',';
    out += names[i];
    out += "=\"";
    out += escape_label_value(values[i]);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out += extra_name;
    out += "=\"";
    out += escape_label_value(extra_value);
    out += '"';
  }
  out += '}';
  return out;
}

static void render_histogram(std::string& out, const std::string& name, const std::vector<std::string>& names,
                             const LabelValues& values, const Histogram& h) {
  std::vector<uint64_t> c = h.bucket_counts();
  uint64_t cumulative = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    cumulative += c[i];
    std::string le = i < h.bounds().size() ? format_value(h.bounds()[i]) : "+Inf";
    out += name + "_bucket" + label_set(names, values, "le", le) + ' ' + std::to_string(cumulative) + '\n';
  }
  // _count is the +Inf bucket, read once: the two always agree
  out += name + "_sum" + label_set(names, values) + ' ' + format_value(h.sum()) + '\n';
  out += name + "_count" + label_set(names, values) + ' ' + std::to_string(cumulative) + '\n';
}

std::string Registry::render() const {
  std::lock_guard lk(mu_);
  std::string out;
  for (const auto& e : entries_) {
    out += "# HELP " + e->name + ' ' + escape_help(e->help) + '\n';
    out += "# TYPE " + e->name + ' ' + e->type + '\n';
    const auto& n = e->name;
    std::visit(
        [&](const auto& m) {
          using M = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<M, std::unique_ptr<Counter>>) {
            out += n + ' ' + std::to_string(m->value()) + '\n';
          } else if constexpr (std::is_same_v<M, std::unique_ptr<Gauge>>) {
            out += n + ' ' + format_value(m->value()) + '\n';
          } else if constexpr (std::is_same_v<M, std::function<double()>>) {
            out += n + ' ' + format_value(m()) + '\n';
          } else if constexpr (std::is_same_v<M, std::unique_ptr<Histogram>>) {
            render_histogram(out, n, {}, {}, *m);
          } else if constexpr (std::is_same_v<M, std::unique_ptr<Family<Counter>>>) {
            for (const auto& [v, c] : m->children())
              out += n + label_set(e->label_names, v) + ' ' + std::to_string(c->value()) + '\n';
          } else if constexpr (std::is_same_v<M, std::unique_ptr<Family<Gauge>>>) {
            for (const auto& [v, g] : m->children())
              out += n + label_set(e->label_names, v) + ' ' + format_value(g->value()) + '\n';
          } else if constexpr (std::is_same_v<M, std::unique_ptr<Family<Histogram>>>) {
            for (const auto& [v, h] : m->children()) render_histogram(out, n, e->label_names, v, *h);
          }
        },
        e->metric);
  }
  return out;
}

// ---------------------------------------------------------------------------
// shapesyncd's metrics

SidecarMetrics::SidecarMetrics()
    : http_requests(registry.counter_family("shapesync_http_requests_total",
                                            "HTTP requests answered, by route, status and mode (initial, catchup, live).",
                                            {"route", "status", "mode"})),
      live_connections(registry.gauge_family("shapesync_live_connections",
                                             "Clients waiting for changes, by kind (long_poll, sse).", {"kind"})),
      deliveries(registry.counter("shapesync_deliveries_total", "Changes written to live clients.")),
      sent_bytes(registry.counter("shapesync_sent_bytes_total", "Response body bytes written.")),
      changes(registry.counter("shapesync_changes_total", "Changes read from the change log.")),
      commit_to_send(registry.histogram(
          "shapesync_commit_to_send_seconds",
          "Time from the commit of a change's transaction to its bytes written to a live client.",
          latency_buckets(), true)),
      shapes(registry.gauge("shapesync_shapes", "Shapes held by this sidecar.")),
      log_memory_bytes(registry.gauge("shapesync_log_memory_bytes", "Bytes of shape logs held in memory.")),
      log_disk_bytes(registry.gauge("shapesync_log_disk_bytes", "Bytes of shape log segments on local disk.")),
      memory_held_bytes(registry.gauge("shapesync_memory_held_bytes",
                                       "Memory the shape store holds by its own count (logs, snapshots, shapes, "
                                       "evicted shapes' stubs, the batch window).")),
      memory_budget_bytes(registry.gauge("shapesync_memory_budget_bytes", "The shape store's budget (--max-memory; 0: none).")),
      evicted_shapes(registry.gauge("shapesync_evicted_shapes",
                                    "Shapes evicted from memory whose segment files are kept for a reload.")),
      memory_spills(registry.counter("shapesync_memory_spills_total",
                                     "Shape logs written to disk (a record each, in the pass's pack file) because the store was over its budget.")),
      memory_spilled_bytes(registry.counter("shapesync_memory_spilled_bytes_total",
                                            "Memory freed by those spills.")),
      shape_evictions(registry.counter("shapesync_shape_evictions_total",
                                       "Idle shapes evicted from memory (over --max-memory or --max-shapes).")),
      shape_reloads(registry.counter("shapesync_shape_reloads_total",
                                     "Evicted shapes reloaded from their segment files when asked for again.")),
      memory_inflight_bytes(registry.gauge("shapesync_memory_inflight_bytes",
                                           "Decoded batches read from the change log and not yet applied (counted in "
                                           "shapesync_memory_held_bytes).")),
      memory_inflight_peak_bytes(registry.gauge("shapesync_memory_inflight_peak_bytes",
                                                "The most decoded batches ever in flight at once.")),
      allocator_allocated_bytes(registry.gauge(
          "shapesync_allocator_allocated_bytes",
          "Bytes the sidecar has allocated and not freed, by its allocator's count (jemalloc, or glibc's mallinfo2): "
          "above shapesync_memory_held_bytes by what the store does not count (libpq results, HTTP buffers).")),
      allocator_resident_bytes(registry.gauge(
          "shapesync_allocator_resident_bytes",
          "Bytes of the allocator's pages in RAM (jemalloc; 0 under glibc): above the allocated bytes by "
          "fragmentation and freed pages not yet returned.")),
      resident_bytes(registry.gauge("shapesync_resident_bytes", "The sidecar's resident set size (RSS).")),
      fetch_shrinks(registry.counter("shapesync_fetch_shrinks_total",
                                     "Reads of the change log that decoded to more than their share of --max-memory: "
                                     "the span of ticks read at once shrank (back-pressure).")),
      fetch_span_ticks(registry.gauge("shapesync_fetch_span_ticks",
                                      "Ticks the follower's next read of the change log may span.")),
      snapshot_duration(registry.histogram("shapesync_snapshot_duration_seconds",
                                           "Time to build a shape's initial snapshot.", duration_buckets())),
      auth_failures(registry.counter_family("shapesync_auth_failures_total",
                                            "Requests refused by authentication, by reason.", {"reason"})),
      mutations(registry.counter_family("shapesync_mutations_total",
                                        "Mutations of POST /v1/mutations, by outcome (replays of stored outcomes "
                                        "count as replayed).",
                                        {"status"})),
      write_duration(registry.histogram("shapesync_write_duration_seconds",
                                        "Time of one POST /v1/mutations in the database, retries included.",
                                        duration_buckets())),
      db_reconnects(registry.counter("shapesync_db_reconnects_total", "Reconnections to PostgreSQL.")),
      ticks_behind(registry.gauge("shapesync_ticks_behind", "Ticks recorded but not yet read by this sidecar.")),
      lag_seconds(registry.gauge("shapesync_lag_seconds",
                                 "Age of the oldest ticked change this sidecar has not read yet.")) {}

}  // namespace shapesync::metrics
