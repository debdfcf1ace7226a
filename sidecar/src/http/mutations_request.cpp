// POST /v1/mutations: the request body checked before it goes to the database.
#include "http/mutations.hpp"

#include "http/validate.hpp"

#include <nlohmann/json.hpp>

namespace shapesync {

std::variant<WriteRequest, MutationsRequestError> parse_mutations_request(std::string_view body,
                                                                          std::string_view allow_partial_param,
                                                                          const std::optional<std::string>& key,
                                                                          int max_mutations) {
  auto bad = [](std::string field, std::string msg) {
    MutationsRequestError e;
    e.errors.add(field, msg);
    return e;
  };
  WriteRequest out;
  if (key) {
    if (key->empty() || key->size() > 255) return bad("Idempotency-Key", "must be 1 to 255 bytes");
    for (unsigned char c : *key)
      if (c < 0x20 || c > 0x7e) return bad("Idempotency-Key", "must be printable ASCII");
    out.idempotency_key = key;
  }
  if (!allow_partial_param.empty()) {
    if (allow_partial_param != "true" && allow_partial_param != "false")
      return bad("allow_partial", "must be true or false");
    out.allow_partial = allow_partial_param == "true";
  }
  if (body.empty()) return bad("body", "a JSON object {\"mutations\": [...]} is required");
  // nesting bounded before any recursive walk (dump() below)
  auto parsed = parse_json_bounded(body, kMaxMutationNesting);
  if (auto* err = std::get_if<std::string>(&parsed)) return bad("body", *err);
  nlohmann::json j = std::get<nlohmann::json>(std::move(parsed));
  if (!j.is_object()) return bad("body", "must be a JSON object {\"mutations\": [...]}");
  for (auto& [k, v] : j.items()) {
    if (k == "mutations") continue;
    if (k == "allow_partial") {
      if (!v.is_boolean()) return bad("allow_partial", "must be true or false");
      if (!allow_partial_param.empty() && v.get<bool>() != out.allow_partial)
        return bad("allow_partial", "the query parameter and the body disagree");
      out.allow_partial = v.get<bool>();
      continue;
    }
    return bad(k.size() > 64 ? k.substr(0, 64) : k, "unknown field (expected mutations, allow_partial)");
  }
  auto it = j.find("mutations");
  if (it == j.end() || !it->is_array()) return bad("mutations", "must be an array of mutations");
  if (it->empty()) return bad("mutations", "must not be empty");
  if (it->size() > static_cast<size_t>(max_mutations)) {
    MutationsRequestError e;
    e.too_large = true;
    e.errors.add("mutations", std::to_string(it->size()) + " mutations in one request; at most " +
                                  std::to_string(max_mutations) + " (--max-mutations): send them in smaller batches");
    return e;
  }
  for (size_t i = 0; i < it->size(); ++i)
    if (!(*it)[i].is_object()) return bad("mutations[" + std::to_string(i) + "]", "must be an object");
  out.mutations = it->dump();
  return out;
}

}  // namespace shapesync
