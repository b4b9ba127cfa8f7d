#include "saga/service/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

#include "saga/service/config.h"

namespace saga::service {
namespace {

void append_json_escaped(std::string_view in, spdlog::memory_buf_t& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (char c : in) {
    switch (c) {
      case '"':
        out.append(std::string_view("\\\""));
        break;
      case '\\':
        out.append(std::string_view("\\\\"));
        break;
      case '\n':
        out.append(std::string_view("\\n"));
        break;
      case '\r':
        out.append(std::string_view("\\r"));
        break;
      case '\t':
        out.append(std::string_view("\\t"));
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char esc[] = {'\\', 'u', '0', '0', kHex[(c >> 4) & 0xf], kHex[c & 0xf]};
          out.append(esc, esc + sizeof(esc));
        } else {
          out.push_back(c);
        }
    }
  }
}

// %* in the pattern: the log message, escaped to sit inside a JSON string.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    append_json_escaped(std::string_view(msg.payload.data(), msg.payload.size()), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

}  // namespace

Status setup_logging(std::string_view service) {
  std::string level_name = env_string("LOG_LEVEL", "info");
  for (char& c : level_name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  Status result;
  spdlog::level::level_enum level = spdlog::level::info;
  if (level_name == "trace")
    level = spdlog::level::trace;
  else if (level_name == "debug")
    level = spdlog::level::debug;
  else if (level_name == "info")
    level = spdlog::level::info;
  else if (level_name == "warn")
    level = spdlog::level::warn;
  else if (level_name == "error")
    level = spdlog::level::err;
  else {
    result =
        Status::invalid_argument("LOG_LEVEL must be one of trace|debug|info|warn|error, got '" +
                                 env_string("LOG_LEVEL", "") + "'");
  }

  spdlog::memory_buf_t escaped;
  append_json_escaped(service, escaped);
  std::string pattern = R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","service":")" +
                        std::string(escaped.data(), escaped.size()) + R"(","tid":%t,"msg":"%*"})";
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<JsonMessageFlag>('*').set_pattern(pattern);

  auto logger = std::make_shared<spdlog::logger>(std::string(service),
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_formatter(std::move(formatter));
  logger->set_level(level);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(std::move(logger));
  return result;
}

}  // namespace saga::service
