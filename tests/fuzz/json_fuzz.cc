// Fuzz target: saga::parse_json and saga::parse_msgpack (saga/json.h), the one
// door every JSON text and MessagePack record comes in through. Whatever they
// accept must survive nlohmann's recursive operations (dump, copy, compare,
// MessagePack), and round-trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "saga/json.h"

namespace {

using Json = nlohmann::json;

// `from_text`: a document read from JSON text prints as text we read back
// (MessagePack may hold binary values, which print one or two levels deeper).
void exercise(const Json& doc, bool from_text) {
  const Json copy = doc;  // recursive copy and compare
  (void)(copy == doc);    // not asserted: NaN (MessagePack can carry one) is unequal to itself
  const std::string text = doc.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (copy.dump(-1, ' ', false, Json::error_handler_t::replace) != text) std::abort();
  if (from_text && !saga::parse_json(text).ok()) std::abort();
  const std::vector<uint8_t> packed = Json::to_msgpack(doc);
  auto back = saga::parse_msgpack(
      std::string_view(reinterpret_cast<const char*>(packed.data()), packed.size()));
  if (!back.ok()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto doc = saga::parse_json(in); doc.ok()) exercise(*doc, true);
  if (auto doc = saga::parse_msgpack(in); doc.ok()) exercise(*doc, false);
  return 0;
}
