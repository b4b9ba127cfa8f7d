# Finds libsaga's dependencies. Used by the build and, through
# libsagaConfig.cmake, by projects that link the installed package.
include(CMakeFindDependencyMacro)
find_dependency(Boost 1.81 CONFIG)            # headers: MSM, Asio, Beast
find_dependency(RocksDB CONFIG)
find_dependency(nlohmann_json 3 CONFIG)
find_dependency(spdlog CONFIG)
find_dependency(prometheus-cpp CONFIG)
find_dependency(PkgConfig)
if(NOT TARGET PkgConfig::RDKAFKA)
  pkg_check_modules(RDKAFKA REQUIRED IMPORTED_TARGET GLOBAL rdkafka++ rdkafka)
endif()
