// Bounded pagination of the services' list routes: `?limit=` (default 50,
// at most 200) and `?pageToken=` (the cursor a previous page handed out in
// its Next-Page-Token header). The body of a list stays a JSON array (the
// seed's clients read arrays); the cursor to the next page, when there is
// one, is the response header Next-Page-Token. A bad limit or token is 400.
#pragma once

#include <cstddef>
#include <string>

#include "saga/service/http_message.h"
#include "saga/status.h"

namespace saga::domain {

inline constexpr size_t kDefaultPageLimit = 50;
inline constexpr size_t kMaxPageLimit = 200;
using service::kNextPageTokenHeader;

/// A page asked for: at most `limit` items after the cursor `token` ("" = the first page).
struct PageRequest {
  size_t limit = kDefaultPageLimit;
  std::string token;
};

/// The page `req` asks for. InvalidArgument (400) when `limit` is not an
/// integer in 1..200 or `pageToken` is empty or not an id (domain::check_id).
StatusOr<PageRequest> page_request(const service::Request& req);

/// Sets Next-Page-Token on `r` unless `token` is empty.
void set_next_page_token(service::Response& r, const std::string& token);

}  // namespace saga::domain
