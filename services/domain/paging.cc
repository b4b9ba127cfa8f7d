#include "domain/paging.h"

#include "domain/fields.h"

namespace saga::domain {

StatusOr<PageRequest> page_request(const service::Request& req) {
  PageRequest page;
  SAGA_ASSIGN_OR_RETURN(auto limit, req.query_int("limit", 1, kMaxPageLimit));
  if (limit) page.limit = static_cast<size_t>(*limit);
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
