// saga/json.h: parsing JSON text and MessagePack with a nesting limit, so that
// hostile input neither overflows the stack nor throws.
#include "saga/json.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace saga {
namespace {

using Json = nlohmann::json;

// `depth` nested arrays around `inner`: depth 2 is "[[1]]".
std::string nested_arrays(size_t depth, std::string_view inner = "1") {
  return std::string(depth, '[') + std::string(inner) + std::string(depth, ']');
}

// `depth` nested objects: depth 2 is {"a":{"a":1}}.
std::string nested_objects(size_t depth) {
  std::string out;
  for (size_t i = 0; i < depth; ++i) out += "{\"a\":";
  out += "1";
  out += std::string(depth, '}');
  return out;
}

// MessagePack of `depth` nested one-element arrays around nil.
std::string nested_msgpack(size_t depth) { return std::string(depth, '\x91') + '\xc0'; }

void check_too_deep(const StatusOr<Json>& r) {
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK_MESSAGE(r.status().message().find("nested deeper than 64") != std::string::npos,
                r.status().message());
}

TEST_CASE("JSON nested exactly kMaxJsonDepth deep parses") {
  StatusOr<Json> a = parse_json(nested_arrays(kMaxJsonDepth));
  REQUIRE(a.ok());
  const Json* p = &*a;
  for (size_t i = 0; i < kMaxJsonDepth; ++i) {
    REQUIRE(p->is_array());
    p = &(*p)[0];
  }
  CHECK(*p == 1);
  CHECK(parse_json(nested_objects(kMaxJsonDepth)).ok());
  CHECK(parse_json(" {\"a\": [1, {\"b\": null}], \"c\": \"d\"} ")->at("c") == "d");
  CHECK(*parse_json("42") == 42);
}

TEST_CASE("JSON one level deeper than kMaxJsonDepth is refused") {
  check_too_deep(parse_json(nested_arrays(kMaxJsonDepth + 1)));
  check_too_deep(parse_json(nested_objects(kMaxJsonDepth + 1)));
  check_too_deep(parse_json("{\"a\":" + nested_arrays(kMaxJsonDepth) + "}"));
}

TEST_CASE("JSON nested 100,000 deep is refused without overflowing the stack") {
  check_too_deep(parse_json(nested_arrays(100'000)));
  check_too_deep(parse_json(nested_objects(100'000)));
  // Unterminated: refused at depth 65, long before the missing brackets matter.
  check_too_deep(parse_json(std::string(100'000, '[')));
}

TEST_CASE("deep but sibling containers are not nesting") {
  std::string wide = "[";
  for (int i = 0; i < 1000; ++i) wide += (i ? "," : "") + nested_arrays(kMaxJsonDepth - 1);
  wide += "]";
  StatusOr<Json> r = parse_json(wide);
  REQUIRE(r.ok());
  CHECK(r->size() == 1000);
}

TEST_CASE("malformed JSON is refused with the parser's position and no exception tag") {
  for (const std::string_view bad : {"", "{nope", "[1,]", "{} trailing", "[1] [2]", "/* c */ 1"}) {
    CAPTURE(bad);
    StatusOr<Json> r = parse_json(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message().find("parse error") != std::string::npos);
    CHECK(r.status().message().find("json.exception") == std::string::npos);
  }
}

TEST_CASE("MessagePack round-trips and its nesting is limited the same way") {
  const Json doc = {{"qty", 2}, {"name", "Zoë"}, {"list", {1, -2, 3.5, nullptr, true}}};
  const std::vector<uint8_t> packed = Json::to_msgpack(doc);
  StatusOr<Json> back = parse_msgpack(std::string(packed.begin(), packed.end()));
  REQUIRE(back.ok());
  CHECK(*back == doc);

  CHECK(parse_msgpack(nested_msgpack(kMaxJsonDepth)).ok());
  check_too_deep(parse_msgpack(nested_msgpack(kMaxJsonDepth + 1)));
  // nlohmann's MessagePack reader recurses once per level: without the limit
  // this input overflows the stack.
  check_too_deep(parse_msgpack(nested_msgpack(100'000)));
}

TEST_CASE("damaged MessagePack is refused, never a crash") {
  const std::vector<uint8_t> packed = Json::to_msgpack(Json{{"a", {1, 2, 3}}, {"b", "text"}});
  const std::string bytes(packed.begin(), packed.end());
  for (size_t n = 0; n < bytes.size(); ++n) {
    CHECK(parse_msgpack(bytes.substr(0, n)).status().code() == StatusCode::kInvalidArgument);
  }
  CHECK_FALSE(parse_msgpack(bytes + "x").ok());
  // An array announcing 4 billion elements in five bytes.
  CHECK_FALSE(parse_msgpack(std::string("\xdd\xff\xff\xff\xff", 5)).ok());
  CHECK_FALSE(parse_msgpack(std::string("\xc1", 1)).ok());  // never used in MessagePack
}

TEST_CASE("StatusOr::value_or on a temporary moves the value out") {
  CHECK(parse_json("[1,2]").value_or(Json()) == Json({1, 2}));
  CHECK(parse_json("[1,").value_or(Json()).is_null());
}

TEST_CASE("json_depth counts nesting as the parser does, without recursion") {
  CHECK(json_depth(Json(1)) == 0);
  CHECK(json_depth(Json::array()) == 1);
  CHECK(json_depth(Json::object()) == 1);
  CHECK(json_depth(*parse_json(nested_arrays(kMaxJsonDepth))) == kMaxJsonDepth);
  CHECK(json_depth(*parse_json(nested_objects(5))) == 5);
  CHECK(json_depth(*parse_json(R"({"a": [1, {"b": [[]]}], "c": {}})")) == 5);
  // Far deeper than the parser allows, built in code: counted, no stack overflow.
  Json deep = 1;
  for (int i = 0; i < 100'000; ++i) deep = Json::array({std::move(deep)});
  CHECK(json_depth(deep) == 100'000);
  // nlohmann's destructor of `deep` is iterative (3.11), so the test ends cleanly.
}

}  // namespace
}  // namespace saga
