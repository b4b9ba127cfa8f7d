#include "saga/service/config.h"

#include "saga/service/routing.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <optional>

#include "saga/service/http_server.h"

namespace saga::service {
namespace {

// The trimmed value of `name`; nullopt when unset or blank.
std::optional<std::string> lookup(std::string_view name) {
  const char* raw = std::getenv(std::string(name).c_str());
  if (raw == nullptr) return std::nullopt;
  std::string_view v = raw;
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.remove_prefix(1);
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.remove_suffix(1);
  if (v.empty()) return std::nullopt;
  return std::string(v);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

Status bad_value(std::string_view name, std::string_view expected, std::string_view got) {
  return Status::invalid_argument(std::string(name) + " must be " + std::string(expected) +
                                  ", got '" + std::string(got) + "'");
}

std::optional<int64_t> parse_int(std::string_view s) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return value;
}

}  // namespace

std::string env_string(std::string_view name, std::string_view fallback) {
  auto v = lookup(name);
  return v ? *v : std::string(fallback);
}

StatusOr<int64_t> env_int(std::string_view name, int64_t fallback, int64_t min, int64_t max) {
  auto v = lookup(name);
  if (!v) return fallback;
  auto value = parse_int(*v);
  if (!value || *value < min || *value > max) {
    return bad_value(name, "an integer in " + std::to_string(min) + ".." + std::to_string(max), *v);
  }
  return *value;
}

std::string HostPort::to_string() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

StatusOr<HostPort> parse_host_port(std::string_view variable, std::string_view text) {
  auto bad = [&] {
    return Status::invalid_argument(std::string(variable) +
                                    " must be host:port with a port in 1..65535, got '" +
                                    std::string(text) + "'");
  };
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad();
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad();
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad();  // IPv6 needs brackets
  }
  if (host.empty() || port.empty() || port.size() > 5) return bad();
  for (char c : host) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '/' || c == '[' || c == ']') {
      return bad();
    }
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) {
    return bad();
  }
  return HostPort{std::string(host), static_cast<uint16_t>(value)};
}

StatusOr<HostPort> env_address(std::string_view name, std::string_view fallback) {
  return parse_host_port(name, env_string(name, fallback));
}

StatusOr<std::vector<HostPort>> parse_host_port_list(std::string_view variable,
                                                     std::string_view text) {
  const std::string name(variable);
  auto trimmed = [](std::string_view t) {
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    return t;
  };
  if (trimmed(text).empty()) {
    return Status::invalid_argument(name + " must be host:port[,host:port...], got '" +
                                    std::string(text) + "'");
  }
  std::vector<HostPort> out;
  size_t index = 0;
  for (size_t from = 0;; ++index) {
    const size_t comma = text.find(',', from);
    const std::string_view entry =
        trimmed(text.substr(from, comma == std::string_view::npos ? comma : comma - from));
    if (entry.empty()) {
      return Status::invalid_argument(name + ": entry " + std::to_string(index + 1) + " of '" +
                                      std::string(text) + "' is empty");
    }
    SAGA_ASSIGN_OR_RETURN(HostPort address, parse_host_port(variable, entry));
    if (std::find(out.begin(), out.end(), address) != out.end())
      return Status::invalid_argument(name + " lists " + address.to_string() + " twice");
    out.push_back(std::move(address));
    if (comma == std::string_view::npos) break;
    from = comma + 1;
  }
  return out;
}

StatusOr<bool> env_bool(std::string_view name, bool fallback) {
  auto v = lookup(name);
  if (!v) return fallback;
  std::string s = lower(*v);
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  return bad_value(name, "a boolean (true/false, 1/0, yes/no, on/off)", *v);
}

StatusOr<EngineSettings> engine_settings_from_env() {
  EngineSettings e;
  SAGA_ASSIGN_OR_RETURN(auto shards, env_int("SAGA_SHARDS", 0, 0, 4096));
  SAGA_ASSIGN_OR_RETURN(auto threads, env_int("SAGA_THREADS", 0, 0, 256));
  SAGA_ASSIGN_OR_RETURN(e.changelog, env_bool("SAGA_CHANGELOG", false));
  SAGA_ASSIGN_OR_RETURN(e.replicas, env_bool("SAGA_REPLICAS", false));
  SAGA_ASSIGN_OR_RETURN(e.standby, env_bool("SAGA_STANDBY", false));
  e.advertised_url = env_string("ADVERTISED_URL", "");
  SAGA_ASSIGN_OR_RETURN(e.dedup_horizon,
                        env_duration_ms("SAGA_DEDUP_HORIZON", e.dedup_horizon,
                                        std::chrono::milliseconds(0), std::chrono::hours(87'600)));
  if (e.standby && !e.replicas)
    return Status::invalid_argument("SAGA_STANDBY needs SAGA_REPLICAS=1 (docs/replicas.md)");
  if (e.replicas && !e.changelog)
    return Status::invalid_argument("SAGA_REPLICAS needs SAGA_CHANGELOG=1 (docs/replicas.md)");
  if (e.replicas && e.advertised_url.empty()) {
    return Status::invalid_argument(
        "SAGA_REPLICAS needs ADVERTISED_URL, the http://host:port other replicas reach this one at");
  }
  if (!e.advertised_url.empty())
    SAGA_RETURN_IF_ERROR(check_advertised_url("ADVERTISED_URL", e.advertised_url));
  e.shards = static_cast<uint32_t>(shards);
  e.threads = static_cast<uint32_t>(threads);
  return e;
}

StatusOr<std::chrono::milliseconds> env_duration_ms(std::string_view name,
                                                    std::chrono::milliseconds fallback,
                                                    std::chrono::milliseconds min,
                                                    std::chrono::milliseconds max) {
  auto v = lookup(name);
  if (!v) return fallback;
  std::string expected = "a duration such as 250, 250ms, 30s, 5m or 1h in " +
                         std::to_string(min.count()) + "ms.." + std::to_string(max.count()) + "ms";
  std::string_view s = *v;
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
  auto number = parse_int(s.substr(0, digits));
  std::string unit = lower(std::string(s.substr(digits)));
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  int64_t scale = 0;
  if (unit.empty() || unit == "ms")
    scale = 1;
  else if (unit == "s")
    scale = 1'000;
  else if (unit == "m")
    scale = 60'000;
  else if (unit == "h")
    scale = 3'600'000;
  if (!number || scale == 0 || *number > max.count() / scale) return bad_value(name, expected, *v);
  std::chrono::milliseconds d(*number * scale);
  if (d < min || d > max) return bad_value(name, expected, *v);
  return d;
}

StatusOr<ServerOptions> ServerOptions::from_env(uint16_t default_port) {
  ServerOptions o;
  SAGA_ASSIGN_OR_RETURN(auto port, env_int("PORT", default_port, 0, 65535));
  o.port = static_cast<uint16_t>(port);
  o.host = env_string("HTTP_HOST", o.host);
  SAGA_ASSIGN_OR_RETURN(auto threads, env_int("HTTP_THREADS", o.threads, 1, 256));
  o.threads = static_cast<int>(threads);
  SAGA_ASSIGN_OR_RETURN(
      auto header_limit,
      env_int("HTTP_HEADER_LIMIT_BYTES", static_cast<int64_t>(o.header_limit), 1024, 1 << 20));
  o.header_limit = static_cast<size_t>(header_limit);
  SAGA_ASSIGN_OR_RETURN(
      auto body_limit,
      env_int("HTTP_BODY_LIMIT_BYTES", static_cast<int64_t>(o.body_limit), 0, int64_t{1} << 30));
  o.body_limit = static_cast<size_t>(body_limit);
  using std::chrono::milliseconds;
  SAGA_ASSIGN_OR_RETURN(o.read_timeout, env_duration_ms("HTTP_READ_TIMEOUT_MS", o.read_timeout,
                                                        milliseconds(1), std::chrono::hours(1)));
  SAGA_ASSIGN_OR_RETURN(o.write_timeout, env_duration_ms("HTTP_WRITE_TIMEOUT_MS", o.write_timeout,
                                                         milliseconds(1), std::chrono::hours(1)));
  SAGA_ASSIGN_OR_RETURN(o.drain_timeout, env_duration_ms("HTTP_DRAIN_TIMEOUT_MS", o.drain_timeout,
                                                         milliseconds(0), std::chrono::hours(1)));
  SAGA_ASSIGN_OR_RETURN(
      int64_t max_connections,
      env_int("HTTP_MAX_CONNECTIONS", static_cast<int64_t>(o.max_connections), 1, 1'000'000));
  o.max_connections = static_cast<size_t>(max_connections);
  o.tls_cert_file = env_string("TLS_CERT_FILE", "");
  o.tls_key_file = env_string("TLS_KEY_FILE", "");
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return Status::invalid_argument(
        "TLS_CERT_FILE and TLS_KEY_FILE must be set together (HTTPS) or not at all (HTTP)");
  }
  return o;
}

}  // namespace saga::service
