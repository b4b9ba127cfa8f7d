// Saga definitions: what the builder accepts and refuses, what a valid
// definition exposes, retry backoff arithmetic and the typed adapters.
#include "saga/definition.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "saga/clock.h"
#include "saga/status.h"
#include "support/doctest_vectors.h"

namespace saga {
namespace {

// The message of a build() that must fail with InvalidArgument.
std::string build_error(DefinitionBuilder& b) {
  StatusOr<DefinitionPtr> def = b.build();
  REQUIRE_FALSE(def.ok());
  CHECK(def.status().code() == StatusCode::kInvalidArgument);
  return def.status().message();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

Status ok_local(Json&) { return ok_status(); }

TEST_CASE("the builder refuses a saga type without a name") {
  DefinitionBuilder b("", 1);
  b.command("reserve", "inventory", "reserve");
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "no name"), msg);
}

TEST_CASE("the builder refuses version 0") {
  DefinitionBuilder b("booking", 0);
  b.command("reserve", "inventory", "reserve");
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "version"), msg);
  CHECK_MESSAGE(contains(msg, "'booking' v0"), msg);  // names the definition
}

TEST_CASE("the builder refuses a saga without steps") {
  DefinitionBuilder b("booking", 1);
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "at least one step"), msg);
}

TEST_CASE("the builder refuses a repeated step name") {
  DefinitionBuilder b("booking", 1);
  b.command("reserve", "inventory", "reserve").command("reserve", "payment", "charge");
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "'reserve' repeats"), msg);
}

TEST_CASE("the builder refuses a step without a name") {
  DefinitionBuilder b("booking", 1);
  b.command("", "inventory", "reserve");
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "step 0 has no name"), msg);
}

TEST_CASE("the builder refuses a command step without participant or command name") {
  DefinitionBuilder b("booking", 1);
  SUBCASE("no participant") {
    b.command("reserve", "", "reserve");
    const std::string msg = build_error(b);
    CHECK_MESSAGE(contains(msg, "'reserve' has no participant"), msg);
  }
  SUBCASE("no command") {
    b.command("reserve", "inventory", "");
    const std::string msg = build_error(b);
    CHECK_MESSAGE(contains(msg, "'reserve' has no command name"), msg);
  }
}

TEST_CASE("the builder refuses a local step without a function") {
  DefinitionBuilder b("booking", 1);
  b.local("audit", nullptr);
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "'audit' has no function"), msg);
}

TEST_CASE("the builder refuses two pivot steps") {
  DefinitionBuilder b("booking", 1);
  b.command("reserve", "inventory", "reserve").pivot().command("pay", "payment", "charge").pivot();
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "more than one pivot"), msg);
}

TEST_CASE("the builder refuses a pivot with a compensation, and a step before it without one") {
  DefinitionBuilder b("booking", 1);
  b.command("reserve", "inventory", "reserve")
      .local("audit", ok_local)
      .compensate_local(ok_local)
      .command("hold", "inventory", "hold")
      .command("pay", "payment", "charge")
      .compensate("payment", "refund")
      .pivot()
      .command("confirm", "inventory", "confirm");
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "the pivot step 'pay' has a compensation"), msg);
  CHECK_MESSAGE(contains(msg, "step 'reserve' comes before the pivot 'pay' and has no compensation"),
                msg);
  CHECK_MESSAGE(contains(msg, "step 'hold' comes before the pivot 'pay'"), msg);
  CHECK_MESSAGE(!contains(msg, "'audit' comes before"), msg);  // it has one
  CHECK_MESSAGE(!contains(msg, "'confirm'"), msg);              // after the pivot: none needed
}

TEST_CASE("the builder refuses a step option set before any step") {
  auto check = [](DefinitionBuilder& b) {
    b.command("reserve", "inventory", "reserve");
    const std::string msg = build_error(b);
    CHECK_MESSAGE(contains(msg, "before any step"), msg);
  };
  SUBCASE("timeout") {
    DefinitionBuilder b("booking", 1);
    b.timeout(Duration{100});
    check(b);
  }
  SUBCASE("compensate") {
    DefinitionBuilder b("booking", 1);
    b.compensate("inventory", "release");
    check(b);
  }
  SUBCASE("pivot") {
    DefinitionBuilder b("booking", 1);
    b.pivot();
    check(b);
  }
  SUBCASE("retry") {
    DefinitionBuilder b("booking", 1);
    b.retry(RetryPolicy{});
    check(b);
  }
}

TEST_CASE("the builder refuses a compensation sent to another participant than the action") {
  DefinitionBuilder b("booking", 1);
  b.command("reserve", "inventory", "reserve").compensate("payment", "release");
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "compensation of step 'reserve'"), msg);
  CHECK_MESSAGE(contains(msg, "same participant"), msg);
}

TEST_CASE("the builder refuses a compensation without participant or command") {
  DefinitionBuilder b("booking", 1);
  b.local("audit", ok_local).compensate("", "undo");
  const std::string msg = build_error(b);
  CHECK_MESSAGE(contains(msg, "needs a participant and a command"), msg);
}

TEST_CASE("the builder refuses a retry multiplier below 1") {
  RetryPolicy shrinking;
  shrinking.multiplier = 0.5;
  SUBCASE("for the action") {
    DefinitionBuilder b("booking", 1);
    b.command("reserve", "inventory", "reserve").retry(shrinking);
    const std::string msg = build_error(b);
    CHECK_MESSAGE(contains(msg, "multiplier of step 'reserve'"), msg);
  }
  SUBCASE("for the compensation") {
    DefinitionBuilder b("booking", 1);
    b.command("reserve", "inventory", "reserve")
        .compensate("inventory", "release")
        .compensation_retry(shrinking);
    const std::string msg = build_error(b);
    CHECK_MESSAGE(contains(msg, "multiplier of step 'reserve'"), msg);
  }
}

TEST_CASE("the builder refuses a timeout that is not positive") {
  SUBCASE("zero") {
    DefinitionBuilder b("booking", 1);
    b.command("reserve", "inventory", "reserve").timeout(Duration{0});
    const std::string msg = build_error(b);
    CHECK_MESSAGE(contains(msg, "timeout of step 'reserve' must be positive"), msg);
  }
  SUBCASE("negative") {
    DefinitionBuilder b("booking", 1);
    b.command("reserve", "inventory", "reserve").timeout(Duration{-5});
    const std::string msg = build_error(b);
    CHECK_MESSAGE(contains(msg, "timeout of step 'reserve' must be positive"), msg);
  }
}

TEST_CASE("the builder reports every mistake in one message") {
  RetryPolicy shrinking;
  shrinking.multiplier = 0.9;
  DefinitionBuilder b("", 0);
  b.command("a", "", "do")
      .command("a", "payment", "")
      .pivot()
      .timeout(Duration{0})
      .command("b", "inventory", "reserve")
      .compensate("payment", "release")
      .pivot()
      .retry(shrinking);
  const std::string msg = build_error(b);
  for (const char* expected : {"the saga type has no name", "versions start at 1",
                               "'a' has no participant", "'a' has no command name", "'a' repeats",
                               "more than one pivot", "timeout of step 'a' must be positive",
                               "compensation of step 'b'", "multiplier of step 'b'"}) {
    CHECK_MESSAGE(contains(msg, expected), "missing '" << expected << "' in: " << msg);
  }
}

TEST_CASE("a valid definition exposes its steps, participants and pivot") {
  RetryPolicy patient{7, Duration{50}, 3.0, Duration{2'000}, 0.0};
  auto def = DefinitionBuilder("booking", 2)
                 .command("reserve", "inventory", "reserve")
                 .compensate("inventory", "release")
                 .timeout(Duration{1'500})
                 .retry(patient)
                 .local("audit", ok_local)
                 .compensate_local(ok_local)
                 .command("pay", "payment", "charge")
                 .pivot()
                 .command("confirm", "inventory", "confirm")
                 .command("notify", "audit-log", "record")
                 .build();
  REQUIRE_MESSAGE(def.ok(), def.status().to_string());
  const SagaDefinition& d = **def;
  CHECK(d.name() == "booking");
  CHECK(d.version() == 2);
  REQUIRE(d.steps().size() == 5);

  const StepSpec& reserve = d.steps()[0];
  CHECK(reserve.name == "reserve");
  CHECK(reserve.action.participant == "inventory");
  CHECK(reserve.action.command == "reserve");
  CHECK_FALSE(reserve.action.is_local());
  REQUIRE(reserve.compensation.has_value());
  CHECK(reserve.compensation->participant == "inventory");
  CHECK(reserve.compensation->command == "release");
  CHECK(reserve.timeout == Duration{1'500});
  CHECK(reserve.retry.max_attempts == 7);
  CHECK(reserve.retry.multiplier == doctest::Approx(3.0));
  CHECK_FALSE(reserve.pivot);

  const StepSpec& audit = d.steps()[1];
  CHECK(audit.action.is_local());
  CHECK(static_cast<bool>(audit.action.local));
  REQUIRE(audit.compensation.has_value());
  CHECK(audit.compensation->is_local());
  CHECK(audit.timeout == Duration{5'000});  // the default
  CHECK(audit.compensation_retry.max_attempts == 10);

  CHECK(d.steps()[2].pivot);
  CHECK_FALSE(d.steps()[3].compensation.has_value());

  // Sorted, each once, local steps not included.
  CHECK(d.participants() == std::vector<std::string>{"audit-log", "inventory", "payment"});
  REQUIRE(d.pivot().has_value());
  CHECK(*d.pivot() == 2);
}

TEST_CASE("a definition without a pivot step reports none") {
  auto def = DefinitionBuilder("transfer", 1).command("debit", "payment", "debit").build();
  REQUIRE(def.ok());
  CHECK_FALSE((*def)->pivot().has_value());
  CHECK((*def)->participants() == std::vector<std::string>{"payment"});
}

TEST_CASE("a local action may have its compensation sent to a participant") {
  auto def = DefinitionBuilder("booking", 1)
                 .local("prepare", ok_local)
                 .compensate("inventory", "undo")
                 .build();
  REQUIRE_MESSAGE(def.ok(), def.status().to_string());
  CHECK((*def)->participants() == std::vector<std::string>{"inventory"});
}

TEST_CASE("the partition key applies to the action and its compensation, in either order") {
  auto key_fn = [](const Json& data) { return data.at("account").get<std::string>(); };
  const Json data{{"account", "acc-7"}};
  SUBCASE("key after compensate") {
    auto def = DefinitionBuilder("transfer", 1)
                   .command("debit", "payment", "debit")
                   .compensate("payment", "credit")
                   .key(key_fn)
                   .build();
    REQUIRE(def.ok());
    const StepSpec& s = (*def)->steps()[0];
    REQUIRE(s.action.key);
    REQUIRE(s.compensation->key);
    CHECK(s.action.key(data) == "acc-7");
    CHECK(s.compensation->key(data) == "acc-7");
  }
  SUBCASE("key before compensate") {
    auto def = DefinitionBuilder("transfer", 1)
                   .command("debit", "payment", "debit")
                   .key(key_fn)
                   .compensate("payment", "credit")
                   .build();
    REQUIRE(def.ok());
    const StepSpec& s = (*def)->steps()[0];
    REQUIRE(s.action.key);
    REQUIRE(s.compensation->key);
    CHECK(s.compensation->key(data) == "acc-7");
  }
}

TEST_CASE("build() twice gives independent definitions") {
  DefinitionBuilder b("booking", 1);
  b.command("reserve", "inventory", "reserve").compensate("inventory", "release");
  auto first = b.build();
  REQUIRE(first.ok());
  b.command("pay", "payment", "charge").pivot();
  auto second = b.build();
  REQUIRE(second.ok());

  CHECK(first->get() != second->get());
  // The first is untouched by what the builder did after it.
  CHECK((*first)->steps().size() == 1);
  CHECK_FALSE((*first)->pivot().has_value());
  CHECK((*first)->participants() == std::vector<std::string>{"inventory"});
  CHECK((*second)->steps().size() == 2);
  REQUIRE((*second)->pivot().has_value());
  CHECK(*(*second)->pivot() == 1);

  // A third build of the same builder is equal in content but a separate object.
  auto third = b.build();
  REQUIRE(third.ok());
  CHECK(third->get() != second->get());
  CHECK((*third)->steps().size() == 2);
}

TEST_CASE("a definition's shape names each step's commands and pivot; its fingerprint follows it") {
  auto make = [](Duration timeout, std::string refund, bool pivot) {
    DefinitionBuilder b("booking", 1);
    b.command("reserve", "inventory", "reserve").compensate("inventory", "release").timeout(timeout);
    b.local("note", [](Json&) { return ok_status(); }).compensate_local([](Json&) {
      return ok_status();
    });
    b.command("pay", "payment", "charge").compensate("payment", std::move(refund));
    if (pivot) b.command("confirm", "inventory", "confirm").pivot();
    auto def = b.build();
    REQUIRE(def.ok());
    return *def;
  };
  const DefinitionPtr base = make(Duration{5'000}, "refund", true);
  CHECK(base->shape() == std::vector<std::string>{
                             "reserve: inventory.reserve, compensation inventory.release",
                             "note: local, compensation local",
                             "pay: payment.charge, compensation payment.refund",
                             "confirm: inventory.confirm, pivot"});
  CHECK(base->fingerprint() != 0);
  // Timeouts and retries are not part of the shape; commands and steps are.
  CHECK(make(Duration{9'000}, "refund", true)->fingerprint() == base->fingerprint());
  const DefinitionPtr credit = make(Duration{5'000}, "credit", true);
  CHECK(credit->fingerprint() != base->fingerprint());
  CHECK(first_difference(base->shape(), credit->shape()) ==
        "step 3: was 'pay: payment.charge, compensation payment.refund', now 'pay: "
        "payment.charge, compensation payment.credit'");
  const DefinitionPtr shorter = make(Duration{5'000}, "refund", false);
  CHECK(shorter->fingerprint() != base->fingerprint());
  CHECK(first_difference(base->shape(), shorter->shape()) ==
        "step 4: was 'confirm: inventory.confirm, pivot', now no such step");
  CHECK(first_difference(shorter->shape(), base->shape()) ==
        "step 4: was no such step, now 'confirm: inventory.confirm, pivot'");
  CHECK(first_difference(base->shape(), base->shape()).empty());
}

TEST_CASE("retry backoff grows by the multiplier and is capped at max_backoff") {
  SeededRandom random(1);
  RetryPolicy p{0, Duration{100}, 2.0, Duration{1'000}, 0.0};
  CHECK(p.backoff(1, random) == Duration{100});
  CHECK(p.backoff(2, random) == Duration{200});
  CHECK(p.backoff(3, random) == Duration{400});
  CHECK(p.backoff(4, random) == Duration{800});
  CHECK(p.backoff(5, random) == Duration{1'000});  // 1600, capped
  CHECK(p.backoff(6, random) == Duration{1'000});
  CHECK(p.backoff(1'000, random) == Duration{1'000});  // no overflow far out

  SUBCASE("a multiplier of 1 keeps the delay constant") {
    RetryPolicy flat{0, Duration{250}, 1.0, Duration{10'000}, 0.0};
    for (uint32_t n = 1; n <= 10; ++n) CHECK(flat.backoff(n, random) == Duration{250});
  }
  SUBCASE("a fractional multiplier rounds to the nearest millisecond") {
    RetryPolicy p15{0, Duration{100}, 1.5, Duration{10'000}, 0.0};
    CHECK(p15.backoff(2, random) == Duration{150});
    CHECK(p15.backoff(3, random) == Duration{225});
  }
}

TEST_CASE(
    "retry backoff with jitter stays within [1 - jitter, 1 + jitter] of the base and uses the "
    "range") {
  SeededRandom random(42);
  RetryPolicy p{0, Duration{1'000}, 2.0, Duration{3'000}, 0.2};
  for (uint32_t retry : {1u, 2u, 5u}) {
    const double base = retry == 1 ? 1'000 : retry == 2 ? 2'000 : 3'000;  // retry 5 is capped
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    double sum = 0;
    constexpr int kDraws = 2'000;
    for (int i = 0; i < kDraws; ++i) {
      const int64_t d = p.backoff(retry, random).count();
      lo = std::min(lo, d);
      hi = std::max(hi, d);
      sum += static_cast<double>(d);
    }
    CAPTURE(retry);
    CHECK(lo >= static_cast<int64_t>(base * 0.8));
    CHECK(hi <= static_cast<int64_t>(base * 1.2));
    // Not a constant: the draws spread over most of the band, centred on the base.
    CHECK(lo < static_cast<int64_t>(base * 0.85));
    CHECK(hi > static_cast<int64_t>(base * 1.15));
    CHECK(sum / kDraws == doctest::Approx(base).epsilon(0.02));
  }
}

TEST_CASE("the same seed gives the same jittered backoffs") {
  RetryPolicy p;  // defaults: jitter 0.2
  SeededRandom a(9), b(9);
  for (uint32_t n = 1; n <= 20; ++n) CHECK(p.backoff(n, a) == p.backoff(n, b));
}

TEST_CASE("the default retry policies are the documented ones") {
  RetryPolicy p;
  CHECK(p.max_attempts == 3);
  CHECK(p.initial_backoff == Duration{100});
  CHECK(p.multiplier == doctest::Approx(2.0));
  CHECK(p.max_backoff == Duration{10'000});
  CHECK(p.jitter == doctest::Approx(0.2));
  StepSpec s;
  CHECK(s.timeout == Duration{5'000});
  CHECK(s.compensation_retry.max_attempts == 10);
  CHECK_FALSE(s.pivot);
}

// A user's saga data, converted with nlohmann's macro.
struct Booking {
  std::string guest;
  int nights = 0;
  std::string hold_id;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Booking, guest, nights, hold_id)

struct ReservePayload {
  std::string guest;
  int nights = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ReservePayload, guest, nights)

const Json kBookingJson = Json{{"guest", "ada"}, {"nights", 3}, {"hold_id", ""}};

TEST_CASE("typed_payload builds a command payload from the user's struct") {
  PayloadFn fn = typed_payload<Booking>([](const Booking& b) {
    return ReservePayload{b.guest, b.nights};
  });
  const Json out = fn(kBookingJson);
  CHECK(out == Json{{"guest", "ada"}, {"nights", 3}});
}

TEST_CASE("typed_merge folds a reply into the user's struct") {
  MergeFn fn = typed_merge<Booking>(
      [](Booking& b, const Json& reply) { b.hold_id = reply.at("hold").get<std::string>(); });
  Json data = kBookingJson;
  fn(data, Json{{"hold", "h-17"}});
  CHECK(data == Json{{"guest", "ada"}, {"nights", 3}, {"hold_id", "h-17"}});
}

TEST_CASE("typed_local changes the data only when the function succeeds") {
  SUBCASE("OK: the change is kept") {
    LocalFn fn = typed_local<Booking>([](Booking& b) {
      b.nights += 1;
      return ok_status();
    });
    Json data = kBookingJson;
    CHECK(fn(data).ok());
    CHECK(data.at("nights") == 4);
  }
  SUBCASE("an error: the data stays as it was and the error comes back") {
    LocalFn fn = typed_local<Booking>([](Booking& b) {
      b.nights = 99;
      return Status::failed_precondition("too long");
    });
    Json data = kBookingJson;
    const Status s = fn(data);
    CHECK(s.code() == StatusCode::kFailedPrecondition);
    CHECK(s.message() == "too long");
    CHECK(data == kBookingJson);
  }
}

TEST_CASE("typed adapters plug into the builder") {
  auto def = DefinitionBuilder("booking", 1)
                 .command("reserve", "inventory", "reserve")
                 .payload(typed_payload<Booking>([](const Booking& b) {
                   return ReservePayload{b.guest, b.nights};
                 }))
                 .on_reply(typed_merge<Booking>(
                     [](Booking& b, const Json& r) { b.hold_id = r.value("hold", ""); }))
                 .local("extend", typed_local<Booking>([](Booking& b) {
                          b.nights *= 2;
                          return ok_status();
                        }))
                 .build();
  REQUIRE(def.ok());
  const auto& steps = (*def)->steps();
  Json data = kBookingJson;
  CHECK(steps[0].action.payload(data) == Json{{"guest", "ada"}, {"nights", 3}});
  steps[0].action.on_reply(data, Json{{"hold", "h-1"}});
  CHECK(steps[1].action.local(data).ok());
  CHECK(data == Json{{"guest", "ada"}, {"nights", 6}, {"hold_id", "h-1"}});
}

}  // namespace
}  // namespace saga
