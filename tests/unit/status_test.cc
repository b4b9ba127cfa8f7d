#include "saga/status.h"

#include <doctest/doctest.h>

#include <memory>
#include <sstream>

#include "saga/version.h"

namespace saga {
namespace {

StatusOr<int> half(int n) {
  if (n % 2 != 0) return Status::invalid_argument("odd number " + std::to_string(n));
  return n / 2;
}

StatusOr<int> quarter(int n) {
  SAGA_ASSIGN_OR_RETURN(int h, half(n));
  SAGA_ASSIGN_OR_RETURN(auto q, half(h));
  return q;
}

Status check_even(int n) {
  SAGA_RETURN_IF_ERROR(half(n).status());
  return ok_status();
}

TEST_CASE("a default status is OK and prints as OK") {
  Status s;
  CHECK(s.ok());
  CHECK(s.code() == StatusCode::kOk);
  CHECK(s.to_string() == "OK");
}

TEST_CASE("an error status keeps its code and message") {
  Status s = Status::not_found("saga 42");
  CHECK_FALSE(s.ok());
  CHECK(s.code() == StatusCode::kNotFound);
  CHECK(s.message() == "saga 42");
  CHECK(s.to_string() == "NOT_FOUND: saga 42");
  std::ostringstream os;
  os << s.with_context("load");
  CHECK(os.str() == "NOT_FOUND: load: saga 42");
}

TEST_CASE("only transient codes are retryable") {
  CHECK(Status::unavailable("broker down").is_retryable());
  CHECK(Status::deadline_exceeded("slow").is_retryable());
  CHECK(Status::aborted("conflict").is_retryable());
  CHECK_FALSE(Status::failed_precondition("operator").is_retryable());
  CHECK_FALSE(Status::invalid_argument("bad").is_retryable());
  CHECK_FALSE(ok_status().is_retryable());
}

TEST_CASE("StatusOr carries either a value or an error") {
  auto ok = half(8);
  REQUIRE(ok.ok());
  CHECK(*ok == 4);
  CHECK(ok.value_or(-1) == 4);

  auto bad = half(3);
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.value_or(-1) == -1);
}

TEST_CASE("StatusOr holds move-only values") {
  StatusOr<std::unique_ptr<int>> p = std::make_unique<int>(7);
  REQUIRE(p.ok());
  std::unique_ptr<int> owned = std::move(p).value();
  CHECK(*owned == 7);
}

TEST_CASE("the helper macros propagate the first error") {
  CHECK(*quarter(8) == 2);
  CHECK(quarter(6).status().message() == "odd number 3");
  CHECK(check_even(4).ok());
  CHECK(check_even(5).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("the version is the project's") { CHECK(version().find('.') != std::string_view::npos); }

}  // namespace
}  // namespace saga
