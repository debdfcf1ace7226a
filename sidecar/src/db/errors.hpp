// What a PostgreSQL error means for the request that met it: the one place
// that maps SQLSTATEs to client errors (400), configuration errors of this
// sidecar (a missing grant, never retried into shared state),
// an unreachable database (503) and the rest. Pure, unit-tested.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "db/pg.hpp"

namespace shapesync {

enum class PgFailure {
  kUnreachable,    // connection lost, server shutting down, too many connections
  kConfiguration,  // this sidecar's role or database setup: insufficient privilege, login refused, no database
  kRequest,        // caused by the client's text (WHERE, params, ...): a 400
  kOther,          // anything else: a retryable 503
};

PgFailure classify_pg_error(const PgError& e);

// The 400 message of a kRequest error: "At location N: <message>. <detail>".
std::string request_error_message(const PgError& e);

// True when a failed shape build means the shape itself can never be served,
// by any sidecar, so it is retired in the database: its filter raised on a row
// (data exception or a 42xxx error about the shape's own relation), or the
// change log no longer holds its changes, or its snapshot was abandoned. Never
// for an error about this sidecar (privileges, connection, resources).
bool retires_shape(const PgError& e);


// What an operator should run for a kConfiguration error, as far as the
// message tells ("GRANT SELECT ON TABLE shapesync.shape_snapshots TO <role>"),
// `privilege` being what the failed statement needed ("" when unknown).
std::string grant_hint(const PgError& e, std::string_view privilege, std::string_view role);

// The error text to log: a missing privilege also says which role and how to grant it.
std::string pg_why(const PgError& e);

// The role a connection string names ("" when it names none), for GRANT hints.
std::string conninfo_user(const std::string& conninfo);

}  // namespace shapesync
