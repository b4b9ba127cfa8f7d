#include "message_access.h"
#include "saga/service/http_message.h"

namespace saga::service {
namespace {

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kProblemJson = "application/problem+json";

// Never throws on invalid UTF-8 (a detail may quote client input).
std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

Response::Response() { headers_.emplace_back("Content-Type", "text/plain; charset=utf-8"); }

Response Response::json(int status, const nlohmann::json& body) {
  Response res;
  res.status_ = status;
  res.set_header("Content-Type", std::string(kJson));
  res.body_ = dump(body);
  return res;
}

Response Response::text(int status, std::string body, std::string content_type) {
  Response res;
  res.status_ = status;
  res.set_header("Content-Type", std::move(content_type));
  res.body_ = std::move(body);
  return res;
}

Response Response::problem(int status, std::string title, std::string detail) {
  Response res;
  res.status_ = status;
  res.set_header("Content-Type", std::string(kProblemJson));
  res.problem_ = nlohmann::json{{"type", "about:blank"},
                                {"title", std::move(title)},
                                {"status", status},
                                {"detail", std::move(detail)}};
  res.body_ = dump(*res.problem_);
  return res;
}

Response Response::from_status(const saga::Status& status) {
  if (status.ok()) return json(200, nlohmann::json::object());
  int http = http_status_for(status.code());
  Response res = problem(http, std::string(reason_phrase(http)), status.message());
  (*res.problem_)["code"] = std::string(status_code_name(status.code()));
  res.body_ = dump(*res.problem_);
  auto retry_ms = status.retry_after().count();
  if ((http == 429 || http == 503) && retry_ms > 0) {
    res.set_header("Retry-After", std::to_string((retry_ms + 999) / 1000));
  }
  return res;
}

Response& Response::set_header(std::string name, std::string value) {
  std::erase_if(headers_, [&](const auto& h) { return internal::iequals(h.first, name); });
  headers_.emplace_back(std::move(name), std::move(value));
  return *this;
}

int http_status_for(StatusCode code) noexcept {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kCancelled:
    case StatusCode::kInternal:
    case StatusCode::kDataLoss:
      return 500;
  }
  return 500;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

namespace internal {

void MessageAccess::finalize(Response& res, const Request& req) {
  if (res.problem_) {
    if (!req.path().empty()) (*res.problem_)["instance"] = req.path();
    (*res.problem_)["requestId"] = req.request_id();
    res.body_ = dump(*res.problem_);
  }
  if (!res.header("Content-Type")) res.set_header("Content-Type", "text/plain; charset=utf-8");
  res.set_header("X-Request-Id", req.request_id());
  res.set_header("traceparent", req.traceparent());
}

}  // namespace internal
}  // namespace saga::service
