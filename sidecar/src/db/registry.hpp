// The extension's shape registry: validating a shape and registering it
// (shapesync.check_shape, get_or_create_shape), and retiring one.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "db/pg.hpp"

namespace shapesync {

// What check_shape() found wrong with a shape, as data (nothing in the server log).
struct ShapeRejection {
  std::string code;     // SQLSTATE (SS002: row-level security applies to the caller)
  std::string field;    // the parameter at fault: "where", "table", ...
  std::string message;  // "At location N: <message>. <detail>"
  std::string hint;
};
struct ShapeCheck {
  std::optional<ShapeRejection> rejection;  // nullopt when the database accepts it
  std::string canonical_where;              // the filter as PostgreSQL deparses it ("" for none)
  bool policy_applied = false;              // role-aware check: row-level security applied to the role
  std::optional<std::vector<std::string>> shape_columns;  // role-aware check: the shape's columns (nullopt: all)
};
// Validates a shape's (or a subset's) table and WHERE for the calling role.
asio::awaitable<ShapeCheck> check_shape(PgConn& c, uint32_t relid, const std::optional<std::string>& where,
                                        const std::vector<std::string>& params);

// On behalf of `role` with `claims` (JSON text), the extension's role-aware
// overload (docs/auth.md): the effective filter (the filter AND the role's
// folded SELECT policies) and the columns the role may read. `columns`
// nullopt: the permitted ones. Refusals come back as data: SS011 (policy),
// SS012 (role), SS013 (column/table) among them.
asio::awaitable<ShapeCheck> check_shape_as(PgConn& c, uint32_t relid, const std::optional<std::string>& where,
                                           const std::vector<std::string>& params, const std::string& role,
                                           const std::string& claims,
                                           const std::optional<std::vector<std::string>>& columns);

struct RegisteredShape {
  std::string handle;
  int32_t shape_id = 0;
  std::string canonical_where;  // PostgreSQL's deparse of the validated filter ("" for none)
  bool policy_applied = false;  // role-aware registration only
  std::optional<std::vector<std::string>> shape_columns;  // role-aware: the shape's columns (nullopt: all)
};
// The active shape for (table, where, columns, options), created if needed.
// Throws PgError.
asio::awaitable<RegisteredShape> get_or_create_shape(PgConn& c, uint32_t relid, const std::optional<std::string>& where,
                                                     const std::vector<std::string>& columns,
                                                     const std::string& options,
                                                     const std::vector<std::string>& params);

// The same on behalf of `role` with `claims` (the role-aware overload): the
// shape's definition is the effective filter and columns. Throws PgError
// (SS011/SS012/SS013 when the role may not have it).
asio::awaitable<RegisteredShape> get_or_create_shape_as(PgConn& c, uint32_t relid,
                                                        const std::optional<std::string>& where,
                                                        const std::optional<std::vector<std::string>>& columns,
                                                        const std::string& options,
                                                        const std::vector<std::string>& params,
                                                        const std::string& role, const std::string& claims);

// One shape of a registration batch: its filter in; the database's verdict out.
struct BatchRegistration {
  std::optional<std::string> where;
  std::optional<ShapeRejection> rejection;  // check_shape()'s refusal (nothing registered)
  std::optional<RegisteredShape> shape;     // when accepted
};
// Checks and registers several shapes of one table with the same columns and
// options (and, with `role`, the same role and claims; no params) in one
// statement: per shape, check_shape() (refusals come back as data) and, only
// when it accepts, get_or_create_shape(), exactly as the one-shape calls
// above. `columns`: the selected names (nullopt with a role: the permitted
// ones). Throws PgError when the statement fails (for every shape of it:
// register them one at a time to learn which).
asio::awaitable<void> check_and_register_many(PgConn& c, uint32_t relid, std::vector<BatchRegistration>& regs,
                                              const std::optional<std::vector<std::string>>& columns,
                                              const std::string& options, const std::optional<std::string>& role,
                                              const std::string& claims);

// Retires a shape for every sidecar (its clients refetch). Throws PgError.
asio::awaitable<void> invalidate_shape(PgConn& c, const std::string& handle, const std::string& reason);

}  // namespace shapesync
