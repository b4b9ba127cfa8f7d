# Finds libsaga's dependencies. Used by the build and, through
# libsagaConfig.cmake, by projects that link the installed package.
include(CMakeFindDependencyMacro)
find_dependency(Boost 1.81 CONFIG)            # headers: MSM, Asio, Beast
# RocksDB, as the target saga::rocksdb: Debian's shared library, or a static
# one built from source for speed by scripts/rocksdb, whose install prefix
# SAGA_ROCKSDB_ROOT names (bench/README.md, "RocksDB built from source").
if(NOT TARGET saga::rocksdb)
  if(SAGA_ROCKSDB_ROOT)
    set(_saga_rocksdb_lib "${SAGA_ROCKSDB_ROOT}/lib/librocksdb.a")
    if(NOT EXISTS "${_saga_rocksdb_lib}" OR NOT EXISTS "${SAGA_ROCKSDB_ROOT}/include/rocksdb/db.h")
      message(FATAL_ERROR "SAGA_ROCKSDB_ROOT=${SAGA_ROCKSDB_ROOT} holds no lib/librocksdb.a and "
                          "include/rocksdb/db.h: run scripts/rocksdb build, which prints the prefix")
    endif()
    find_package(Threads REQUIRED)
    add_library(saga::rocksdb STATIC IMPORTED GLOBAL)
    set_target_properties(saga::rocksdb PROPERTIES
      IMPORTED_LOCATION "${_saga_rocksdb_lib}"
      INTERFACE_INCLUDE_DIRECTORIES "${SAGA_ROCKSDB_ROOT}/include"
      INTERFACE_LINK_LIBRARIES "snappy;lz4;zstd;z;bz2;Threads::Threads;dl")
  else()
    find_dependency(RocksDB CONFIG)
    add_library(saga::rocksdb INTERFACE IMPORTED GLOBAL)
    set_target_properties(saga::rocksdb PROPERTIES INTERFACE_LINK_LIBRARIES RocksDB::rocksdb-shared)
  endif()
endif()
find_dependency(nlohmann_json 3 CONFIG)
find_dependency(spdlog CONFIG)
find_dependency(prometheus-cpp CONFIG)
find_dependency(PkgConfig)
# librdkafka, as PkgConfig::RDKAFKA: the system's (Debian 12: 2.0.2), or a
# newer one built from source by scripts/rdkafka, whose install prefix
# SAGA_RDKAFKA_ROOT names (bench/README.md, "librdkafka built from source");
# binaries then find its shared library there at run time (their RUNPATH).
if(NOT TARGET PkgConfig::RDKAFKA)
  if(SAGA_RDKAFKA_ROOT)
    if(NOT EXISTS "${SAGA_RDKAFKA_ROOT}/lib/pkgconfig/rdkafka++.pc")
      message(FATAL_ERROR "SAGA_RDKAFKA_ROOT=${SAGA_RDKAFKA_ROOT} holds no lib/pkgconfig/rdkafka++.pc: "
                          "run scripts/rdkafka build, which prints the prefix")
    endif()
    set(ENV{PKG_CONFIG_PATH} "${SAGA_RDKAFKA_ROOT}/lib/pkgconfig")
    set(CMAKE_INSTALL_RPATH_USE_LINK_PATH ON)
  endif()
  pkg_check_modules(RDKAFKA REQUIRED IMPORTED_TARGET GLOBAL rdkafka++ rdkafka)
  if(SAGA_RDKAFKA_ROOT AND NOT "${RDKAFKA_rdkafka++_PREFIX}" STREQUAL "${SAGA_RDKAFKA_ROOT}")
    message(FATAL_ERROR "SAGA_RDKAFKA_ROOT=${SAGA_RDKAFKA_ROOT}, but this build directory found "
                        "librdkafka in ${RDKAFKA_rdkafka++_PREFIX}: configure a new build directory")
  endif()
endif()
