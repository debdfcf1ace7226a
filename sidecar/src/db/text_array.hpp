// PostgreSQL text[] literals: how values travel to and from SQL as arrays
// (change-log rows, shape parameters). Pure functions.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/table.hpp"

namespace shapesync {

// Formats a PostgreSQL text[] literal, every element quoted.
std::string text_array_literal(const std::vector<std::string>& v);

// Parses a PostgreSQL text[] literal with lower bound 1 ("{a,\"b c\",NULL}").
// Returns nullopt on malformed input.
std::optional<RowValues> parse_text_array(std::string_view s);

// The same arrays in PostgreSQL's binary format (array_send), as a result in
// binary format carries them: one dimension with lower bound 1, or none
// (empty). Elements of text-like types are their raw bytes, so the values
// equal what parse_text_array gives for the text form. Returns nullopt on
// malformed input (a length past the end, bytes left over, more dimensions).
std::optional<RowValues> parse_binary_text_array(std::string_view s);
// int4[] in binary format, NULL elements skipped.
std::optional<std::vector<int32_t>> parse_binary_int4_array(std::string_view s);
// Reads a big-endian unsigned integer of n bytes at s[pos], advancing pos;
// false (pos unchanged) when fewer than n bytes are left.
bool read_be(std::string_view s, size_t& pos, size_t n, uint64_t& v);
// A binary integer field (int2/int4/int8/oid/xid8/"char": 1, 2, 4 or 8
// bytes, network order), zero-extended; nullopt for any other size.
std::optional<uint64_t> binary_uint(std::string_view s);

}  // namespace shapesync
