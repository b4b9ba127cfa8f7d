// Test support: failure messages show vectors as [a, b, c] instead of {?}.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <sstream>
#include <vector>

namespace doctest {
template <typename T>
struct StringMaker<std::vector<T>> {
  static String convert(const std::vector<T>& v) {
    std::ostringstream os;
    os << '[';
    for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
    os << ']';
    return os.str().c_str();
  }
};
}  // namespace doctest
