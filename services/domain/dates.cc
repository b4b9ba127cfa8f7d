#include "domain/dates.h"

#include <cstdio>

namespace saga::domain {
namespace {

bool digits(std::string_view s) {
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return !s.empty();
}

int to_int(std::string_view s) {
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

StatusOr<Date> make(std::string_view text, std::string_view field, std::string_view format,
                    std::string_view y, std::string_view m, std::string_view d) {
  auto bad = [&] {
    return Status::invalid_argument(std::string(field) + " must be a date " + std::string(format) +
                                    ", got '" + std::string(text.substr(0, 40)) + "'");
  };
  if (!digits(y) || !digits(m) || !digits(d)) return bad();
  const int year = to_int(y);
  if (year < 1) return bad();
  Date date{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(to_int(m))},
            std::chrono::day{static_cast<unsigned>(to_int(d))}};
  if (!date.ok()) return bad();
  return date;
}

}  // namespace

StatusOr<Date> parse_iso_date(std::string_view text, std::string_view field) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-')
    return Status::invalid_argument(std::string(field) + " must be a date YYYY-MM-DD, got '" +
                                    std::string(text.substr(0, 40)) + "'");
  return make(text, field, "YYYY-MM-DD", text.substr(0, 4), text.substr(5, 2), text.substr(8, 2));
}

StatusOr<Date> parse_compact_date(std::string_view text, std::string_view field) {
  if (text.size() != 8)
    return Status::invalid_argument(std::string(field) + " must be a date YYYYMMDD, got '" +
                                    std::string(text.substr(0, 40)) + "'");
  return make(text, field, "YYYYMMDD", text.substr(0, 4), text.substr(4, 2), text.substr(6, 2));
}

StatusOr<Date> parse_date(std::string_view text, std::string_view field) {
  if (text.size() == 8) return parse_compact_date(text, field);
  if (text.size() == 10) return parse_iso_date(text, field);
  return Status::invalid_argument(std::string(field) +
                                  " must be a date YYYY-MM-DD or YYYYMMDD, got '" +
                                  std::string(text.substr(0, 40)) + "'");
}

std::string format_date(Date d) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(d.year()),
                static_cast<unsigned>(d.month()), static_cast<unsigned>(d.day()));
  return buf;
}

Date next_day(Date d) { return Date{std::chrono::sys_days{d} + std::chrono::days{1}}; }

long days_between(Date from, Date to) {
  return static_cast<long>((std::chrono::sys_days{to} - std::chrono::sys_days{from}).count());
}

}  // namespace saga::domain
