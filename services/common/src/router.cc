#include "saga/service/router.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "message_access.h"

namespace saga::service {
namespace {

// One '/'-separated piece of a request path, raw and decoded, with where it
// starts in the path (a tail parameter captures the raw rest from there).
struct PathSegment {
  std::string_view raw;
  std::string decoded;
  size_t offset;
};

StatusOr<std::vector<PathSegment>> split_path(std::string_view path) {
  std::vector<PathSegment> out;
  size_t pos = 1;  // after the leading '/'
  while (true) {
    size_t slash = path.find('/', pos);
    std::string_view raw = path.substr(pos, slash == path.npos ? path.npos : slash - pos);
    auto decoded = percent_decode(raw, false);
    if (!decoded.ok()) return Status::invalid_argument("path: " + decoded.status().message());
    out.push_back({raw, std::move(*decoded), pos});
    if (slash == path.npos) break;
    pos = slash + 1;
  }
  return out;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

}  // namespace

Handler with_json_body(JsonHandler handler) {
  return [handler = std::move(handler)](const Request& req) -> Response {
    auto body = req.json();
    if (!body.ok()) {
      if (!req.has_json_content_type()) {
        return Response::problem(415, "Unsupported Media Type", body.status().message());
      }
      return Response::problem(400, "Bad Request", body.status().message());
    }
    return handler(req, *body);
  };
}

Router& Router::route(std::string method, std::string pattern, Handler handler) {
  if (!handler) throw std::invalid_argument("route " + method + " " + pattern + " has no handler");
  return add(std::move(method), std::move(pattern), std::move(handler), {});
}

Router& Router::route_async(std::string method, std::string pattern, AsyncHandler handler) {
  if (!handler) throw std::invalid_argument("route " + method + " " + pattern + " has no handler");
  return add(std::move(method), std::move(pattern), {}, std::move(handler));
}

Router& Router::add(std::string method, std::string pattern, Handler handler,
                    AsyncHandler async_handler) {
  if (pattern.empty() || pattern.front() != '/') {
    throw std::invalid_argument("route pattern must start with '/': '" + pattern + "'");
  }
  Route r{std::move(method), pattern, {}, std::move(handler), std::move(async_handler)};
  std::string_view rest = std::string_view(pattern).substr(1);
  while (true) {
    size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    bool last = slash == rest.npos;
    if (!seg.empty() && seg.front() == '{') {
      if (seg.size() < 3 || seg.back() != '}') {
        throw std::invalid_argument("malformed parameter '" + std::string(seg) + "' in route '" +
                                    pattern + "'");
      }
      std::string_view name = seg.substr(1, seg.size() - 2);
      SegmentKind kind = SegmentKind::kParam;
      if (name.size() > 3 && name.substr(name.size() - 3) == "...") {
        if (!last) {
          throw std::invalid_argument("tail parameter must be the last segment in route '" +
                                      pattern + "'");
        }
        name.remove_suffix(3);
        kind = SegmentKind::kTail;
      }
      if (name.find_first_of("{}/") != name.npos) {
        throw std::invalid_argument("malformed parameter in route '" + pattern + "'");
      }
      r.segments.push_back({kind, std::string(name)});
    } else {
      if (seg.find_first_of("{}") != seg.npos) {
        throw std::invalid_argument("braces must enclose a whole segment in route '" + pattern +
                                    "'");
      }
      r.segments.push_back({SegmentKind::kLiteral, std::string(seg)});
    }
    if (last) break;
    rest = rest.substr(slash + 1);
  }
  for (const Route& existing : routes_) {
    if (existing.method == r.method && existing.pattern == r.pattern) {
      throw std::invalid_argument("route registered twice: " + r.method + " " + r.pattern);
    }
  }
  routes_.push_back(std::move(r));
  return *this;
}

std::vector<Router::RouteInfo> Router::routes() const {
  std::vector<RouteInfo> out;
  out.reserve(routes_.size());
  for (const Route& r : routes_) out.push_back({r.method, r.pattern});
  return out;
}

Response Router::handle(Request& req) const {
  std::promise<Response> answered;
  std::future<Response> answer = answered.get_future();
  dispatch(req, [&answered](Response res) { answered.set_value(std::move(res)); });
  return answer.get();
}

void Router::dispatch(Request& req, Responder done) const {
  // Exactly one answer, even when an asynchronous handler answers and then
  // throws; `done` is let go once called, so that a handler that keeps its
  // Responder does not keep what `done` holds (the server's connection).
  struct Once {
    std::mutex mu;
    Responder done;
  };
  auto once = std::make_shared<Once>();
  once->done = std::move(done);
  Responder answer = [once](Response res) {
    Responder first;
    {
      std::lock_guard lock(once->mu);
      first = std::move(once->done);
      once->done = nullptr;
    }
    if (first) first(std::move(res));
  };
  std::optional<Response> res = route_and_run(req, answer);
  if (res) answer(std::move(*res));
}

std::optional<Response> Router::route_and_run(Request& req, const Responder& answer) const {
  try {
    if (!req.target_status().ok()) {
      return Response::problem(400, "Bad Request", req.target_status().message());
    }
    const std::string& path = req.path();
    if (path.empty() || path.front() != '/') {
      return Response::problem(400, "Bad Request",
                               "the request target must be an absolute path such as /healthz");
    }
    auto segments = split_path(path);
    if (!segments.ok()) return Response::problem(400, "Bad Request", segments.status().message());

    auto rank = [](const Route& r, const std::string& method) {
      std::vector<int> kinds;
      for (const Segment& seg : r.segments) kinds.push_back(static_cast<int>(seg.kind));
      return std::pair(std::move(kinds), r.method == method ? 1 : 0);
    };
    const Route* best = nullptr;
    std::pair<std::vector<int>, int> best_rank;
    std::vector<std::pair<std::string, std::string>> best_params;
    std::vector<std::string> allowed;
    for (const Route& r : routes_) {
      std::vector<std::pair<std::string, std::string>> params;
      bool matched = true;
      bool has_tail = false;
      for (size_t i = 0; i < r.segments.size() && matched; ++i) {
        const Segment& seg = r.segments[i];
        if (i >= segments->size()) {
          matched = false;
        } else if (seg.kind == SegmentKind::kTail) {
          std::string_view rest = std::string_view(path).substr((*segments)[i].offset);
          matched = !rest.empty();
          has_tail = true;
          params.emplace_back(seg.text, std::string(rest));
        } else if (seg.kind == SegmentKind::kParam) {
          matched = !(*segments)[i].decoded.empty();
          params.emplace_back(seg.text, (*segments)[i].decoded);
        } else {
          matched = (*segments)[i].decoded == seg.text;
        }
      }
      if (!matched || (!has_tail && r.segments.size() != segments->size())) continue;

      allowed.push_back(r.method);
      if (r.method == "GET") allowed.push_back("HEAD");
      bool method_ok = r.method == req.method() || (req.method() == "HEAD" && r.method == "GET");
      if (!method_ok) continue;
      // Literal segments earliest win; at equal shape an exact method beats HEAD-via-GET.
      auto r_rank = rank(r, req.method());
      if (best == nullptr || best_rank < r_rank) {
        best = &r;
        best_rank = std::move(r_rank);
        best_params = std::move(params);
      }
    }

    if (best == nullptr) {
      if (allowed.empty()) {
        return Response::problem(404, "Not Found", "no route for " + req.method() + " " + path);
      }
      std::sort(allowed.begin(), allowed.end());
      allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
      std::string allow = join(allowed, ", ");
      Response res = Response::problem(
          405, "Method Not Allowed",
          "method " + req.method() + " is not allowed for " + path + "; allowed: " + allow);
      res.set_header("Allow", std::move(allow));
      return res;
    }
    internal::MessageAccess::set_route(req, best->pattern, std::move(best_params));
    if (best->async_handler) {
      best->async_handler(req, answer);
      return std::nullopt;
    }
    return best->handler(req);
  } catch (const std::exception& e) {
    spdlog::error("handler for {} {} threw: {} (requestId {})", req.method(), req.path(), e.what(),
                  req.request_id());
  } catch (...) {
    spdlog::error("handler for {} {} threw a non-standard exception (requestId {})", req.method(),
                  req.path(), req.request_id());
  }
  return Response::problem(500, "Internal Server Error",
                           "the server failed while handling this request; its logs have the "
                           "details under this request id");
}

}  // namespace saga::service
