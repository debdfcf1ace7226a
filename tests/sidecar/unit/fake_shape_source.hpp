// A ShapeSource without a database, for the HTTP layer's unit tests: a real
// ShapeStore holding shapes of one table (public.items: id int4 PK, title
// text, done bool), made ready at once when a request asks for one, and
// answers for everything else that tests script (errors, segment reads,
// deletions) and count.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "shapes/service.hpp"

namespace shapesync::testing {

inline std::shared_ptr<const TableInfo> items_table() {
  auto t = std::make_shared<TableInfo>();
  t->relid = 42;
  t->schema = "public";
  t->name = "items";
  t->columns = {{"id", 1, "int4", 0, 0, true, -1, "int4"},
                {"title", 2, "text", 0, -1, false, -1, "text"},
                {"done", 3, "bool", 0, -1, false, -1, "bool"}};
  t->pk = {0};
  t->natts = 3;
  return t;
}

class FakeShapeSource : public ShapeSource {
 public:
  explicit FakeShapeSource(Config cfg) : cfg_(std::move(cfg)), store_(cfg_.chunk_bytes_threshold) {}

  // --- scripted answers ---
  std::optional<ShapeError> next_error;  // get_shape fails with it (once)
  bool servable = true;                  // wait_servable's answer
  ShapeError not_servable_error = ShapeError::unavailable(R"({"message":"not servable"})", 7);
  std::optional<FillResult> fill_override;  // fill_segment answers this instead of reading the file
  bool delete_finds = true;
  SubsetCheck subset_check;                 // check_subset's answer
  SubsetRows subset_rows = {"100:100:", 1, {}};  // run_subset's rows
  // Snapshot chunks of the shapes made from now on (each a JSON array body).
  std::vector<std::string> snapshot_chunks = {R"([{"headers":{"control":"snapshot-end","xmin":"100","xmax":"100","xip_list":[]}}])"};

  // --- what was asked ---
  int get_shape_calls = 0;
  int fill_calls = 0;
  mutable int config_errors_logged = 0;
  std::vector<std::pair<std::optional<std::string>, std::optional<std::string>>> deletions;
  std::vector<std::string> subset_queries;  // SQL given to run_subset
  bool database_ready = true;

  ShapeStore& store() override { return store_; }
  const Config& config() const override { return cfg_; }
  bool db_ready() const override { return database_ready; }
  bool stopping() const override { return stopping_; }
  void stop() override {
    stopping_ = true;
    store_.wake_all();
  }

  // The shape a definition key is served by now, made (ready) when missing.
  std::shared_ptr<Shape> make_shape(const std::string& def_key) {
    if (auto s = store_.resolve(def_key)) return s;
    ShapeDef def;
    def.table = items_table();
    def.selected = {0, 1, 2};
    def.key = def_key;
    bool created = false;
    auto s = store_.begin_create(def, def_key, "handle-" + std::to_string(++handles_), 0, "", created);
    std::vector<std::shared_ptr<const std::string>> chunks;
    for (auto& c : snapshot_chunks) chunks.push_back(std::make_shared<const std::string>(c));
    store_.set_snapshot(*s, *PgSnapshot::parse("100:100:"), store_.last_tick(), &chunks);
    store_.finish_create(s);
    return s;
  }

  asio::awaitable<ShapeOutcome> get_shape(const ShapeParams& p, const std::string& def_key, const Caller&) override {
    ++get_shape_calls;
    if (next_error) {
      ShapeError e = std::move(*next_error);
      next_error.reset();
      co_return ShapeOutcome{nullptr, std::move(e)};
    }
    if (p.table.name != "items")
      co_return ShapeOutcome{nullptr, ShapeError::invalid("table", "Table \"" + p.table.schema + "\".\"" +
                                                                       p.table.name + "\" does not exist.")};
    co_return ShapeOutcome{make_shape(def_key), {}};
  }
  asio::awaitable<bool> wait_servable(const std::shared_ptr<Shape>&, const ShapeParams&) override {
    co_return servable;
  }
  asio::awaitable<ShapeError> not_servable(const ShapeParams&) override { co_return not_servable_error; }
  asio::awaitable<FillResult> fill_segment(const std::shared_ptr<Shape>&, LogRead& r) override {
    ++fill_calls;
    if (fill_override) co_return *fill_override;
    std::vector<std::shared_ptr<const std::string>> got;
    if (!read_segment(*r.segment, r.segment_after, got)) co_return FillResult::kUnreachable;
    r.entries = std::move(got);
    r.segment.reset();
    co_return FillResult::kFilled;
  }
  asio::awaitable<bool> delete_shape(const std::optional<std::string>& handle,
                                     const std::optional<std::string>& def_key) override {
    deletions.emplace_back(handle, def_key);
    co_return delete_finds;
  }
  asio::awaitable<SubsetCheck> check_subset(const QualifiedName&, const SubsetParams&, const Caller&) override {
    co_return subset_check;
  }
  asio::awaitable<std::optional<PgError>> run_subset(const std::string& sql, SubsetRows& out, const Caller&) override {
    subset_queries.push_back(sql);
    out = subset_rows;
    co_return std::nullopt;
  }
  void log_configuration_error(const PgError&, std::string_view, std::string_view) const override {
    ++config_errors_logged;
  }

 private:
  Config cfg_;
  ShapeStore store_;
  bool stopping_ = false;
  int handles_ = 0;
};

}  // namespace shapesync::testing
