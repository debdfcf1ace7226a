// Wire encoding of the Shape protocol (PROTOCOL.md §4): JSON string escaping,
// row keys, change and control messages, the electric-schema header, and the
// electric-cursor algorithm. Pure functions; every message is serialized once
// and shared by all responses that carry it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/table.hpp"

namespace shapesync {

// Appends s as a JSON string literal (with quotes).
void append_json_string(std::string& out, std::string_view s);
// Appends one byte of a JSON string's body, escaped when JSON requires it
// (", \\ and control characters); any other byte as it is.
void append_json_escaped(std::string& out, unsigned char c);

// `"schema"."table"/` — the key prefix of a table (relation parts escape / and .).
std::string key_prefix(const TableInfo& t);
// `["schema","table"]`
std::string relation_json(const TableInfo& t);
// The electric-schema header for the selected columns (indexes into t.columns).
std::string schema_json(const TableInfo& t, const std::vector<size_t>& selected);


// `"<schema>"."<table>"/"<pk1>"/…` with / doubled in values, NULL parts as _.
std::string row_key(const std::string& prefix, const TableInfo& t, const RowValues& row);

// Appends {"col":"value",...} for the given column indexes.
void append_value_object(std::string& out, const TableInfo& t, const RowValues& row,
                         const std::vector<size_t>& cols);

// Headers of a replicated change.
struct ChangeHeaders {
  std::string_view operation;  // insert | update | delete
  std::string_view relation;   // relation_json
  uint32_t txid = 0;
  uint64_t lsn = 0;
  uint64_t op_position = 0;
  uint64_t version = 0;  // the row's version ("version" header); 0: none (deletes)
  bool last = false;
  std::optional<std::string> key_change_to;
  std::optional<std::string> key_change_from;
};

// {"key":...,"value":{...},"old_value":{...}?,"headers":{...}}
std::string change_message(const std::string& key, const std::string& value_object,
                           const std::string* old_value_object, const ChangeHeaders& h);
// Snapshot rows carry operation and relation (and what extra_headers adds:
// version_header(), a subset's snapshot_mark).
std::string snapshot_row_message(const std::string& key, const std::string& value_object,
                                 std::string_view relation, std::string_view extra_headers = {});

// `,"version":"<decimal>"`: a row's version as a message header (the official
// client passes unknown headers through; clients send it back as base.version).
// Empty for an absent version.
std::string version_header(std::string_view version);

std::string up_to_date_message(uint64_t global_last_seen_lsn);
// "xmin":"…","xmax":"…","xip_list":[…] (snapshot-end messages, subset metadata).
void append_snapshot_fields(std::string& out, std::string_view xmin, std::string_view xmax,
                            const std::vector<std::string>& xip);
std::string snapshot_end_message(std::string_view xmin, std::string_view xmax,
                                 const std::vector<std::string>& xip);
inline constexpr std::string_view kMustRefetchBody = R"([{"headers":{"control":"must-refetch"}}])";

// PROTOCOL.md §6.2. now_unix_s is the current time; rnd in [1, 3600].
long long next_cursor(long long now_unix_s, long long timeout_s, long long prev_cursor, int rnd);


}  // namespace shapesync
