// Fuzz target: every decoder of a stored record (docs/storage.md), as read
// back from a store that may be damaged or written by someone else. The first
// byte picks the decoder: 0 the saga instance record (formats 1 and 2, with
// its timer and saga data), 1 the outbox record (binary or an older JSON
// envelope), 2 the participant inbox record (binary or older JSON), 3 a
// reference participant's JSON state object (services/domain/state.h). What
// decodes must encode and decode again.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "domain/state.h"
#include "inbox.h"
#include "instance.h"
#include "outbox.h"

namespace {

using namespace saga;
using namespace saga::internal;

void instance_record(std::string_view in) {
  StatusOr<Instance> inst = decode_instance(in);
  if (!inst.ok()) return;
  if (!decode_instance(encode_instance(*inst)).ok()) std::abort();
}

void outbox_record(std::string_view in) {
  StatusOr<Message> m = decode_outbox_record(in);
  if (!m.ok()) return;
  std::string out;
  encode_outbox_record(*m, out);
  StatusOr<Message> back = decode_outbox_record(out);
  if (!back.ok() || !(*back == *m)) std::abort();
}

void inbox_record(std::string_view in) {
  StatusOr<InboxRecord> r = decode_inbox_record(in);
  if (!r.ok()) return;
  std::string out;
  encode_inbox_record(*r, out);
  StatusOr<InboxRecord> back = decode_inbox_record(out);
  if (!back.ok() || back->outcome != r->outcome || back->payload != r->payload ||
      back->voided != r->voided) {
    std::abort();
  }
}

// A transaction holding one stored value, as domain::load reads it.
class OneValue final : public StateTxn {
 public:
  explicit OneValue(std::string_view value) : value_(value) {}
  StatusOr<std::optional<std::string>> get(std::string_view) override {
    return std::optional<std::string>(value_);
  }
  void put(std::string_view, std::string_view) override {}
  void put(std::string_view, std::string_view, int64_t) override {}
  void del(std::string_view) override {}
  void emit(Message) override {}

 private:
  std::string value_;
};

void domain_state(std::string_view in) {
  OneValue txn(in);
  auto j = domain::load(txn, "key");
  if (j.ok() && (!*j || !(*j)->is_object())) std::abort();
  if (j.ok()) (void)(*j)->dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view record(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      instance_record(record);
      break;
    case 1:
      outbox_record(record);
      break;
    case 2:
      inbox_record(record);
      break;
    default:
      domain_state(record);
      break;
  }
  return 0;
}
