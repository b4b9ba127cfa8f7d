#include <algorithm>
#include <cctype>
#include <charconv>

#include "message_access.h"
#include "saga/json.h"
#include "saga/service/http_message.h"

namespace saga::service {
namespace internal {

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace internal

namespace {

using internal::iequals;

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The path of an origin-form ("/a?b") or absolute-form ("http://h/a?b") target.
std::string_view path_and_query(std::string_view target) noexcept {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
      std::string_view rest = target.substr(scheme.size());
      size_t slash = rest.find_first_of("/?");
      if (slash == rest.npos) return "/";
      return rest.substr(slash);
    }
  }
  return target;
}

}  // namespace

std::optional<std::string_view> find_header(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return std::string_view(value);
  }
  return std::nullopt;
}

std::string percent_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(in.size());
  for (char c : in) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

StatusOr<std::string> percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      int hi = i + 2 < in.size() ? hex_digit(in[i + 1]) : -1;
      int lo = i + 2 < in.size() ? hex_digit(in[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return Status::invalid_argument("malformed percent-encoding at '" +
                                        std::string(in.substr(i, 3)) + "'");
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Request::Request(std::string method, std::string target, Headers headers, std::string body)
    : method_(std::move(method)),
      target_(std::move(target)),
      headers_(std::move(headers)),
      body_(std::move(body)) {
  std::string_view pq = path_and_query(target_);
  size_t end = pq.find_first_of("?#");
  path_ = std::string(pq.substr(0, end));
  if (end != pq.npos && pq[end] == '?') {
    std::string_view qs = pq.substr(end + 1);
    qs = qs.substr(0, qs.find('#'));
    while (!qs.empty()) {
      size_t amp = qs.find('&');
      std::string_view pair = qs.substr(0, amp);
      qs = amp == qs.npos ? std::string_view() : qs.substr(amp + 1);
      if (pair.empty()) continue;
      size_t eq = pair.find('=');
      auto key = percent_decode(pair.substr(0, eq), true);
      auto value = percent_decode(eq == pair.npos ? std::string_view() : pair.substr(eq + 1), true);
      if (!key.ok() || !value.ok()) {
        target_status_ = Status::invalid_argument(
            "query string: " + (key.ok() ? value.status() : key.status()).message());
        query_.clear();
        break;
      }
      query_.emplace_back(std::move(*key), std::move(*value));
    }
  }

  auto id = header("X-Request-Id");
  request_id_ = id && is_valid_request_id(*id) ? std::string(*id) : generate_request_id();
  auto tp = header("traceparent");
  std::optional<TraceContext> incoming = tp ? TraceContext::parse(*tp) : std::nullopt;
  trace_ = incoming ? std::move(*incoming) : TraceContext::generate();
}

std::string_view Request::param(std::string_view name) const noexcept {
  for (const auto& [key, value] : params_) {
    if (key == name) return value;
  }
  return {};
}

std::optional<std::string> Request::query(std::string_view name) const {
  for (const auto& [key, value] : query_) {
    if (key == name) return value;
  }
  return std::nullopt;
}

StatusOr<std::optional<int64_t>> Request::query_int(std::string_view name, int64_t min,
                                                   int64_t max, std::string_view what) const {
  const auto text = query(name);
  if (!text) return std::optional<int64_t>();
  int64_t v = 0;
  const char* end = text->data() + text->size();
  auto [p, ec] = std::from_chars(text->data(), end, v);
  if (text->empty() || ec != std::errc() || p != end || v < min || v > max) {
    return Status::invalid_argument(
        "query parameter '" + std::string(name) + "' must be " +
        (what.empty() ? "an integer in " + std::to_string(min) + ".." + std::to_string(max)
                      : std::string(what)));
  }
  return std::optional<int64_t>(v);
}

bool Request::has_json_content_type() const {
  auto ct = header("Content-Type");
  if (!ct) return false;
  std::string_view rest = *ct;
  size_t semi = rest.find(';');
  std::string_view media = trim(rest.substr(0, semi));
  bool json = iequals(media, "application/json");
  if (!json && media.size() > 17 && iequals(media.substr(0, 12), "application/")) {
    json = iequals(media.substr(media.size() - 5), "+json");
  }
  if (!json) return false;
  while (semi != rest.npos) {
    rest = rest.substr(semi + 1);
    semi = rest.find(';');
    std::string_view param = trim(rest.substr(0, semi));
    size_t eq = param.find('=');
    if (eq == param.npos) continue;
    if (!iequals(trim(param.substr(0, eq)), "charset")) continue;
    std::string_view value = trim(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (!iequals(value, "utf-8")) return false;
  }
  return true;
}

StatusOr<nlohmann::json> Request::json() const {
  if (!has_json_content_type()) {
    auto ct = header("Content-Type");
    if (!ct) {
      return Status::invalid_argument(
          "Content-Type must be application/json; the header is missing");
    }
    return Status::invalid_argument("Content-Type must be application/json (charset utf-8), got '" +
                                    std::string(*ct) + "'");
  }
  if (body_.empty()) {
    return Status::invalid_argument("the request body is empty; expected a JSON document");
  }
  StatusOr<nlohmann::json> parsed = parse_json(body_);
  if (!parsed.ok()) {
    return Status::invalid_argument("malformed JSON body: " + parsed.status().message());
  }
  return parsed;
}

}  // namespace saga::service
