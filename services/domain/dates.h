// Calendar dates of the booking domain: strict parsing and formatting of
// YYYY-MM-DD (and the seed's YYYYMMDD), on std::chrono::year_month_day.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "saga/status.h"

namespace saga::domain {

using Date = std::chrono::year_month_day;

/// Parses exactly "YYYY-MM-DD" (four, two and two ASCII digits; a valid
/// calendar date, years 1..9999). InvalidArgument naming `field` otherwise,
/// e.g. "checkIn must be a date YYYY-MM-DD, got '2024-02-30'".
StatusOr<Date> parse_iso_date(std::string_view text, std::string_view field = "date");
/// Parses exactly "YYYYMMDD" (the seed's format), same rules.
StatusOr<Date> parse_compact_date(std::string_view text, std::string_view field = "date");
/// Either of the two formats, told apart by length (10 or 8).
StatusOr<Date> parse_date(std::string_view text, std::string_view field = "date");

/// "YYYY-MM-DD".
std::string format_date(Date d);
/// The day after `d`.
Date next_day(Date d);
/// Whole days from `from` to `to` (negative when to < from).
long days_between(Date from, Date to);

}  // namespace saga::domain
