# cmake -DIN=openapi.json -DOUT=openapi_json.cc -P embed_openapi.cmake: writes a
# .cc whose saga::gateway::openapi_json() returns IN's text (a raw string
# literal), so that the gateway serves its OpenAPI description without a file.
file(READ "${IN}" text)
set(delim "saga_openapi")
string(FIND "${text}" ")${delim}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw string's end marker )${delim}\"")
endif()
file(WRITE "${OUT}.tmp"
  "// Generated from ${IN} by embed_openapi.cmake: do not edit.\n"
  "#include \"saga/gateway/openapi.h\"\n\n"
  "namespace saga::gateway {\n\n"
  "std::string_view openapi_json() noexcept {\n"
  "  static constexpr std::string_view kText = R\"${delim}(${text})${delim}\";\n"
  "  return kText;\n"
  "}\n\n"
  "}  // namespace saga::gateway\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
