// Errors as values: saga::Status and saga::StatusOr<T>.
//
// Codes follow Abseil's guide, which maps onto saga decisions:
//   kUnavailable        retry this call (broker down, store busy)
//   kAborted            retry at a higher level (the saga step)
//   kFailedPrecondition do not retry until someone fixes state (park for an operator)
// Both types are [[nodiscard]]; exceptions are kept for programming errors.
#pragma once

#include <cassert>
#include <chrono>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace saga {

/// The kind of an error. Values are stable: they are stored in saga state.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

/// Name of a code, e.g. "UNAVAILABLE".
std::string_view status_code_name(StatusCode code) noexcept;

/// The outcome of an operation: OK, or a code and a human-readable message.
/// A default-constructed Status is OK. Thread-compatible (a value type).
class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status cancelled(std::string msg) { return {StatusCode::kCancelled, std::move(msg)}; }
  static Status invalid_argument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status deadline_exceeded(std::string msg) {
    return {StatusCode::kDeadlineExceeded, std::move(msg)};
  }
  static Status not_found(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status already_exists(std::string msg) {
    return {StatusCode::kAlreadyExists, std::move(msg)};
  }
  static Status resource_exhausted(std::string msg) {
    return {StatusCode::kResourceExhausted, std::move(msg)};
  }
  static Status failed_precondition(std::string msg) {
    return {StatusCode::kFailedPrecondition, std::move(msg)};
  }
  static Status aborted(std::string msg) { return {StatusCode::kAborted, std::move(msg)}; }
  static Status out_of_range(std::string msg) { return {StatusCode::kOutOfRange, std::move(msg)}; }
  static Status unimplemented(std::string msg) {
    return {StatusCode::kUnimplemented, std::move(msg)};
  }
  static Status internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }
  static Status unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status data_loss(std::string msg) { return {StatusCode::kDataLoss, std::move(msg)}; }

  /// True when the operation succeeded.
  bool ok() const noexcept { return code_ == StatusCode::kOk; }
  StatusCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

  /// True for codes worth retrying the same call for (Unavailable, DeadlineExceeded,
  /// ResourceExhausted, Aborted).
  bool is_retryable() const noexcept;

  /// A hint for callers of a rejected request: try again after this long
  /// (0 = no hint). Set when a circuit breaker rejects a saga.
  std::chrono::milliseconds retry_after() const noexcept { return retry_after_; }
  /// Returns a copy carrying the retry-after hint `d`.
  Status with_retry_after(std::chrono::milliseconds d) const {
    Status s = *this;
    s.retry_after_ = d;
    return s;
  }

  /// "OK" or "CODE: message".
  std::string to_string() const;

  /// Returns a copy whose message is "context: message" (OK stays OK).
  Status with_context(std::string_view context) const;

  friend bool operator==(const Status&, const Status&) = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::chrono::milliseconds retry_after_{0};
};

/// An OK status (for call sites that read better with a name than with `{}`).
inline Status ok_status() noexcept { return Status(); }

std::ostream& operator<<(std::ostream& os, const Status& s);

/// Either a value of type T or a non-OK Status. Accessing the value of a
/// non-OK StatusOr is a programming error (asserts in debug builds).
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  /// Holds an error. REQUIRES: !status.ok().
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "StatusOr constructed from an OK Status without a value");
    if (status_.ok()) status_ = Status::internal("StatusOr built from OK status without value");
  }
  /// Holds a value.
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return status_.ok(); }
  const Status& status() const& noexcept { return status_; }
  Status status() && { return std::move(status_); }

  /// REQUIRES: ok().
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  /// The value, or `fallback` when this holds an error.
  T value_or(T fallback) const& { return ok() ? *value_ : std::move(fallback); }
  /// The value moved out, or `fallback` when this holds an error.
  T value_or(T fallback) && { return ok() ? std::move(*value_) : std::move(fallback); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace saga

#define SAGA_STATUS_CONCAT_INNER_(a, b) a##b
#define SAGA_STATUS_CONCAT_(a, b) SAGA_STATUS_CONCAT_INNER_(a, b)

/// Evaluates `expr` (a Status); returns it from the enclosing function unless OK.
#define SAGA_RETURN_IF_ERROR(expr)                       \
  do {                                                   \
    ::saga::Status saga_status_tmp_ = (expr);            \
    if (!saga_status_tmp_.ok()) return saga_status_tmp_; \
  } while (false)

/// Evaluates `rexpr` (a StatusOr<T>); on error returns its Status, otherwise
/// moves the value into `lhs` (which may be a declaration: `auto x`).
#define SAGA_ASSIGN_OR_RETURN(lhs, rexpr) \
  SAGA_ASSIGN_OR_RETURN_IMPL_(SAGA_STATUS_CONCAT_(saga_statusor_, __LINE__), lhs, rexpr)
#define SAGA_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()
