#include "domain/paging.h"

#include <charconv>

#include "domain/fields.h"

namespace saga::domain {

StatusOr<PageRequest> page_request(const service::Request& req) {
  PageRequest page;
  if (auto text = req.query("limit")) {
    size_t v = 0;
    const char* end = text->data() + text->size();
    auto [p, ec] = std::from_chars(text->data(), end, v);
    if (text->empty() || ec != std::errc() || p != end || v < 1 || v > kMaxPageLimit)
      return Status::invalid_argument("query parameter 'limit' must be an integer in 1.." +
                                      std::to_string(kMaxPageLimit));
    page.limit = v;
  }
  if (auto token = req.query("pageToken")) {
    if (!check_id(*token, "pageToken").ok())
      return Status::invalid_argument("query parameter 'pageToken' is not a page token");
    page.token = *token;
  }
  return page;
}

void set_next_page_token(service::Response& r, const std::string& token) {
  if (!token.empty()) r.set_header(kNextPageTokenHeader, token);
}

}  // namespace saga::domain
