// Helpers of the binary record formats (docs/storage.md): LEB128 varints,
// zigzag signed varints and length-prefixed byte strings, plus a reader that
// never reads past its input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace saga::internal {

inline void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

inline void put_svarint(std::string& out, int64_t v) {
  put_varint(out, (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
}

inline void put_bytes(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}

/// Reads what the put_* functions wrote. Any overrun or malformed value
/// makes ok() false (and later reads return zeros / empty strings).
class RecordReader {
 public:
  explicit RecordReader(std::string_view in) : in_(in) {}

  bool ok() const { return ok_; }
  bool done() const { return pos_ == in_.size(); }

  uint8_t byte() {
    if (pos_ >= in_.size()) return fail();
    return static_cast<uint8_t>(in_[pos_++]);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= in_.size()) return fail();
      const auto b = static_cast<uint8_t>(in_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    return fail();
  }
  uint32_t u32() {
    const uint64_t v = varint();
    if (v > UINT32_MAX) return fail();
    return static_cast<uint32_t>(v);
  }
  int64_t svarint() {
    const uint64_t v = varint();
    return static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1));
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (!ok_ || n > in_.size() - pos_) {
      fail();
      return {};
    }
    std::string_view s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  /// Everything not read yet (consumed).
  std::string_view rest() {
    std::string_view s = in_.substr(pos_);
    pos_ = in_.size();
    return s;
  }
  bool boolean() {
    const uint8_t b = byte();
    if (b > 1) fail();
    return b == 1;
  }

 private:
  uint8_t fail() {
    ok_ = false;
    pos_ = in_.size();
    return 0;
  }
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace saga::internal
