#include "saga/json.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace saga {
namespace {

using Json = nlohmann::json;

// A SAX handler that builds the document with nlohmann's own DOM builder and
// stops the parse at the first array or object that would nest deeper than
// kMaxJsonDepth. nlohmann's text parser is iterative, but its MessagePack
// reader recurses once per level: refusing in start_* bounds both.
class DepthLimitedBuilder {
 public:
  explicit DepthLimitedBuilder(Json& root) : dom_(root, /*allow_exceptions=*/false) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(Json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(Json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(Json::number_float_t v, const Json::string_t& s) {
    return dom_.number_float(v, s);
  }
  bool string(Json::string_t& v) { return dom_.string(v); }
  bool binary(Json::binary_t& v) { return dom_.binary(v); }
  bool start_object(size_t n) { return enter() && dom_.start_object(n); }
  bool key(Json::string_t& k) { return dom_.key(k); }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(size_t n) { return enter() && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  template <class Exception>
  bool parse_error(size_t /*position*/, const std::string& /*token*/, const Exception& e) {
    error_ = e.what();
    return false;
  }

  // Why the parse stopped; empty when it did not.
  std::string error() const {
    if (too_deep_) {
      return "nested deeper than " + std::to_string(kMaxJsonDepth) +
             " levels of arrays and objects";
    }
    // nlohmann's what() starts with a tag such as "[json.exception.parse_error.101] "
    // that means nothing to whoever sent the input.
    std::string_view what = error_;
    if (size_t end = what.find("] "); !what.empty() && what.front() == '[' && end != what.npos) {
      what.remove_prefix(end + 2);
    }
    return std::string(what);
  }

 private:
  bool enter() {
    if (++depth_ <= kMaxJsonDepth) return true;
    too_deep_ = true;
    return false;
  }

  nlohmann::detail::json_sax_dom_parser<Json> dom_;
  size_t depth_ = 0;
  bool too_deep_ = false;
  std::string error_;
};

StatusOr<Json> parse(std::string_view in, nlohmann::detail::input_format_t format) {
  Json root;
  DepthLimitedBuilder builder(root);
  try {
    if (Json::sax_parse(in.begin(), in.end(), &builder, format, /*strict=*/true)) return root;
  } catch (const Json::exception& e) {
    // The DOM builder throws out_of_range for a MessagePack container whose
    // announced size cannot exist; nothing else is expected to throw.
    return Status::invalid_argument(e.what());
  }
  std::string why = builder.error();
  if (why.empty()) why = "malformed input";
  return Status::invalid_argument(std::move(why));
}

}  // namespace

StatusOr<Json> parse_json(std::string_view text) {
  return parse(text, nlohmann::detail::input_format_t::json);
}

StatusOr<Json> parse_msgpack(std::string_view bytes) {
  return parse(bytes, nlohmann::detail::input_format_t::msgpack);
}

size_t json_depth(const Json& j) {
  size_t deepest = 0;
  std::vector<std::pair<const Json*, size_t>> todo{{&j, 0}};  // value, depth of its container
  while (!todo.empty()) {
    auto [v, depth] = todo.back();
    todo.pop_back();
    if (!v->is_structured()) continue;
    deepest = std::max(deepest, depth + 1);
    for (const Json& child : *v) todo.emplace_back(&child, depth + 1);
  }
  return deepest;
}

}  // namespace saga
