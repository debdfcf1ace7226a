// Wire encoding of messages, keys, schema header and cursors.
#include "protocol/encode.hpp"

#include <cmath>

namespace shapesync {

void append_json_escaped(std::string& out, unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    case '\b': out += "\\b"; break;
    case '\f': out += "\\f"; break;
    default:
      if (c >= 0x20) {
        out += static_cast<char>(c);
      } else {
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
  }
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  size_t run = 0;  // start of the current run of bytes needing no escape
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    append_json_escaped(out, c);
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

namespace {
std::string escape_rel_part(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '/' || c == '.') o += c;
    o += c;
  }
  return o;
}
}  // namespace

std::string key_prefix(const TableInfo& t) {
  return "\"" + escape_rel_part(t.schema) + "\".\"" + escape_rel_part(t.name) + "\"/";
}

std::string relation_json(const TableInfo& t) {
  std::string o = "[";
  append_json_string(o, t.schema);
  o += ',';
  append_json_string(o, t.name);
  o += ']';
  return o;
}

std::string schema_json(const TableInfo& t, const std::vector<size_t>& selected) {
  std::string o = "{";
  bool first = true;
  for (size_t idx : selected) {
    const ColumnInfo& c = t.columns[idx];
    if (!first) o += ',';
    first = false;
    append_json_string(o, c.name);
    o += ":{\"type\":";
    append_json_string(o, c.type);
    if (c.dims > 0) o += ",\"dims\":" + std::to_string(c.dims);
    if (c.pk_index >= 0) o += ",\"pk_index\":" + std::to_string(c.pk_index);
    if (c.not_null) o += ",\"not_null\":true";
    if (c.typmod >= 0 && c.dims == 0) {
      const std::string& b = c.type;
      int tm = c.typmod;
      if (b == "varchar" || b == "text") {
        o += ",\"max_length\":" + std::to_string(tm - 4);
      } else if (b == "bpchar") {
        o += ",\"length\":" + std::to_string(tm - 4);
      } else if (b == "bit" || b == "varbit") {
        o += ",\"length\":" + std::to_string(tm);
      } else if (b == "time" || b == "timetz" || b == "timestamp" || b == "timestamptz") {
        o += ",\"precision\":" + std::to_string(tm);
      } else if (b == "interval") {
        int prec = tm & 0xffff;
        if (prec != 0xffff) o += ",\"precision\":" + std::to_string(prec);
      } else if (b == "numeric") {
        int v = tm - 4;
        o += ",\"precision\":" + std::to_string((v >> 16) & 0xffff);
        o += ",\"scale\":" + std::to_string(v & 0xffff);
      } else {
        o += ",\"type_mod\":" + std::to_string(tm);
      }
    }
    o += '}';
  }
  o += '}';
  return o;
}

std::string row_key(const std::string& prefix, const TableInfo& t, const RowValues& row) {
  std::string k = prefix;
  for (size_t i = 0; i < t.pk.size(); ++i) {
    if (i) k += '/';
    const auto& v = row[t.pk[i]];
    if (!v) {
      k += '_';
      continue;
    }
    k += '"';
    for (char c : *v) {
      if (c == '/') k += '/';
      k += c;
    }
    k += '"';
  }
  return k;
}

void append_value_object(std::string& out, const TableInfo& t, const RowValues& row,
                         const std::vector<size_t>& cols) {
  out += '{';
  bool first = true;
  for (size_t idx : cols) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, t.columns[idx].name);
    out += ':';
    const auto& v = row[idx];
    if (v)
      append_json_string(out, *v);
    else
      out += "null";
  }
  out += '}';
}

std::string change_message(const std::string& key, const std::string& value_object,
                           const std::string* old_value_object, const ChangeHeaders& h) {
  // Built in a scratch buffer, returned in a string of its exact size: the
  // message is held in shape logs, where the slack of a growing string
  // (up to its whole size again) was more than the messages' own bytes.
  static thread_local std::string o;
  o.clear();
  o += "{\"key\":";
  append_json_string(o, key);
  o += ",\"value\":";
  o += value_object;
  if (old_value_object) {
    o += ",\"old_value\":";
    o += *old_value_object;
  }
  o += ",\"headers\":{\"operation\":\"";
  o += h.operation;
  o += "\",\"relation\":";
  o += h.relation;
  o += ",\"txids\":[";
  o += std::to_string(h.txid);
  o += "],\"lsn\":\"";
  o += std::to_string(h.lsn);
  o += "\",\"op_position\":";
  o += std::to_string(h.op_position);
  if (h.last) o += ",\"last\":true";
  if (h.version) {
    o += ",\"version\":\"";
    o += std::to_string(h.version);
    o += '"';
  }
  if (h.key_change_to) {
    o += ",\"key_change_to\":";
    append_json_string(o, *h.key_change_to);
  }
  if (h.key_change_from) {
    o += ",\"key_change_from\":";
    append_json_string(o, *h.key_change_from);
  }
  o += "}}";
  return std::string(o);
}

std::string version_header(std::string_view version) {
  if (version.empty()) return {};
  std::string o = ",\"version\":";
  append_json_string(o, version);
  return o;
}

std::string snapshot_row_message(const std::string& key, const std::string& value_object,
                                 std::string_view relation, std::string_view extra_headers) {
  std::string o;
  o.reserve(key.size() + value_object.size() + extra_headers.size() + 64);
  o += "{\"key\":";
  append_json_string(o, key);
  o += ",\"value\":";
  o += value_object;
  o += ",\"headers\":{\"operation\":\"insert\",\"relation\":";
  o += relation;
  o += extra_headers;
  o += "}}";
  return o;
}

std::string up_to_date_message(uint64_t global_last_seen_lsn) {
  return "{\"headers\":{\"control\":\"up-to-date\",\"global_last_seen_lsn\":\"" +
         std::to_string(global_last_seen_lsn) + "\"}}";
}

void append_snapshot_fields(std::string& o, std::string_view xmin, std::string_view xmax,
                            const std::vector<std::string>& xip) {
  o += "\"xmin\":";
  append_json_string(o, xmin);
  o += ",\"xmax\":";
  append_json_string(o, xmax);
  o += ",\"xip_list\":[";
  for (size_t i = 0; i < xip.size(); ++i) {
    if (i) o += ',';
    append_json_string(o, xip[i]);
  }
  o += ']';
}

std::string snapshot_end_message(std::string_view xmin, std::string_view xmax,
                                 const std::vector<std::string>& xip) {
  std::string o = "{\"headers\":{\"control\":\"snapshot-end\",";
  append_snapshot_fields(o, xmin, xmax, xip);
  o += "}}";
  return o;
}

long long next_cursor(long long now_unix_s, long long timeout_s, long long prev_cursor, int rnd) {
  if (timeout_s <= 0) return 0;
  constexpr long long kEpoch = 1728432000;  // 2024-10-09T00:00:00Z
  long long diff = now_unix_s - kEpoch;
  long long next = ((diff + timeout_s - 1) / timeout_s) * timeout_s;
  return next > prev_cursor ? next : prev_cursor + rnd;
}


}  // namespace shapesync
