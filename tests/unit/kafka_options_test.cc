// KafkaOptions' SASL password file (KAFKA_SASL_PASSWORD_FILE): read when the
// options are resolved, used as sasl.password, and never echoed in an error.
#include "kafka/kafka_options.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "saga/kafka_transport.h"
#include "support/temp_dir.h"

namespace saga {
namespace {

using internal::kafka::resolve_options;

constexpr const char* kSecret = "s3cr3t-Pa55word";

void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  REQUIRE(out.good());
}

KafkaOptions base() {
  KafkaOptions o;
  o.brokers = "127.0.0.1:9092";
  return o;
}

TEST_CASE("sasl_password_file becomes sasl.password; one trailing newline is dropped") {
  testing::TempDir dir("saga-kafka-options");
  const auto file = dir.path() / "password";
  for (const std::string ending : {"", "\n", "\r\n"}) {
    write_file(file, kSecret + ending);
    KafkaOptions o = base();
    o.sasl_password_file = file.string();
    auto r = resolve_options("payment", o);
    REQUIRE_MESSAGE(r.ok(), r.status().to_string());
    CHECK(r->properties.at("sasl.password") == kSecret);
  }
  // Without a file nothing is added.
  auto r = resolve_options("payment", base());
  REQUIRE(r.ok());
  CHECK(r->properties.count("sasl.password") == 0);
}

TEST_CASE("a password file that cannot be used is refused, naming the file, never the content") {
  testing::TempDir dir("saga-kafka-options");
  const auto file = dir.path() / "password";
  KafkaOptions o = base();
  o.sasl_password_file = file.string();
  SUBCASE("missing") { o.sasl_password_file = (dir.path() / "missing").string(); }
  SUBCASE("empty") { write_file(file, ""); }
  SUBCASE("only a newline") { write_file(file, "\n"); }
  SUBCASE("two lines") { write_file(file, std::string(kSecret) + "\n" + kSecret + "\n"); }
  SUBCASE("both a file and sasl.password") {
    write_file(file, kSecret);
    o.properties["sasl.password"] = "other-secret";
  }
  auto r = resolve_options("payment", o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  const std::string& msg = r.status().message();
  MESSAGE(msg);
  CHECK(msg.find("KAFKA_SASL_PASSWORD_FILE") != std::string::npos);
  CHECK(msg.find(kSecret) == std::string::npos);
  CHECK(msg.find("other-secret") == std::string::npos);
  if (o.properties.count("sasl.password") == 0) {
    CHECK(msg.find(o.sasl_password_file) != std::string::npos);
  }
}

TEST_CASE("KAFKA_SASL_PASSWORD_FILE sets sasl_password_file; make_kafka_transport reads it") {
  testing::TempDir dir("saga-kafka-options");
  const auto file = dir.path() / "password";
  ::setenv("KAFKA_SASL_PASSWORD_FILE", file.c_str(), 1);
  KafkaOptions o = kafka_options_from_env("payment");
  ::unsetenv("KAFKA_SASL_PASSWORD_FILE");
  CHECK(o.sasl_password_file == file.string());
  CHECK(o.properties.count("sasl.password") == 0);  // read later, by the factory
  CHECK(kafka_options_from_env("payment").sasl_password_file.empty());

  // The factory refuses the missing file before it tries any broker.
  o.brokers = "127.0.0.1:1";
  auto t = make_kafka_transport("payment", o);
  CHECK(t.status().code() == StatusCode::kInvalidArgument);
  CHECK(t.status().message().find(file.string()) != std::string::npos);
}

}  // namespace
}  // namespace saga
