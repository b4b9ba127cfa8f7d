// A participant's inbox record: what it remembers of a command it handled.
#pragma once

#include <string>
#include <string_view>

#include "saga/message.h"
#include "saga/status.h"

namespace saga::internal {

/// The final outcome of a command and its reply payload.
struct InboxRecord {
  ReplyOutcome outcome = ReplyOutcome::kSuccess;
  std::string payload;
  bool voided = false;  ///< an action refused because its compensation came first
};

/// The stored form (docs/storage.md): binary, first byte 0x01.
/// decode_inbox_record also reads the JSON objects older versions wrote.
void encode_inbox_record(const InboxRecord& r, std::string& out);
StatusOr<InboxRecord> decode_inbox_record(std::string_view bytes);

}  // namespace saga::internal
